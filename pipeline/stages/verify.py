"""verify: prove the draft folder is exactly what vLLM's MTP loader needs, byte for byte.

Reads `<workdir>/draft/`, the fetch manifest (source sha256 of every tensor) and the target's
config. Writes `<workdir>/verify.json`: every check with a stable id, pass/fail and evidence, and
the size and sha256 of every draft file, so publish can refuse a folder changed after verify, and
the fields in which the draft config differs from the source's, which the card lists. Licence
checks: the source card's id equals the recipe's, the source's LICENSE/NOTICE files are carried
byte for byte, and the source's licence file really holds the declared licence's text.
Each shard is read once: hashing, the NaN/Inf scan and the structure checks share that pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.card.licenses import license_terms
from pipeline.checkpoint.config_diff import config_changes
from pipeline.checkpoint.files import atomic_write_json, read_json, sha256_file
from pipeline.checkpoint.readers import (
    CARD_FILE,
    CONFIG_FILE,
    INDEX_FILE,
    LICENSE_FILES,
    LICENSE_TEXT_FILES,
    QUANTIZATION_KEY,
    auto_map_files,
    read_card_license,
)
from pipeline.checkpoint.scan import ShardScan, scan_shard
from pipeline.errors import CheckFailed, InputError
from pipeline.families import Family
from pipeline.families.arrays import short_arrays
from pipeline.families.base import Geometry, config_value
from pipeline.families.quant_excludes import QUANT_CONFIG_FILE, describe, mtp_coverage
from pipeline.recipe.layout import Workdir
from pipeline.stages.context import Context, Stage, StageOutcome, file_digest, folder_state

SCHEMA = "mtp-verify/v1"
GEOMETRY_KEYS = ("hidden_size", "vocab_size")
# vLLM 0.33.0 transformers_utils/config.py:180-184: the model_type of a config.json that names none.
ARCHITECTURE_MODEL_TYPES = {"LongcatFlashForCausalLM": "longcat_flash", "LongcatFlashNgramForCausalLM": "longcat_flash"}


@dataclass(frozen=True)
class VerifyInputs:
    workdir: Workdir
    family: Family
    expected_license: str


@dataclass(frozen=True)
class Check:
    id: str
    passed: bool
    evidence: str


@dataclass(frozen=True)
class VerifyResult:
    report: Path
    passed: bool
    checks: tuple[Check, ...]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    advisories: tuple[Check, ...] = ()


def run(inputs: VerifyInputs) -> VerifyResult:
    """Run every check, write verify.json, and raise CheckFailed naming the first failure."""
    workdir, family = inputs.workdir, inputs.family
    draft = workdir.draft
    manifest = read_json(workdir.fetch_manifest, "run the fetch stage first")
    config = read_json(draft / CONFIG_FILE, "run the config-fix stage first")
    index = read_json(draft / INDEX_FILE, "run the extract stage first")
    target_config = read_json(workdir.target_files / CONFIG_FILE, "run the fetch stage first")
    try:
        geometry = family.read_geometry(config)
    except ValueError as exc:
        raise InputError(f"{draft / CONFIG_FILE}: {exc}") from None
    expected = {t.name: t for t in family.expected_tensors(geometry)}
    source_sha = {t["name"]: t["sha256"] for t in manifest["tensors"]}
    source_dtype = {t["name"]: t["dtype"] for t in manifest["tensors"]}

    shard_names = sorted(p.name for p in draft.glob("*.safetensors"))
    scans = {name: scan_shard(draft / name) for name in shard_names}
    located = {tensor: name for name, scan in scans.items() if scan.header for tensor in scan.header.tensors}
    entries = {tensor: scans[shard].header.tensors[tensor] for tensor, shard in located.items()}  # type: ignore[union-attr]

    checks = [
        _check_structure(scans),
        _check_expected_set(expected, located),
        _check_source_bytes(scans, source_sha),
        _check_finite(scans),
        _check_geometry(expected, entries, source_dtype),
        _check_index(index, located, entries),
        _check_arrays(config, family, geometry),
        _check_no_quantization(config),
        _check_route(config, family),
        _check_loader_names(family, geometry, located, expected),
        _check_target_geometry(config, target_config),
        _check_auto_map(config, draft),
        _check_license(workdir, inputs.expected_license),
        _check_license_files(workdir),
        _check_license_text(workdir, inputs.expected_license),
    ]
    files = {
        path.relative_to(draft).as_posix(): {
            "size": path.stat().st_size,
            "sha256": scans[path.name].sha256 if path.name in scans else sha256_file(path),
        }
        for path in sorted(draft.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }
    passed = all(check.passed for check in checks)
    # What differs from the source, field by field, for the card's list of changed files.
    source_config = read_json(workdir.source_files / CONFIG_FILE, "run the fetch stage first")
    changes = {CONFIG_FILE: config_changes(source_config, config)}
    # Not a check of the draft: whether the target lets vLLM build the MTP unquantized decides
    # inspect's verdict (and a forced release's card), so verify records it without failing.
    advisories = [_quantization_advisory(family, geometry, target_config, workdir)]
    report = {
        "schema": SCHEMA,
        "passed": passed,
        "checks": [c.__dict__ for c in checks],
        "advisories": [a.__dict__ for a in advisories],
        "files": files,
        "changes": changes,
    }
    atomic_write_json(workdir.verify_report, report)
    result = VerifyResult(workdir.verify_report, passed, tuple(checks), files, tuple(advisories))
    failed = [c for c in checks if not c.passed]
    if failed:
        others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise CheckFailed(f"verify: {failed[0].id}: {failed[0].evidence}{others}", hint=f"details in {workdir.verify_report}")
    return result


def _check_structure(scans: Mapping[str, ShardScan]) -> Check:
    if not scans:
        return Check("safetensors.structure", False, "no .safetensors file in the draft folder")
    problems = [p for scan in scans.values() for p in scan.problems]
    if problems:
        return Check("safetensors.structure", False, problems[0])
    return Check("safetensors.structure", True, f"{len(scans)} shard(s): headers parse, offsets contiguous and in bounds")


def _check_expected_set(expected: Mapping[str, Any], located: Mapping[str, str]) -> Check:
    missing = sorted(set(expected) - set(located))
    extra = sorted(set(located) - set(expected))
    if missing or extra:
        parts = [f"missing {missing[0]}" + (f" (+{len(missing) - 1})" if len(missing) > 1 else "")] if missing else []
        parts += [f"unexpected {extra[0]}" + (f" (+{len(extra) - 1})" if len(extra) > 1 else "")] if extra else []
        return Check("tensors.expected-set", False, "; ".join(parts))
    return Check("tensors.expected-set", True, f"all {len(expected)} expected tensors, nothing else")


def _check_source_bytes(scans: Mapping[str, ShardScan], source_sha: Mapping[str, str]) -> Check:
    hashes = {name: sha for scan in scans.values() for name, sha in scan.tensor_sha.items()}
    differing = sorted(name for name, sha in hashes.items() if name in source_sha and source_sha[name] != sha)
    if differing:
        return Check("tensors.source-bytes", False, f"{differing[0]}: sha256 differs from the source bytes")
    compared = sum(1 for name in hashes if name in source_sha)
    return Check("tensors.source-bytes", True, f"{compared} tensors byte-identical to the source (sha256)")


def _check_finite(scans: Mapping[str, ShardScan]) -> Check:
    bad = {name: count for scan in scans.values() for name, count in scan.non_finite.items()}
    if bad:
        name = sorted(bad)[0]
        return Check("tensors.finite", False, f"{name}: {bad[name]} NaN/Inf value(s)")
    return Check("tensors.finite", True, "no NaN or Inf in any floating-point tensor")


def _check_geometry(expected: Mapping[str, Any], entries: Mapping[str, Any], source_dtype: Mapping[str, str]) -> Check:
    for name, entry in sorted(entries.items()):
        if name not in expected:
            continue
        if tuple(entry.shape) != tuple(expected[name].shape):
            return Check("tensors.geometry", False, f"{name}: shape {list(entry.shape)}, the config implies {list(expected[name].shape)}")
        if name in source_dtype and entry.dtype != source_dtype[name]:
            return Check("tensors.geometry", False, f"{name}: dtype {entry.dtype}, the source has {source_dtype[name]}")
    return Check("tensors.geometry", True, "every shape follows from the config; dtypes equal the source's")


def _check_index(index: Any, located: Mapping[str, str], entries: Mapping[str, Any]) -> Check:
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        return Check("index.coverage", False, f"{INDEX_FILE}: weight_map missing")
    for name, shard in sorted(located.items()):
        if weight_map.get(name) != shard:
            return Check("index.coverage", False, f"{INDEX_FILE}: {name} maps to {weight_map.get(name)!r}, it is in {shard}")
    stray = sorted(set(weight_map) - set(located))
    if stray:
        return Check("index.coverage", False, f"{INDEX_FILE}: {stray[0]} is in no shard")
    total = sum(entry.nbytes for entry in entries.values())
    declared = (index.get("metadata") or {}).get("total_size")
    if declared != total:
        return Check("index.coverage", False, f"{INDEX_FILE}: metadata.total_size is {declared}, tensors hold {total} bytes")
    return Check("index.coverage", True, f"{len(located)} tensors indexed, total_size {total}")


def _check_arrays(config: Mapping[str, Any], family: Family, geometry: Any) -> Check:
    short = short_arrays(config, family, geometry)
    if short:
        return Check("config.arrays", False, f"{short[0][0]} has {short[0][1]} entries, needs {geometry.total_layers}")
    return Check("config.arrays", True, f"per-layer arrays cover layers 0-{geometry.total_layers - 1}")


def _check_no_quantization(config: Mapping[str, Any]) -> Check:
    text = config.get("text_config")
    if QUANTIZATION_KEY in config or (isinstance(text, Mapping) and QUANTIZATION_KEY in text):
        return Check("config.no-quantization", False, f"{CONFIG_FILE} carries {QUANTIZATION_KEY}")
    return Check("config.no-quantization", True, f"no {QUANTIZATION_KEY}")


def _check_route(config: Mapping[str, Any], family: Family) -> Check:
    architectures = config.get("architectures") or [None]
    # vLLM 0.33.0 transformers_utils/config.py:180-184, 368-369: a config without model_type takes one from architectures[0].
    model_type = config.get("model_type")
    if model_type is None:
        model_type = ARCHITECTURE_MODEL_TYPES.get(architectures[0])
    listed = architectures if family.route_any_architecture else architectures[:1]
    routed = model_type in family.route_model_types or any(name in family.route_architectures for name in listed)
    count = family.declared_mtp_count(config)
    if not routed or isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return Check(
            "config.mtp-route",
            False,
            f"model_type {model_type!r} (architecture {architectures[0]!r}) with {family.count_key} {count!r} "
            f"does not route to {family.vllm_class}",
        )
    return Check("config.mtp-route", True, f"model_type {model_type} (architecture {architectures[0]}) routes to {family.vllm_class}")


def _check_loader_names(family: Family, geometry: Geometry, located: Mapping[str, str], expected: Mapping[str, Any]) -> Check:
    """Replay the family's vLLM `load_weights` over every tensor: each must land on a declared
    parameter, and every parameter the draft is meant to fill must be filled."""
    declared = family.declared_params(geometry)
    wanted = {tensor.param for tensor in expected.values()}
    release = f"vLLM {family.vllm_release} {family.vllm_class}"
    filled: set[str] = set()
    for name in sorted(located):
        param = family.replay(name, geometry, declared)
        if param is None:
            return Check("loader.names", False, f"{name}: {release} skips this tensor, so the draft must not ship it")
        if param not in declared:
            return Check(
                "loader.names",
                False,
                f"{name} maps to {param}, which {release} does not declare ({family.unknown_name_error} while loading)",
            )
        filled.add(param)
    unfilled = sorted(wanted - filled)
    if unfilled:
        return Check("loader.names", False, f"{release} parameter {unfilled[0]} is filled by no tensor")
    return Check("loader.names", True, f"{len(located)} tensors fill {len(filled)} of the {len(declared)} parameters {release} declares")


def _quantization_advisory(family: Family, geometry: Geometry, target_config: Mapping[str, Any], workdir: Workdir) -> Check:
    if family.quantization_from == "draft":
        return Check(
            "target.mtp-quantization",
            True,
            f"{family.vllm_class} builds the MTP from the draft's own config, which has no quantization_config",
        )
    quant_path = workdir.target_files / QUANT_CONFIG_FILE
    quant_file = read_json(quant_path, "run the fetch stage again") if quant_path.is_file() else None
    try:
        result = mtp_coverage(family, geometry, target_config, quant_file)
    except ValueError as exc:
        raise InputError(f"{workdir.target_files}: {exc}") from None
    assert result is not None
    return Check("target.mtp-quantization", result.covered, describe(family, result))


def _check_target_geometry(config: Mapping[str, Any], target: Mapping[str, Any]) -> Check:
    for key in GEOMETRY_KEYS:
        try:
            _, ours = config_value(config, key)
            _, theirs = config_value(target, key)
        except KeyError:
            return Check("target.geometry", False, f"{key} missing from the draft or target config")
        if ours != theirs:
            return Check("target.geometry", False, f"{key}: draft {ours}, target {theirs}")
    return Check("target.geometry", True, "hidden_size and vocab_size equal the target's")


def _check_auto_map(config: dict[str, Any], draft: Path) -> Check:
    try:
        names = auto_map_files(config)
    except InputError as exc:
        return Check("files.auto-map", False, exc.message)
    missing = [name for name in names if not (draft / name).is_file()]
    if missing:
        return Check("files.auto-map", False, f"{missing[0]} is named by auto_map but missing")
    return Check("files.auto-map", True, f"{len(names)} auto_map file(s) present")


def _check_license(workdir: Workdir, expected: str) -> Check:
    card = workdir.source_files / CARD_FILE
    found = read_card_license(card, str(card)) if card.is_file() else None
    if found != expected:
        return Check("license.match", False, f"source card says {found!r}, recipe expects {expected!r}")
    return Check("license.match", True, f"the source card's license is {found}, as the recipe expects")


def _check_license_files(workdir: Workdir) -> Check:
    """The source's LICENSE and NOTICE files travel unchanged, and the draft adds none of its own."""
    carried = []
    for name in LICENSE_FILES:
        source_sha, draft_sha = _sha_or_none(workdir.source_files / name), _sha_or_none(workdir.draft / name)
        if source_sha is None and draft_sha is not None:
            return Check("license.files", False, f"draft {name} does not come from the source")
        if source_sha is not None and draft_sha != source_sha:
            state = "missing from" if draft_sha is None else "changed in"
            return Check("license.files", False, f"source {name} is {state} the draft")
        if source_sha is not None:
            carried.append(name)
    return Check(
        "license.files", True, f"carried byte for byte: {', '.join(carried)}" if carried else "the source ships no licence or notice file"
    )


def _check_license_text(workdir: Workdir, declared: str) -> Check:
    """A declared licence must come with its text: the source's licence file holds the licence's own phrases."""
    try:
        terms = license_terms(declared)
    except InputError as exc:
        return Check("license.text", False, exc.message)
    present = [name for name in LICENSE_TEXT_FILES if (workdir.source_files / name).is_file()]
    if not present:
        return Check("license.text", False, f"source {CARD_FILE} declares license {declared}, but the source ships no LICENSE file")
    name = present[0]
    text = (workdir.source_files / name).read_bytes().decode("utf-8", errors="replace")
    missing = terms.text_lacks(text)
    if missing:
        lacking = " and ".join(repr(marker) for marker in missing)
        return Check("license.text", False, f"source {CARD_FILE} declares license {declared}, but source {name} lacks {lacking}")
    return Check("license.text", True, f"source {name} is a copy of the {terms.name}")


def _sha_or_none(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def _inputs(ctx: Context) -> dict[str, Any]:
    return {
        "fetch": file_digest(ctx.workdir.fetch_manifest),
        "draft": folder_state(ctx.workdir.draft),
        "license": ctx.recipe.license,
        "family": ctx.recipe.family,
    }


def _run(ctx: Context) -> StageOutcome:
    result = run(VerifyInputs(ctx.workdir, ctx.family, ctx.recipe.license))
    ctx.out.info(f"verify: {len(result.checks)} checks passed")
    for advisory in result.advisories:
        if not advisory.passed:
            ctx.out.warn(f"verify: {advisory.id}: {advisory.evidence}")
    return [result.report], {"passed": result.passed, "checks": len(result.checks)}


STAGE = Stage("verify", "check the draft folder byte for byte and write verify.json", _inputs, _run)
