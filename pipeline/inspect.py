"""inspect: is the draft still needed for this target revision?

Reads, from the source and the target: `config.json`, the weight index, the headers of only the
target shards that hold MTP-layer keys (two small range reads each, never tensor data), and the
tokenizer files. Writes nothing; the caller puts the report into the lock and the card. Refuses
(raises) only on unreadable input: a missing config or index, a source config without geometry,
a malformed header, or an index entry its shard's header lacks.

The verdict:

- `incompatible` when draft and target disagree on `hidden_size`, `vocab_size`,
  `num_hidden_layers` or the family's MTP layer count (or the target does not declare one; an
  absent count takes the family's default, 1 for Qwen3-Next as in vLLM), or when a vocabulary
  file (`tokenizer.json`, `tokenizer.model`) present on both sides differs in content.
  Settings files (`tokenizer_config.json`, `special_tokens_map.json`) are compared and noted but
  do not decide: quantizing exports re-save them (chat templates, field order) without touching
  the token ids a draft depends on.
- `redundant` when the target ships every MTP tensor the draft would ship, unquantized, with the
  shape the config implies, under a name the family's vLLM loader reads, and its per-layer config
  arrays cover every MTP layer. Then pointing vLLM at the target alone gives the same MTP.
- `needed` otherwise, with the reasons. Two cases are `needed` although the tensors are there:
  - MTP tensors found only under a namespace the loader does not read (for Step,
    `model.language_model.layers.N.*`): vLLM's Step3p5MTP loader has no name mapper and would
    refuse them as missing parameters.
  - MTP tensors in quantized form (a non-float dtype such as U8, NVFP4's packed weights): the
    layers were trained and released in BF16, no Step checkpoint is known to ship its MTP
    quantized, and the known vLLM failure around Step MTP is a quantization mismatch while it
    builds the draft layers, so a quantized MTP is untested ground. The BF16 draft stays the
    tested path, so it is still needed; the report lists the quantized tensors.

Expected tensors, shapes and the layer count needed by the arrays come from the *source* geometry:
the question is whether the target already holds what the draft would ship. When the geometries
differ the verdict is `incompatible` whatever the tensors say.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from pipeline.checkpoint import CONFIG_FILE, INDEX_FILE, WeightIndex, read_config, read_shard_header, read_weight_index
from pipeline.errors import InputError
from pipeline.families import ExpectedTensor, Family, Geometry
from pipeline.families.base import config_value
from pipeline.families.loader_names import vllm_param_name
from pipeline.recipe import HubRef, ModelRef
from pipeline.sources import ModelSource

if TYPE_CHECKING:
    from pipeline.runner import Context

SCHEMA = "mtp-inspect/v1"
Verdict = Literal["needed", "redundant", "incompatible"]
GEOMETRY_KEYS = ("hidden_size", "vocab_size", "num_hidden_layers")  # then the family's count_key
# Unquantized weight dtypes; anything else on an MTP weight (U8, F8_*, I8) is a quantized form.
FLOAT_DTYPES = frozenset({"BF16", "F16", "F32", "F64"})
# Files that fix token ids: a difference makes the draft's embedding and heads meaningless.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model")
# Files that exports re-save freely; a difference is worth a note, not a verdict.
TOKENIZER_SETTINGS_FILES = ("tokenizer_config.json", "special_tokens_map.json")
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
        }

    def render(self) -> str:
        """The human answer: verdict, the card line, reasons, notes and the per-key evidence."""
        lines = [f"verdict: {self.verdict}", self.summary_line()]
        lines += [f"  reason: {reason}" for reason in self.reasons]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append("geometry: " + ", ".join(_geometry_state(g) for g in self.geometry))
        lines.append("arrays: " + (", ".join(f"{a.field} {a.length}/{a.needed}" for a in self.arrays if a.length) or "none per layer"))
        lines.append("tokenizer: " + (", ".join(f"{f.name} {_tokenizer_state(f)}" for f in self.tokenizer) or "no tokenizer files"))
        return "\n".join(lines)


def inspect(
    source: ModelSource,
    target: ModelSource,
    family: Family,
    today: str,
    *,
    source_name: str | None = None,
    target_name: str | None = None,
) -> InspectReport:
    """Check the target against the draft built from `source`; `today` is the caller's date (ISO).

    `source_name`/`target_name` name the repos in the report (e.g. `org/name`); the sources'
    labels are used when they are not given.
    """
    source_commit, target_commit = source.resolve(), target.resolve()
    source_config, target_config = read_config(source), read_config(target)
    try:
        geometry = family.read_geometry(source_config)
    except ValueError as exc:
        raise InputError(f"{source.label}: {CONFIG_FILE}: {exc}") from None
    expected = _expected_mtp(family, geometry)
    index = read_weight_index(target)
    found, missing = _locate(target, family, geometry, index, expected)
    evidence = InspectReport(
        verdict="needed",
        reasons=(),
        notes=(),
        checked_at=today,
        family=family.name,
        source=source_name or source.label,
        source_commit=source_commit,
        target=target_name or target.label,
        target_commit=target_commit,
        mtp_layers=tuple(geometry.mtp_layers),
        mtp_expected=len(expected),
        mtp_found=found,
        mtp_missing=missing,
        mtp_namespaces=tuple(dict.fromkeys(_namespace(family, geometry, t.found_as) for t in found)),
        mtp_unexpected=_unexpected(family, geometry, index, expected),
        arrays=_array_coverage(target_config, family, geometry.total_layers),
        geometry=tuple(
            GeometryRow(
                key, _declared(source_config, key), _declared(target_config, key), family.count_default if key == family.count_key else None
            )
            for key in (*GEOMETRY_KEYS, family.count_key)
        ),
        tokenizer=_tokenizer_files(source, target),
    )
    verdict, reasons = _verdict(evidence, family, geometry)
    return replace(evidence, verdict=verdict, reasons=reasons, notes=_notes(evidence))


def inspect_recipe(ctx: Context, today: str) -> InspectReport:
    """Inspect a recipe's source and target, naming Hub repos by their ids."""
    return inspect(
        ctx.source("source"),
        ctx.source("target"),
        ctx.family,
        today,
        source_name=_ref_name(ctx.recipe.source),
        target_name=_ref_name(ctx.recipe.target),
    )


def _ref_name(ref: ModelRef) -> str:
    return ref.repo_id if isinstance(ref, HubRef) else str(ref)


def _expected_mtp(family: Family, geometry: Geometry) -> list[ExpectedTensor]:
    """The draft's MTP-layer tensors; the extras (the embedding) every target has anyway are left out."""
    extras = {extra.name for extra in family.extra_tensors}
    return [tensor for tensor in family.expected_tensors(geometry) if tensor.name not in extras]


def _locate(
    target: ModelSource, family: Family, geometry: Geometry, index: WeightIndex, expected: list[ExpectedTensor]
) -> tuple[tuple[FoundTensor, ...], tuple[str, ...]]:
    """Find each expected tensor under any known name; read only the headers of shards holding one."""
    located: list[tuple[ExpectedTensor, str, str]] = []
    missing: list[str] = []
    for tensor in expected:
        name = next((candidate for candidate in tensor.source_names if candidate in index.weight_map), None)
        if name is None:
            missing.append(tensor.name)
        else:
            located.append((tensor, name, index.weight_map[name]))
    headers = {shard: read_shard_header(target, shard) for shard in sorted({shard for _, _, shard in located})}
    found = []
    for tensor, name, shard in located:
        entry = headers[shard].tensors.get(name)
        if entry is None:
            raise InputError(f"{target.label}: {INDEX_FILE}: weight_map.{name} points at {shard}, whose header lacks it")
        loadable = vllm_param_name(family.loader, name, geometry.mtp_layers) is not None
        found.append(FoundTensor(tensor.name, name, shard, entry.dtype, entry.shape, tensor.shape, loadable))
    return tuple(found), tuple(missing)


def _namespace(family: Family, geometry: Geometry, name: str) -> str:
    """The naming scheme a tensor was found under, written `model.layers.N.*`."""
    template = next(template for prefix, template in family.mtp_prefixes(geometry.mtp_layers) if name.startswith(prefix))
    return template.replace("{layer}", "N") + "*"


def _unexpected(family: Family, geometry: Geometry, index: WeightIndex, expected: list[ExpectedTensor]) -> tuple[str, ...]:
    """Index keys under an MTP layer that the family does not list (e.g. NVFP4 `weight_scale`s)."""
    known = {name for tensor in expected for name in tensor.source_names}
    prefixes = tuple(prefix for prefix, _ in family.mtp_prefixes(geometry.mtp_layers))
    return tuple(sorted(name for name in index.weight_map if name.startswith(prefixes) and name not in known))


def _declared(config: Mapping[str, Any], key: str) -> Any:
    try:
        return config_value(config, key)[1]
    except KeyError:
        return None


def _array_coverage(config: Mapping[str, Any], family: Family, needed: int) -> tuple[ArrayCoverage, ...]:
    """Each per-layer array as vLLM reads it (text_config first), against the layer count the draft needs."""
    rows = []
    for key in family.per_layer_arrays:
        try:
            where, value = config_value(config, key)
        except KeyError:
            continue
        rows.append(ArrayCoverage(where, len(value) if isinstance(value, list) else None, needed))
    return tuple(rows)


def _tokenizer_files(source: ModelSource, target: ModelSource) -> tuple[TokenizerFile, ...]:
    rows = []
    for name in VOCABULARY_FILES + TOKENIZER_SETTINGS_FILES:
        ours, theirs = _file_digest(source, name), _file_digest(target, name)
        if ours is None and theirs is None:
            continue
        same = None if ours is None or theirs is None else ours == theirs or _same_json(source, target, name)
        rows.append(TokenizerFile(name, ours, theirs, same, name in VOCABULARY_FILES))
    return tuple(rows)


def _file_digest(source: ModelSource, name: str) -> str | None:
    """The file's content sha256; the Hub's LFS record stands in for a download when it has one."""
    if not source.exists(name):
        return None
    return source.lfs_sha256(name) or hashlib.sha256(source.read(name)).hexdigest()


def _same_json(source: ModelSource, target: ModelSource, name: str) -> bool:
    """Equal parsed JSON counts as equal: re-saving a tokenizer changes whitespace and key order only."""
    if not name.endswith(".json"):
        return False
    try:
        return bool(json.loads(source.read(name)) == json.loads(target.read(name)))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def _verdict(report: InspectReport, family: Family, geometry: Geometry) -> tuple[Verdict, tuple[str, ...]]:
    """The verdict and its reasons, from the evidence gathered in `report`."""
    conflicts = _incompatibilities(report)
    if conflicts:
        return "incompatible", conflicts
    gaps = _gaps(report, family, geometry)
    if gaps:
        return "needed", gaps
    arrays = f"the target's per-layer arrays cover all {geometry.total_layers} layers" if family.per_layer_arrays else None
    shipped = f"the target ships all {report.mtp_expected} MTP tensors of layers {_layers(geometry)} unquantized under {', '.join(report.mtp_namespaces)}"
    return "redundant", (shipped, *([arrays] if arrays else []))


def _incompatibilities(report: InspectReport) -> tuple[str, ...]:
    reasons = []
    for row in report.geometry:
        if row.target_value is None:
            reasons.append(f"the target config does not declare {row.key}")
        elif not row.agrees:
            reasons.append(f"{row.key} differs: draft {row.source_value}, target {row.target_value}")
    reasons += [f"{f.name} differs between source and target, so token ids may not match" for f in report.tokenizer if f.conflicts]
    return tuple(reasons)


def _gaps(report: InspectReport, family: Family, geometry: Geometry) -> tuple[str, ...]:
    """Why the target's own MTP is not usable as it stands; empty when it is."""
    reasons = []
    found, layers = report.mtp_found, _layers(geometry)
    if not found:
        declared = next((row.target for row in report.geometry if row.key == family.count_key), None)
        also = f", although its config declares {family.count_key}: {declared}" if declared else ""
        reasons.append(f"the target ships none of the {report.mtp_expected} MTP tensors of layers {layers}{also}")
    elif report.mtp_missing:
        reasons.append(f"the target ships {len(found)} of {report.mtp_expected} MTP tensors; missing: {_listed(report.mtp_missing)}")
    unread = [t.found_as for t in found if not t.loadable]
    if unread:
        reasons.append(
            f"{len(unread)} MTP tensors are named {_namespace(family, geometry, unread[0])}, which vLLM's {family.vllm_class} loader does not read"
        )
    if report.mtp_quantized:
        dtypes = "/".join(sorted({t.dtype for t in report.mtp_quantized}))
        reasons.append(
            f"{len(report.mtp_quantized)} MTP tensors are quantized ({dtypes}); the draft ships the BF16 originals, and no quantized {family.name} MTP is known to load in vLLM"
        )
    if report.mtp_misshapen:
        first = report.mtp_misshapen[0]
        reasons.append(
            f"{len(report.mtp_misshapen)} MTP tensors have another shape than the config implies, first {first.found_as} {list(first.shape)} (expected {list(first.expected_shape)})"
        )
    if report.truncated_arrays:
        by_length = {a.length: [b.field for b in report.truncated_arrays if b.length == a.length] for a in report.truncated_arrays}
        short = "; ".join(
            f"{', '.join(fields)} {'has' if len(fields) == 1 else 'have'} {length}" for length, fields in sorted(by_length.items())
        )
        reasons.append(f"per-layer arrays stop short of the MTP layers: {short}; layers {layers} need {geometry.total_layers} entries")
    return tuple(reasons)


def _notes(report: InspectReport) -> tuple[str, ...]:
    """Findings that do not decide the verdict but a reviewer should see."""
    notes = []
    if report.mtp_unexpected:
        notes.append(
            f"the target has {len(report.mtp_unexpected)} MTP-layer tensors the {report.family} family does not list: {_listed(report.mtp_unexpected)}"
        )
    for file in report.tokenizer:
        if file.same_content is None:
            notes.append(f"{file.name} is only in the {'source' if file.target_sha256 is None else 'target'}")
        elif not file.same_content and not file.defines_vocabulary:
            notes.append(f"{file.name} differs between source and target (settings only; token ids come from the vocabulary files)")
    return tuple(notes)


def _layers(geometry: Geometry) -> str:
    layers = geometry.mtp_layers
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0]) if layers else "(none)"


def _listed(names: Sequence[str]) -> str:
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
