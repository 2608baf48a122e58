"""The inspect report: what was found in the target, and how it reads in the card, lock and terminal.

Pure data and wording; `pipeline.flows.inspect` decides the verdict from the two repos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.families.quant_excludes import Coverage, missing_patterns

SCHEMA = "mtp-inspect/v1"
Verdict = Literal["needed", "redundant", "incompatible"]
# Unquantized weight dtypes; anything else on an MTP weight (U8, F8_*, I8) is a quantized form.
FLOAT_DTYPES = frozenset({"BF16", "F16", "F32", "F64"})
LISTED_NAMES = 5  # how many tensor names a reason spells out before "and N more"


@dataclass(frozen=True)
class FoundTensor:
    """An MTP tensor the target ships: the draft's name, the target's name, and its header entry."""

    name: str
    found_as: str
    shard: str
    dtype: str
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    loadable: bool

    @property
    def quantized(self) -> bool:
        return self.dtype not in FLOAT_DTYPES

    @property
    def misshapen(self) -> bool:
        # A quantized weight is packed ([out, in/2] for NVFP4), so its shape says nothing here.
        return not self.quantized and self.shape != self.expected_shape


@dataclass(frozen=True)
class ArrayCoverage:
    """One per-layer config array of the target: its length against the layers the draft needs."""

    field: str
    length: int | None  # None: absent or not a list (a scalar applies to every layer)
    needed: int

    @property
    def covers(self) -> bool:
        # An empty list means "every layer" (use_rope_layers), so only a short non-empty list is truncated.
        return not self.length or self.length >= self.needed


@dataclass(frozen=True)
class GeometryRow:
    """One geometry field as the source (the draft) and the target declare it (None: absent)."""

    key: str
    source: Any
    target: Any
    default: Any = None  # what vLLM assumes when a config lacks the field

    @property
    def source_value(self) -> Any:
        return self.default if self.source is None else self.source

    @property
    def target_value(self) -> Any:
        return self.default if self.target is None else self.target

    @property
    def agrees(self) -> bool:
        return self.source_value is not None and self.source_value == self.target_value


@dataclass(frozen=True)
class TokenizerFile:
    """One tokenizer file's sha256 on each side (None where the side lacks it)."""

    name: str
    source_sha256: str | None
    target_sha256: str | None
    same_content: bool | None  # None unless both sides have it; equal bytes or equal parsed JSON
    defines_vocabulary: bool

    @property
    def conflicts(self) -> bool:
        return self.defines_vocabulary and self.same_content is False


@dataclass(frozen=True)
class InspectReport:
    """Whether the draft is needed for one target revision, and the evidence."""

    verdict: Verdict
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    checked_at: str
    family: str
    source: str
    source_commit: str | None
    target: str
    target_commit: str | None
    mtp_layers: tuple[int, ...]
    mtp_expected: int
    mtp_found: tuple[FoundTensor, ...]
    mtp_missing: tuple[str, ...]
    mtp_namespaces: tuple[str, ...]
    mtp_unexpected: tuple[str, ...]
    arrays: tuple[ArrayCoverage, ...]
    geometry: tuple[GeometryRow, ...]
    tokenizer: tuple[TokenizerFile, ...]
    # Families built from the target's quantization config: the coverage of the MTP modules and
    # its one-line reading; None for Step, whose MTP uses the draft's own config.
    quantization: tuple[Coverage, str] | None = None

    @property
    def mtp_quantized(self) -> tuple[FoundTensor, ...]:
        return tuple(t for t in self.mtp_found if t.quantized)

    @property
    def mtp_misshapen(self) -> tuple[FoundTensor, ...]:
        return tuple(t for t in self.mtp_found if t.misshapen)

    @property
    def truncated_arrays(self) -> tuple[ArrayCoverage, ...]:
        return tuple(a for a in self.arrays if not a.covers)

    @property
    def checked_against(self) -> str:
        """`org/name@<commit>` for a Hub target, the folder's name for a local one."""
        return f"{self.target}@{self.target_commit}" if self.target_commit else self.target

    def summary_line(self) -> str:
        """The card's one line, e.g. "checked against org/name@<commit>: ships no MTP tensors; arrays truncated to 45"."""
        parts = [_mtp_phrase(self), _arrays_phrase(self)]
        parts += [f"{row.key} differs (draft {row.source_value}, target {row.target_value})" for row in self.geometry if not row.agrees]
        parts += [f"{file.name} differs" for file in self.tokenizer if file.conflicts]
        if self.quantization is not None and not self.quantization[0].covered:
            coverage = self.quantization[0]
            missing = ", ".join(missing_patterns(coverage)) or "its quantization method is not replayed"
            parts.append(f"vLLM would load the MTP quantized with the target's config (exclude list misses {missing})")
        return f"checked against {self.checked_against}: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict in a fixed key order, for `--json`, the lock and the card."""
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "summary": self.summary_line(),
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "checked_at": self.checked_at,
            "family": self.family,
            "source": {"name": self.source, "commit": self.source_commit},
            "target": {"name": self.target, "commit": self.target_commit},
            "mtp": {
                "layers": list(self.mtp_layers),
                "expected": self.mtp_expected,
                "found": [_found_json(t) for t in self.mtp_found],
                "missing": list(self.mtp_missing),
                "namespaces": list(self.mtp_namespaces),
                "shards": sorted({t.shard for t in self.mtp_found}),
                "quantized": [t.found_as for t in self.mtp_quantized],
                "misshapen": [t.found_as for t in self.mtp_misshapen],
                "unexpected": list(self.mtp_unexpected),
            },
            "arrays": [{"field": a.field, "length": a.length, "needed": a.needed, "covers": a.covers} for a in self.arrays],
            "geometry": [{"key": g.key, "source": g.source, "target": g.target, "agrees": g.agrees} for g in self.geometry],
            "tokenizer": [
                {
                    "file": f.name,
                    "source_sha256": f.source_sha256,
                    "target_sha256": f.target_sha256,
                    "same_content": f.same_content,
                    "defines_vocabulary": f.defines_vocabulary,
                }
                for f in self.tokenizer
            ],
            "quantization": (
                {
                    **self.quantization[0].to_json(),
                    "missing_patterns": list(missing_patterns(self.quantization[0])),
                    "reading": self.quantization[1],
                }
                if self.quantization is not None
                else None
            ),
        }

    def render(self) -> str:
        """The human answer: verdict, the card line, reasons, notes and the per-key evidence."""
        lines = [f"verdict: {self.verdict}", self.summary_line()]
        lines += [f"  reason: {reason}" for reason in self.reasons]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append("geometry: " + ", ".join(_geometry_state(g) for g in self.geometry))
        lines.append("arrays: " + (", ".join(f"{a.field} {a.length}/{a.needed}" for a in self.arrays if a.length) or "none per layer"))
        lines.append("tokenizer: " + (", ".join(f"{f.name} {_tokenizer_state(f)}" for f in self.tokenizer) or "no tokenizer files"))
        if self.quantization is not None:
            lines.append(f"quantization: {self.quantization[1]}")
        return "\n".join(lines)


def listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else "")


def _mtp_phrase(report: InspectReport) -> str:
    found = len(report.mtp_found)
    if not found:
        return "ships no MTP tensors"
    count = f"all {found}" if not report.mtp_missing else f"{found} of {report.mtp_expected}"
    details = []
    if any(not t.loadable for t in report.mtp_found):
        details.append("under " + ", ".join(report.mtp_namespaces))
    if report.mtp_quantized:
        details.append(f"{len(report.mtp_quantized)} quantized")
    return f"ships {count} MTP tensors" + (f" ({'; '.join(details)})" if details else "")


def _arrays_phrase(report: InspectReport) -> str:
    if not report.arrays:
        return "no per-layer arrays"
    short = report.truncated_arrays
    if not short:
        return f"arrays cover all {report.arrays[0].needed} layers"
    return "arrays truncated to " + "/".join(str(length) for length in sorted({a.length for a in short if a.length}))


def _found_json(tensor: FoundTensor) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "found_as": tensor.found_as,
        "shard": tensor.shard,
        "dtype": tensor.dtype,
        "shape": list(tensor.shape),
        "expected_shape": list(tensor.expected_shape),
    }


def _tokenizer_state(file: TokenizerFile) -> str:
    if file.same_content is None:
        return "source only" if file.target_sha256 is None else "target only"
    return "same" if file.same_content else "differs"


def _geometry_state(row: GeometryRow) -> str:
    return f"{row.key} {row.source_value}" if row.agrees else f"{row.key} draft {row.source_value} target {row.target_value}"
