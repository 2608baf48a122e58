"""fetch: resolve source and target, then copy exactly the draft's tensor bytes.

Reads the recipe's source and target (local folder or Hub). Writes under `<workdir>/fetch/`:
the source's config, index, card, licence and `auto_map` files, the target's config and index,
one blob per selected tensor (only its byte range) and `fetch.json` recording every byte's sha256.
Refuses when a selected tensor is missing, the source has MTP tensors the family does not know,
a header disagrees with the config, an index points outside the repo, or the licence differs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.utils import tqdm

from pipeline.checkpoint.files import atomic_write_bytes, atomic_write_json, remove_stale_temp_files
from pipeline.checkpoint.readers import (
    CARD_FILE,
    CONFIG_FILE,
    INDEX_FILE,
    LICENSE_FILES,
    WeightIndex,
    auto_map_files,
    read_card_license,
    read_config,
    read_shard_header,
    read_weight_index,
)
from pipeline.checkpoint.safetensors_format import Header
from pipeline.checkpoint.shared_copies import omitted_copies
from pipeline.checkpoint.sources import ModelSource, WholeShardSource
from pipeline.errors import CheckFailed, InputError
from pipeline.families import ExpectedTensor, Family
from pipeline.families.arrays import refuse_short_arrays
from pipeline.families.quant_excludes import QUANT_CONFIG_FILE
from pipeline.recipe.layout import Workdir
from pipeline.recipe.loader import HubRef
from pipeline.remote import ranged as blob_fetch
from pipeline.remote.ranged import PART_LOG_SUFFIX, PARTIAL_SUFFIX, BlobJob, fetch_blobs
from pipeline.stages.context import Context, Stage, StageOutcome, folder_state

SCHEMA = "mtp-fetch/v1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


@dataclass(frozen=True)
class FetchInputs:
    source: ModelSource
    target: ModelSource
    family: Family
    expected_license: str
    connections: int
    workdir: Workdir
    mode: str = "ranges"


@dataclass(frozen=True)
class FetchResult:
    manifest: Path
    source_commit: str | None
    target_commit: str | None
    tensors: int
    bytes_needed: int
    bytes_fetched: int


@dataclass(frozen=True)
class Selected:
    """A tensor chosen from the source: where it lives and where its copy goes."""

    index: int
    expected: ExpectedTensor
    source_name: str
    shard: str
    start: int
    end: int
    dtype: str

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def run(inputs: FetchInputs, show_progress: bool = True) -> FetchResult:
    """Fetch the draft's tensors and the small files every later stage reads."""
    workdir = inputs.workdir
    source, target, family = inputs.source, inputs.target, inputs.family
    if inputs.mode == "shards":
        source = WholeShardSource(source)
    source_commit, target_commit = source.resolve(), target.resolve()

    config = read_config(source)
    try:
        geometry = family.read_geometry(config)
    except ValueError as exc:
        raise InputError(f"{source.label}: {CONFIG_FILE}: {exc}") from None
    refuse_short_arrays(f"{source.label}: {CONFIG_FILE}", config, family, geometry)  # before moving gigabytes
    bytes_before = source.bytes_transferred
    index = read_weight_index(source)
    expected = family.expected_tensors(geometry)
    _refuse_unknown_mtp_tensors(source.label, family, geometry.mtp_layers, index, family.known_source_names(geometry))
    selected = _select(source, index, expected)

    source_files = _copy_small_files(source, workdir.source_files, _source_small_files(source, config))
    _check_license(source, workdir.source_files, inputs.expected_license)
    read_config(target)
    target_files = _copy_small_files(target, workdir.target_files, _target_small_files(target, family))

    records = _fetch_tensors(source, selected, workdir.blobs, inputs.connections, show_progress)
    needed = sum(item.nbytes for item in selected)
    fetched = source.bytes_transferred - bytes_before
    manifest = {
        "schema": SCHEMA,
        "family": family.name,
        "source": {"label": source.label, "commit": source_commit, "files": source_files},
        "target": {"label": target.label, "commit": target_commit, "files": target_files},
        "tensors": records,
        "bytes_needed": needed,
        "bytes_fetched": fetched,
    }
    atomic_write_json(workdir.fetch_manifest, manifest)
    return FetchResult(workdir.fetch_manifest, source_commit, target_commit, len(records), needed, fetched)


def _refuse_unknown_mtp_tensors(label: str, family: Family, mtp_layers: range, index: WeightIndex, known: set[str]) -> None:
    prefixes = tuple(prefix for prefix, _ in family.mtp_prefixes(mtp_layers))
    unknown = sorted(name for name in index.weight_map if name.startswith(prefixes) and name not in known)
    if unknown:
        raise CheckFailed(
            f"{label}: {len(unknown)} MTP tensor(s) the {family.name} family does not know, first {unknown[0]}",
            hint="the checkpoint may belong to another family or revision",
        )


def _select(source: ModelSource, index: WeightIndex, expected: list[ExpectedTensor]) -> list[Selected]:
    chosen: list[tuple[ExpectedTensor, str, str]] = []
    for tensor in expected:
        found = next((name for name in tensor.source_names if name in index.weight_map), None)
        if found is None:
            raise CheckFailed(
                f"{source.label}: {INDEX_FILE}: tensor {tensor.name} is missing", hint="is this the BF16 release that keeps the MTP layers?"
            )
        chosen.append((tensor, found, index.weight_map[found]))
    headers: dict[str, Header] = {shard: read_shard_header(source, shard) for shard in sorted({c[2] for c in chosen})}
    selected = []
    for position, (tensor, name, shard) in enumerate(chosen):
        entry = headers[shard].tensors.get(name)
        if entry is None:
            raise InputError(f"{source.label}: {INDEX_FILE}: weight_map.{name} points at {shard}, whose header lacks it")
        if entry.shape != tensor.shape:
            raise CheckFailed(f"{source.label}: {shard}: {name} has shape {list(entry.shape)}, the config implies {list(tensor.shape)}")
        start, end = headers[shard].absolute_range(name)
        selected.append(Selected(position, tensor, name, shard, start, end, entry.dtype))
    return selected


def _source_small_files(source: ModelSource, config: dict[str, Any]) -> list[str]:
    names = [CONFIG_FILE, INDEX_FILE, CARD_FILE, *LICENSE_FILES, *auto_map_files(config)]
    return [name for name in dict.fromkeys(names) if source.exists(name) or name in auto_map_files(config)]


def _target_small_files(target: ModelSource, family: Family) -> list[str]:
    # The legacy ModelOpt quantization file matters only where vLLM builds the MTP with the target's config.
    quant = [QUANT_CONFIG_FILE] if family.quantization_from == "target" else []
    names = [CONFIG_FILE, *quant, INDEX_FILE, CARD_FILE, *TOKENIZER_FILES]
    return [name for name in names if target.exists(name)]


def _copy_small_files(source: ModelSource, folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    record = {}
    for name in names:
        if not source.exists(name):
            raise CheckFailed(
                f"{source.label}: {name} is named by config.json auto_map but missing", hint="the draft must ship every auto_map file"
            )
        data = source.read(name)
        sha = atomic_write_bytes(folder / name, data)
        record[name] = {"size": len(data), "sha256": sha, "lfs_sha256": source.lfs_sha256(name)}
    return record


def _check_license(source: ModelSource, folder: Path, expected: str) -> None:
    card = folder / CARD_FILE
    found = read_card_license(card, f"{source.label}: {CARD_FILE}") if card.exists() else None
    if found != expected:
        raise CheckFailed(
            f"{source.label}: {CARD_FILE}: license is {found!r}, the recipe expects {expected!r}",
            hint="check the source's terms, then change the recipe's license field",
        )


def _fetch_tensors(
    source: ModelSource, selected: list[Selected], folder: Path, connections: int, show_progress: bool
) -> list[dict[str, Any]]:
    """Each tensor's bytes in its own blob, large tensors in parallel parts; finished blobs are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)
    part_bytes = blob_fetch.PART_BYTES
    records: dict[int, dict[str, Any]] = {}
    jobs: list[tuple[BlobJob, Callable[[str], None]]] = []
    with tqdm(total=sum(item.nbytes for item in selected), unit="B", unit_scale=True, desc="fetch", disable=not show_progress) as bar:
        for item in selected:
            record = _tensor_record(source, item)
            blob = folder / f"{item.index:04d}.bin"
            record_path = folder / f"{item.index:04d}.json"
            previous = _load_record(record_path)
            if previous and blob.is_file() and blob.stat().st_size == item.nbytes and {k: previous.get(k) for k in record} == record:
                bar.update(item.nbytes)
                records[item.index] = previous
                continue
            plan_key = hashlib.sha256(json.dumps({**record, "part_bytes": part_bytes}, sort_keys=True).encode()).hexdigest()[:16]
            job = BlobJob(item.shard, item.start, item.end, blob, plan_key)
            for stale in [*folder.glob(f"{blob.stem}.*{PARTIAL_SUFFIX}"), *folder.glob(f"{blob.stem}.*{PART_LOG_SUFFIX}")]:
                if stale not in (job.partial, job.part_log):
                    stale.unlink()
            jobs.append((job, functools.partial(_record_blob, records, item.index, record, record_path)))
        fetch_blobs(source, jobs, connections, bar.update, part_bytes)
    return [records[item.index] for item in selected]


def _tensor_record(source: ModelSource, item: Selected) -> dict[str, Any]:
    """What fetch.json says about one tensor, less its sha256; a change in any field refetches it."""
    return {
        "name": item.expected.name,
        "source_name": item.source_name,
        "source_file": item.shard,
        "source_range": [item.start, item.end],
        "dtype": item.dtype,
        "shape": list(item.expected.shape),
        "nbytes": item.nbytes,
        "blob": f"tensors/{item.index:04d}.bin",
        "source_version": source.fingerprint(item.shard),
    }


def _record_blob(records: dict[int, dict[str, Any]], index: int, record: dict[str, Any], path: Path, sha256: str) -> None:
    """Called once a blob is complete: its record makes it reusable by a later run."""
    records[index] = {**record, "sha256": sha256}
    atomic_write_json(path, records[index])


def _load_record(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _source_identity(ctx: Context, role: str) -> dict[str, Any]:
    ref = ctx.ref(role)
    if isinstance(ref, HubRef):
        return {"repo": ref.repo_id, "commit": ctx.source(role).resolve()}
    return {"folder_files": folder_state(ref.path)}


def _inputs(ctx: Context) -> dict[str, Any]:
    return {
        "source": _source_identity(ctx, "source"),
        "target": _source_identity(ctx, "target"),
        "family": ctx.recipe.family,
        "shared_weights": ctx.recipe.shared_weights,
        "license": ctx.recipe.license,
        "mode": ctx.recipe.fetch.mode,
    }


def _run(ctx: Context) -> StageOutcome:
    result = run(
        FetchInputs(
            source=ctx.source("source"),
            target=ctx.source("target"),
            family=ctx.family,
            expected_license=ctx.recipe.license,
            connections=ctx.recipe.fetch.connections,
            workdir=ctx.workdir,
            mode=ctx.recipe.fetch.mode,
        ),
        show_progress=ctx.out.show_progress,
    )
    ratio = result.bytes_fetched / max(result.bytes_needed, 1)
    ctx.out.info(f"fetch: {result.tensors} tensors, {result.bytes_fetched} bytes fetched for {result.bytes_needed} needed ({ratio:.4f}x)")
    omitted = omitted_copies(ctx.source("source"), ctx.family)
    if omitted.names:
        ctx.out.info(f"fetch: {omitted.line()}")
    summary = {
        "source_commit": result.source_commit,
        "target_commit": result.target_commit,
        "tensors": result.tensors,
        "bytes_needed": result.bytes_needed,
        "bytes_fetched": result.bytes_fetched,
        "shared_weights": {"choice": ctx.family.shared_weights, "omitted": list(omitted.names), "bytes_saved": omitted.source_bytes},
    }
    return [result.manifest], summary


STAGE = Stage("fetch", "resolve source and target, copy only the draft's tensor bytes", _inputs, _run)
