"""What `watch` found for one draft, and how it reads in the terminal, as JSON and in a pull request.

Pure data and wording; `pipeline.flows.watch` gathers the evidence from the Hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.card.markdown import escape_cell

SCHEMA = "mtp-watch/v1"
SourceState = Literal["unchanged", "bytes-unchanged", "rebuild-needed"]
SOURCE_PHRASES = {
    "unchanged": "source unchanged",
    "bytes-unchanged": "source moved, draft bytes unchanged",
    "rebuild-needed": "rebuild needed",
}
SHORT = 12  # commit ids in titles and lines; the body and the JSON keep them whole


@dataclass(frozen=True)
class HeaderChange:
    """A draft tensor whose header entry in its source shard differs between the two commits."""

    tensor: str
    field: str  # dtype, shape, offsets, or missing (no longer in the shard or the index)
    old: Any
    new: Any

    def line(self) -> str:
        return f"{self.tensor}: {self.field} {_value(self.old)} -> {_value(self.new)}"


@dataclass(frozen=True)
class ShardChange:
    """A source shard holding draft tensors whose LFS sha256 changed (or that is gone)."""

    shard: str
    new_shard: str | None
    old_sha256: str | None
    new_sha256: str | None
    tensors: tuple[str, ...]
    header_changes: tuple[HeaderChange, ...]

    def line(self) -> str:
        moved = f" (now {self.new_shard})" if self.new_shard and self.new_shard != self.shard else ""
        return (
            f"{self.shard}{moved}: sha256 {_short(self.old_sha256)} -> {_short(self.new_sha256)}, holds {len(self.tensors)} draft tensor(s)"
        )


@dataclass(frozen=True)
class FieldChange:
    """A field that matters to the draft (arrays, geometry, quantization_config, licence) and its two values."""

    file: str
    field: str
    old: Any
    new: Any

    def line(self) -> str:
        if isinstance(self.old, list) and isinstance(self.new, list):
            if len(self.old) != len(self.new):
                return f"{self.file}: {self.field}: {len(self.old)} entries -> {len(self.new)}"
            first = next(i for i, (a, b) in enumerate(zip(self.old, self.new, strict=True)) if a != b)
            return f"{self.file}: {self.field}[{first}]: {_value(self.old[first])} -> {_value(self.new[first])}"
        return f"{self.file}: {self.field}: {_value(self.old)} -> {_value(self.new)}"


@dataclass(frozen=True)
class SourceWatch:
    """The source at the recipe's revision against the locked commit."""

    state: SourceState
    old_commit: str
    new_commit: str
    shards: tuple[ShardChange, ...] = ()
    files: tuple[str, ...] = ()  # small files whose content changed, appeared or vanished
    fields: tuple[FieldChange, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def phrase(self) -> str:
        return SOURCE_PHRASES[self.state]


@dataclass(frozen=True)
class TargetWatch:
    """The target at the recipe's revision against the locked commit, with inspect's new verdict."""

    old_commit: str | None
    new_commit: str
    old_verdict: str | None
    new_verdict: str
    reasons: tuple[str, ...]
    summary: str

    @property
    def moved(self) -> bool:
        return self.old_commit != self.new_commit

    @property
    def phrase(self) -> str:
        return f"{'still' if self.old_verdict == self.new_verdict else 'now'} {self.new_verdict}"


@dataclass(frozen=True)
class DraftWatch:
    """One draft's watch result; `skipped` says why nothing could be compared."""

    draft: str
    source_repo: str | None
    target_repo: str | None
    source: SourceWatch | None = None
    target: TargetWatch | None = None
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        moved_source = self.source is not None and self.source.state != "unchanged"
        return moved_source or (self.target is not None and self.target.moved)

    @property
    def headline(self) -> str:
        """One line: what moved and what it means."""
        if self.skipped:
            return f"{self.draft}: skipped: {self.skipped}"
        if not self.changed:
            return f"{self.draft}: unchanged"
        parts = []
        if self.source is not None and self.source.state != "unchanged":
            parts.append(f"{self.source.phrase} (source {_short(self.source.old_commit)} -> {_short(self.source.new_commit)})")
        if self.target is not None and self.target.moved:
            parts.append(f"target moved ({_short(self.target.old_commit)} -> {_short(self.target.new_commit)}), {self.target.phrase}")
        return f"{self.draft}: " + "; ".join(parts)

    def details(self) -> list[str]:
        """The evidence behind the headline, one item per line."""
        lines: list[str] = []
        if self.source is not None and self.source.state != "unchanged":
            lines += [f"source shard {change.line()}" for change in self.source.shards]
            lines += [f"  header {h.line()}" for change in self.source.shards for h in change.header_changes]
            lines += [f"source file changed: {name}" for name in self.source.files]
            lines += [f"source {field.line()}" for field in self.source.fields]
            lines += [f"reason: {reason}" for reason in self.source.reasons]
        if self.target is not None and (self.target.moved or self.target.old_verdict != self.target.new_verdict):
            lines.append(f"inspect: {self.target.old_verdict or 'not inspected'} -> {self.target.new_verdict}: {self.target.summary}")
            lines += [f"  reason: {reason}" for reason in self.target.reasons]
        return lines

    def render(self) -> str:
        return "\n".join([self.headline, *(f"  {line}" for line in self.details())])

    def to_json(self) -> dict[str, Any]:
        return {
            "draft": self.draft,
            "changed": self.changed,
            "skipped": self.skipped,
            "headline": self.headline,
            "source": None if self.source is None else _source_json(self.source, self.source_repo),
            "target": None if self.target is None else _target_json(self.target, self.target_repo),
        }


def _source_json(source: SourceWatch, repo: str | None) -> dict[str, Any]:
    return {
        "repo": repo,
        "state": source.state,
        "summary": source.phrase,
        "old_commit": source.old_commit,
        "new_commit": source.new_commit,
        "shards": [
            {
                "shard": c.shard,
                "new_shard": c.new_shard,
                "old_sha256": c.old_sha256,
                "new_sha256": c.new_sha256,
                "tensors": list(c.tensors),
                "header_changes": [{"tensor": h.tensor, "field": h.field, "old": h.old, "new": h.new} for h in c.header_changes],
            }
            for c in source.shards
        ],
        "files": list(source.files),
        "fields": [{"file": f.file, "field": f.field, "old": f.old, "new": f.new} for f in source.fields],
        "reasons": list(source.reasons),
    }


def _target_json(target: TargetWatch, repo: str | None) -> dict[str, Any]:
    return {
        "repo": repo,
        "moved": target.moved,
        "old_commit": target.old_commit,
        "new_commit": target.new_commit,
        "old_verdict": target.old_verdict,
        "verdict": target.new_verdict,
        "change": target.phrase,
        "summary": target.summary,
        "reasons": list(target.reasons),
    }


def report_json(results: list[DraftWatch]) -> dict[str, Any]:
    """The whole `watch --json` document."""
    return {"schema": SCHEMA, "changed": [r.draft for r in results if r.changed], "drafts": [r.to_json() for r in results]}


def _short(commit: str | None) -> str:
    return commit[:SHORT] if commit else "none"


def _value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def summary_markdown(results: list[DraftWatch], branches: dict[str, str]) -> str:
    """The findings as Markdown for a CI job summary: one row per draft, then the evidence of each change."""
    lines = ["### Upstream watch", "", "| Draft | Finding | Proposal |", "|---|---|---|"]
    for result in results:
        finding = result.headline.split(": ", 1)[1]
        lines.append(f"| {escape_cell(result.draft)} | {escape_cell(finding)} | {escape_cell(branches.get(result.draft, '—'))} |")
    for result in results:
        if result.changed:
            lines += ["", f"#### {escape_cell(result.draft)}", "", *(f"- {escape_cell(line)}" for line in result.details())]
    return "\n".join(lines) + "\n"
