"""inspect: is the draft still needed for this target revision?

Reads, from the source and the target: `config.json`, the weight index, the headers of only the
target shards that hold MTP-layer keys (two small range reads each, never tensor data), and the
tokenizer files. Writes nothing; the caller puts the report into the lock and the card. Refuses
(raises) only on unreadable input: a missing config or index, a source config without geometry,
a malformed header, or an index entry its shard's header lacks.

The verdict:

- `incompatible` when the family builds its MTP with the target's quantization config (every
  family but Step-3.5/3.7, Qwen4 Exp and Nemotron-H, vLLM 0.33.0) and that config's exclude list
  does not cover every MTP module as vLLM matches it: the BF16 draft would be loaded into quantized modules. The reason names the
  uncovered modules and the exclude entries missing (`pipeline.families.quant_excludes`).
- `incompatible` when draft and target disagree on `hidden_size`, `vocab_size`,
  `num_hidden_layers` (LongCat-Flash: `num_layers`) or the family's MTP layer count (or the target does not declare one; an
  absent count takes the family's default, 1 for Qwen3-Next as in vLLM), or when a vocabulary
  file (`tokenizer.json`, `tokenizer.model`) present on both sides differs in content.
  Settings files (`tokenizer_config.json`, `special_tokens_map.json`) are compared and noted but
  do not decide: quantizing exports re-save them (chat templates, field order) without touching
  the token ids a draft depends on.
- `redundant` when the target ships every MTP tensor the draft would ship, unquantized, with the
  shape the config implies, under a name the family's vLLM loader reads, its per-layer config
  arrays cover every MTP layer and (for the families built from the target's config) its exclude
  list covers every MTP module. Then pointing vLLM at the target alone gives the same MTP.
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
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline.checkpoint.readers import CONFIG_FILE, INDEX_FILE, WeightIndex, read_config, read_shard_header, read_weight_index
from pipeline.checkpoint.sources import ModelSource
from pipeline.errors import InputError
from pipeline.families import ExpectedTensor, Family, Geometry
from pipeline.families.base import config_value
from pipeline.families.quant_excludes import QUANT_CONFIG_FILE, Coverage, describe, mtp_coverage
from pipeline.flows.inspect_report import (
    ArrayCoverage,
    FoundTensor,
    GeometryRow,
    InspectReport,
    TokenizerFile,
    Verdict,
    listed,
)
from pipeline.recipe.loader import HubRef, ModelRef

if TYPE_CHECKING:
    from pipeline.stages.context import Context

GEOMETRY_KEYS = ("hidden_size", "vocab_size")  # then the family's layer_count_key and count_key
# Files that fix token ids: a difference makes the draft's embedding and heads meaningless.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model")
# Files that exports re-save freely; a difference is worth a note, not a verdict.
TOKENIZER_SETTINGS_FILES = ("tokenizer_config.json", "special_tokens_map.json")


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
            for key in (*GEOMETRY_KEYS, family.layer_count_key, family.count_key)
        ),
        tokenizer=_tokenizer_files(source, target),
        quantization=_quantization(target, family, geometry, target_config),
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


def _quantization(target: ModelSource, family: Family, geometry: Geometry, config: Mapping[str, Any]) -> tuple[Coverage, str] | None:
    """How the target's quantization config treats the MTP modules, for families built from it."""
    quant_file = (
        json.loads(target.read(QUANT_CONFIG_FILE))
        if config.get("quantization_config") is None and target.exists(QUANT_CONFIG_FILE)
        else None
    )
    try:
        result = mtp_coverage(family, geometry, config, quant_file)
    except ValueError as exc:
        raise InputError(f"{target.label}: {exc}") from None
    return None if result is None else (result, describe(family, result))


def _expected_mtp(family: Family, geometry: Geometry) -> list[ExpectedTensor]:
    """The draft's MTP-layer tensors; the extras (the embedding) every target has anyway, and the
    copies vLLM replaces with the target's own, are left out."""
    extras = {extra.name for extra in family.extra_tensors}
    return [tensor for tensor in family.expected_tensors(geometry) if tensor.name not in extras and not tensor.shared]


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
    declared = family.declared_params(geometry)
    found = []
    for tensor, name, shard in located:
        entry = headers[shard].tensors.get(name)
        if entry is None:
            raise InputError(f"{target.label}: {INDEX_FILE}: weight_map.{name} points at {shard}, whose header lacks it")
        loadable = family.replay(name, geometry, declared) == tensor.param
        found.append(FoundTensor(tensor.name, name, shard, entry.dtype, entry.shape, tensor.shape, loadable))
    return tuple(found), tuple(missing)


def _namespace(family: Family, geometry: Geometry, name: str) -> str:
    """The naming scheme a tensor was found under, written `model.layers.N.*`."""
    template = next(template for prefix, template in family.mtp_prefixes(geometry.mtp_layers) if name.startswith(prefix))
    return template.replace("{layer}", "N") + "*"


def _unexpected(family: Family, geometry: Geometry, index: WeightIndex, expected: list[ExpectedTensor]) -> tuple[str, ...]:
    """Index keys under an MTP layer that the family does not list (e.g. NVFP4 `weight_scale`s)."""
    known = family.known_source_names(geometry)
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
    if report.quantization is not None and not report.quantization[0].covered:
        conflicts += (report.quantization[1],)
    if conflicts:
        return "incompatible", conflicts
    gaps = _gaps(report, family, geometry)
    if gaps:
        return "needed", gaps
    arrays = f"the target's per-layer arrays cover all {geometry.total_layers} layers" if family.per_layer_arrays else None
    shipped = f"the target ships all {report.mtp_expected} MTP tensors of layers {_layers(geometry)} unquantized under {', '.join(report.mtp_namespaces)}"
    excluded = report.quantization[1] if report.quantization is not None else None
    return "redundant", (shipped, *([arrays] if arrays else []), *([excluded] if excluded else []))


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
        if isinstance(declared, int) and family.mtp_layer_limit is not None and declared > family.mtp_layer_limit:
            # The count is of layers, of which vLLM builds only the first (MiMo-V2: mimo_v2_mtp.py:51-54, 177).
            also = (
                f", although its config declares {declared} MTP layers, of which vLLM {family.vllm_release} loads {family.mtp_layer_limit}"
            )
        elif isinstance(declared, int) and declared != geometry.num_mtp_layers:
            # The count is of steps, each running several layers (Nemotron-H: one step of the MTP pattern's layers).
            steps = "one MTP step" if declared == 1 else f"{declared} MTP steps"
            also = f", although its config declares {steps} of {geometry.num_mtp_layers} layers ({family.count_key}: {declared})"
        reasons.append(f"the target ships none of the {report.mtp_expected} MTP tensors of layers {layers}{also}")
    elif report.mtp_missing:
        reasons.append(f"the target ships {len(found)} of {report.mtp_expected} MTP tensors; missing: {listed(report.mtp_missing)}")
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
            f"the target has {len(report.mtp_unexpected)} MTP-layer tensors the {report.family} family does not list: {listed(report.mtp_unexpected)}"
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
