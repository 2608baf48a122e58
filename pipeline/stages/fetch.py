"""fetch: resolve source and target, then land exactly the draft's tensor bytes in the draft's shards.

Reads the recipe's source and target (local folder or Hub). Plans the draft's shard layout from
the source headers (`fetch_plan`), refuses up front when the workdir's filesystem cannot hold the
build, then writes under `<workdir>/fetch/`: the source's config, index, card, licence and
`auto_map` files, the target's config and index, one preallocated file per draft shard with every
selected tensor's bytes at its final offset (`shards/<shard>.unsealed`, its header space left for
extract to seal), and `fetch.json` recording the layout and every tensor's sha256. Refuses when a
selected tensor is missing, the source has MTP tensors the family does not know, a header
disagrees with the config, an index points outside the repo, or the licence differs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.utils import tqdm

from pipeline.checkpoint.disk import DiskCheck, check_room, refuse_unless_room
from pipeline.checkpoint.files import atomic_write_bytes, atomic_write_json, remove_stale_temp_files
from pipeline.checkpoint.readers import CARD_FILE, read_card_license
from pipeline.checkpoint.selection import FetchPlan, Selected, plan_fetch
from pipeline.checkpoint.shard_layout import ShardLayout, hash_shard
from pipeline.checkpoint.shared_copies import omitted_copies
from pipeline.checkpoint.sources import ModelSource, WholeShardSource
from pipeline.errors import CheckFailed
from pipeline.families import Family
from pipeline.recipe.layout import Workdir
from pipeline.recipe.loader import HubRef
from pipeline.remote import ranged
from pipeline.remote.ranged import FileJob, Segment, fetch_files
from pipeline.stages.context import Context, Stage, StageOutcome, folder_state

SCHEMA = "mtp-fetch/v2"


@dataclass(frozen=True)
class FetchInputs:
    source: ModelSource
    target: ModelSource
    family: Family
    expected_license: str
    connections: int
    workdir: Workdir
    max_shard_bytes: int
    mode: str = "ranges"


@dataclass(frozen=True)
class FetchResult:
    manifest: Path
    source_commit: str | None
    target_commit: str | None
    tensors: int
    bytes_needed: int
    bytes_fetched: int


def _tensor_source(inputs: FetchInputs) -> ModelSource:
    return WholeShardSource(inputs.source) if inputs.mode == "shards" else inputs.source


def preflight(inputs: FetchInputs) -> DiskCheck:
    """The bytes a build of these inputs still has to write, beside the free space; writes nothing."""
    plan = plan_fetch(_tensor_source(inputs), inputs.target, inputs.family, inputs.max_shard_bytes)
    return disk_check(plan, inputs.workdir, inputs.mode)


def disk_check(plan: FetchPlan, workdir: Workdir, mode: str) -> DiskCheck:
    """Shard bytes not yet on disk, the small files twice (fetched, then carried into the draft), and
    in whole-shard mode the source shards the download keeps."""
    needed = sum(shard.size for shard in plan.shards if not _allocated(workdir, shard))
    needed += 2 * plan.small_file_bytes
    if mode == "shards":
        needed += sum(size for _, size in plan.source_shards)
    return check_room(workdir.root, needed)


def _allocated(workdir: Workdir, shard: ShardLayout) -> bool:
    """The shard's space is already taken: landed, being landed (preallocated), or sealed."""
    folder = workdir.landed_shard(shard.name).parent
    candidates = [workdir.landed_shard(shard.name), workdir.draft / shard.name, *folder.glob(f"{shard.stem}.*{ranged.PARTIAL_SUFFIX}")]
    return any(path.is_file() and path.stat().st_size == shard.size for path in candidates)


def run(inputs: FetchInputs, show_progress: bool = True) -> FetchResult:
    """Fetch the draft's tensors into its shards, and the small files every later stage reads."""
    workdir = inputs.workdir
    source = _tensor_source(inputs)
    bytes_before = source.bytes_transferred
    plan = plan_fetch(source, inputs.target, inputs.family, inputs.max_shard_bytes)
    refuse_unless_room(disk_check(plan, workdir, inputs.mode))

    source_files = _copy_small_files(source, workdir.source_files, plan.source_files)
    _check_license(source, workdir.source_files, inputs.expected_license)
    target_files = _copy_small_files(inputs.target, workdir.target_files, plan.target_files)

    digests = _land_shards(source, plan, workdir, inputs.connections, show_progress)
    fetched = source.bytes_transferred - bytes_before
    places = plan.shard_of()
    tensors = []
    for item in plan.selected:
        shard, offset = places[item.expected.name]
        tensors.append({**_tensor_record(source, item), "shard": shard.name, "offset": offset, "sha256": digests[item.expected.name]})
    manifest = {
        "schema": SCHEMA,
        "family": inputs.family.name,
        "source": {"label": source.label, "commit": plan.source_commit, "files": source_files},
        "target": {"label": inputs.target.label, "commit": plan.target_commit, "files": target_files},
        "max_shard_bytes": inputs.max_shard_bytes,
        "shards": [_shard_record(shard) for shard in plan.shards],
        "tensors": tensors,
        "bytes_needed": plan.tensor_bytes,
        "bytes_fetched": fetched,
    }
    atomic_write_json(workdir.fetch_manifest, manifest)
    return FetchResult(workdir.fetch_manifest, plan.source_commit, plan.target_commit, len(tensors), plan.tensor_bytes, fetched)


def _shard_record(shard: ShardLayout) -> dict[str, Any]:
    return {
        "name": shard.name,
        "size": shard.size,
        "header_sha256": hashlib.sha256(shard.header).hexdigest(),
        "tensors": [placed.slot.name for placed in shard.tensors],
    }


def _copy_small_files(source: ModelSource, folder: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
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


def _tensor_record(source: ModelSource, item: Selected) -> dict[str, Any]:
    """What fetch.json says about one tensor's origin; a change in any field refetches its shard."""
    return {
        "name": item.expected.name,
        "source_name": item.source_name,
        "source_file": item.shard,
        "source_range": [item.start, item.end],
        "dtype": item.dtype,
        "shape": list(item.expected.shape),
        "nbytes": item.nbytes,
        "source_version": source.fingerprint(item.shard),
    }


def _land_shards(source: ModelSource, plan: FetchPlan, workdir: Workdir, connections: int, show_progress: bool) -> dict[str, str]:
    """Each shard's tensor bytes at their final offsets, large tensors in parallel parts; landed shards are reused."""
    folder = workdir.landed_shards
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)
    shutil.rmtree(workdir.fetch / "tensors", ignore_errors=True)  # one blob per tensor, as older versions fetched
    by_name = {item.expected.name: item for item in plan.selected}
    digests: dict[str, str] = {}
    jobs: list[tuple[FileJob, Any]] = []
    keep: set[Path] = set()
    with tqdm(total=plan.tensor_bytes, unit="B", unit_scale=True, desc="fetch", disable=not show_progress) as bar:
        for shard in plan.shards:
            items = [by_name[placed.slot.name] for placed in shard.tensors]
            record = {**_shard_record(shard), "origins": [_tensor_record(source, item) for item in items]}
            landing, record_path = workdir.landed_shard(shard.name), folder / f"{shard.stem}.json"
            keep |= {landing, record_path}
            previous = _load_record(record_path)
            if previous is not None and {k: previous.get(k) for k in record} == record and _still_landed(workdir, shard, previous):
                digests.update(previous["sha256"])
                bar.update(sum(item.nbytes for item in items))
                continue
            landing.unlink(missing_ok=True)  # another plan's bytes: free their space before preallocating
            key = hashlib.sha256(json.dumps({**record, "part_bytes": ranged.PART_BYTES}, sort_keys=True).encode()).hexdigest()[:16]
            segments = tuple(
                Segment(item.shard, item.start, item.end, placed.offset) for item, placed in zip(items, shard.tensors, strict=True)
            )
            job = FileJob(landing, shard.size, segments, key)
            keep |= {job.partial, job.part_log}
            jobs.append((job, _recorder(record, record_path, [item.expected.name for item in items], digests)))
        for stale in folder.iterdir():
            if stale not in keep:
                stale.unlink()
        fetch_files(source, jobs, connections, bar.update, ranged.PART_BYTES)
    return digests


def _recorder(record: dict[str, Any], path: Path, names: list[str], digests: dict[str, str]) -> Any:
    """Called once a shard's bytes are all landed: its record makes it reusable by a later run."""

    def landed(segment_digests: list[str]) -> None:
        by_name = dict(zip(names, segment_digests, strict=True))
        digests.update(by_name)
        atomic_write_json(path, {**record, "sha256": by_name})

    return landed


def _still_landed(workdir: Workdir, shard: ShardLayout, previous: dict[str, Any]) -> bool:
    """The shard's bytes are here: landed and waiting for extract, or sealed by it with the same tensors."""
    landing = workdir.landed_shard(shard.name)
    if landing.is_file():
        return landing.stat().st_size == shard.size
    sealed = hash_shard(workdir.draft / shard.name, shard)
    return sealed is not None and sealed == previous.get("sha256")


def _load_record(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def landed_state(workdir: Workdir) -> list[str]:
    """The shards whose bytes are on disk (landed or sealed, by size): a lost one makes fetch run again."""
    try:
        manifest = json.loads(workdir.fetch_manifest.read_text())
        shards = [(entry["name"], entry["size"]) for entry in manifest.get("shards", [])]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return []
    present = []
    for name, size in shards:
        if any(path.is_file() and path.stat().st_size == size for path in (workdir.landed_shard(name), workdir.draft / name)):
            present.append(name)
    return present


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
        "max_shard_bytes": ctx.recipe.max_shard_bytes,  # the shard layout the bytes land in
        "landed": landed_state(ctx.workdir),  # a shard whose bytes were lost is fetched again
    }


def fetch_inputs(ctx: Context) -> FetchInputs:
    """The fetch stage's inputs for this run: also what the disk preflight plans from."""
    return FetchInputs(
        source=ctx.source("source"),
        target=ctx.source("target"),
        family=ctx.family,
        expected_license=ctx.recipe.license,
        connections=ctx.recipe.fetch.connections,
        workdir=ctx.workdir,
        max_shard_bytes=ctx.recipe.max_shard_bytes,
        mode=ctx.recipe.fetch.mode,
    )


def _run(ctx: Context) -> StageOutcome:
    result = run(fetch_inputs(ctx), show_progress=ctx.out.show_progress)
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


STAGE = Stage("fetch", "resolve source and target, land only the draft's tensor bytes in its shards", _inputs, _run)
