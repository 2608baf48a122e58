"""The records a result file yields: where a run came from, what it measured, what it accepted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Origin:
    """Where a record came from: `path` for messages, `file` (relative, '/') for the document."""

    path: Path
    file: str
    part: str = ""  # ":<line>" or "[<index>]" inside a file holding several records
    index: int = 0  # position of the record in its file

    def __str__(self) -> str:
        return f"{self.path}{self.part}"

    @property
    def ref(self) -> str:
        return f"{self.file}{self.part}"


@dataclass(frozen=True)
class Measured:
    """The timing and traffic figures of one run, in ms and counts."""

    median_tpot_ms: float
    mean_tpot_ms: float | None
    median_ttft_ms: float | None
    output_throughput: float | None
    request_goodput: float | None
    completed: int
    failed: int | None
    num_prompts: int | None
    total_input_tokens: int | None
    total_output_tokens: int | None
    duration: float | None
    request_rate: float | None
    date: str | None
    run_number: int | None


@dataclass(frozen=True)
class Acceptance:
    """Spec-decode acceptance of one run; counts are `None` when the source gives only a length."""

    source: str
    length: float
    num_drafts: int | None = None
    num_draft_tokens: int | None = None
    num_accepted_tokens: int | None = None
    per_position: tuple[float, ...] = ()

    @property
    def has_counts(self) -> bool:
        return self.num_draft_tokens is not None

    def rate(self, k: int | None) -> float | None:
        """accepted / draft tokens; without counts (AL - 1) / K, valid only for chain drafts."""
        if self.num_draft_tokens is not None and self.num_accepted_tokens is not None:
            return self.num_accepted_tokens / self.num_draft_tokens
        return (self.length - 1) / k if k else None


@dataclass(frozen=True)
class RawRun:
    """One measured run as read, before labels are resolved."""

    origin: Origin
    tool: str
    engine: str
    measured: Measured
    acceptance: Acceptance | None
    file_labels: tuple[tuple[str, str, object], ...]  # (label, record key, raw value)
    synthetic: bool
    mode_hint: tuple[str, str] | None = None  # (mode, record key) when the record shows it unlabeled

    def file_label(self, name: str) -> tuple[str, object] | None:
        for label, key, value in self.file_labels:
            if label == name:
                return key, value
        return None
