"""extract: lay the fetched tensor bytes out as the draft's safetensors shards and index.

Reads `<workdir>/fetch/fetch.json` and its blobs. Writes `<workdir>/draft/model-0000i-of-0000n.safetensors`,
`model.safetensors.index.json` and `<workdir>/extract.json` (per-tensor and per-file sha256).
Output is deterministic: fixed tensor order (the family's), fixed header and metadata, so two
builds of the same fetch are byte-identical. Each shard is streamed, hashed while written, and
renamed into place only when complete. Refuses when a blob's bytes no longer match fetch.json.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.utils import tqdm

from pipeline.checkpoint.files import HASH_CHUNK_BYTES, atomic_output, atomic_write_json, read_json, remove_stale_temp_files
from pipeline.checkpoint.readers import INDEX_FILE
from pipeline.checkpoint.safetensors_format import PlannedTensor, encode_header, write_shard
from pipeline.errors import CheckFailed, InputError
from pipeline.recipe.layout import Workdir
from pipeline.stages.context import Context, Stage, StageOutcome, file_digest

SCHEMA = "mtp-extract/v1"
SHARD_NAME = "model-{index:05d}-of-{count:05d}.safetensors"
# Fits a core's L2 cache, so the second digest of each chunk reads it from cache, not from memory.
COPY_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ExtractInputs:
    manifest: dict[str, Any]
    workdir: Workdir
    max_shard_bytes: int


@dataclass(frozen=True)
class ExtractResult:
    report: Path
    shards: tuple[str, ...]
    total_bytes: int


def plan_shards(tensors: list[dict[str, Any]], max_shard_bytes: int) -> list[list[dict[str, Any]]]:
    """Greedy split in the fixed tensor order; a tensor larger than the limit gets a shard alone."""
    shards: list[list[dict[str, Any]]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor["nbytes"] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor["nbytes"]
    return shards


def run(inputs: ExtractInputs, show_progress: bool = True) -> ExtractResult:
    """Write the draft shards and index from the fetched blobs."""
    workdir, manifest = inputs.workdir, inputs.manifest
    tensors = manifest["tensors"]
    groups = plan_shards(tensors, inputs.max_shard_bytes)
    names = [SHARD_NAME.format(index=i + 1, count=len(groups)) for i in range(len(groups))]
    draft = workdir.draft
    draft.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(draft)

    shards: dict[str, Any] = {}
    written: dict[str, dict[str, Any]] = {}
    total = sum(t["nbytes"] for t in tensors)
    with tqdm(total=total, unit="B", unit_scale=True, desc="extract", disable=not show_progress) as bar:
        for name, group in zip(names, groups, strict=False):
            planned = [_planned(workdir.fetch, tensor, bar) for tensor in group]
            path = draft / name
            reused = _reuse_existing(path, planned, group)
            if reused is not None:
                digests, file_sha, size = reused
                bar.update(sum(t["nbytes"] for t in group))
            else:
                with atomic_output(path) as handle:
                    digests, file_sha, size = write_shard(handle, planned)
                    _refuse_changed_blobs(group, digests)  # raising here keeps the shard from its final name
            for tensor in group:
                written[tensor["name"]] = {
                    "shard": name,
                    "dtype": tensor["dtype"],
                    "shape": tensor["shape"],
                    "sha256": digests[tensor["name"]],
                    "source_file": tensor["source_file"],
                }
            shards[name] = {"size": size, "sha256": file_sha, "tensors": [t["name"] for t in group]}

    for stale in draft.glob("model-*-of-*.safetensors"):
        if stale.name not in shards:
            stale.unlink()
    index = {
        "metadata": {"total_size": total},
        "weight_map": {t["name"]: written[t["name"]]["shard"] for t in sorted(tensors, key=lambda t: t["name"])},
    }
    index_sha = atomic_write_json(draft / INDEX_FILE, index)
    report = {"schema": SCHEMA, "shards": shards, "index_sha256": index_sha, "tensors": written, "total_size": total}
    atomic_write_json(workdir.extract_report, report)
    return ExtractResult(workdir.extract_report, tuple(names), total)


def _refuse_changed_blobs(group: list[dict[str, Any]], digests: dict[str, str]) -> None:
    for tensor in group:
        if digests[tensor["name"]] != tensor["sha256"]:
            raise CheckFailed(f"{tensor['blob']}: bytes of {tensor['name']} changed since fetch", hint="run fetch again")


def _planned(fetch_dir: Path, tensor: dict[str, Any], bar: Any) -> PlannedTensor:
    blob = fetch_dir / tensor["blob"]

    def chunks() -> Iterator[bytes | memoryview]:
        try:
            handle = open(blob, "rb", buffering=0)
        except FileNotFoundError:
            raise InputError(f"{blob}: missing", hint="run the fetch stage again") from None
        size = os.fstat(handle.fileno()).st_size
        if size != tensor["nbytes"]:
            handle.close()
            raise InputError(f"{blob}: {size} bytes, fetch.json records {tensor['nbytes']}", hint="run the fetch stage again")
        buffer = memoryview(bytearray(COPY_CHUNK_BYTES))  # reused: a fresh multi-MB bytes per read costs page faults
        with handle:
            while count := handle.readinto(buffer):
                bar.update(count)
                yield buffer[:count]

    return PlannedTensor(tensor["name"], tensor["dtype"], tuple(tensor["shape"]), tensor["nbytes"], chunks)


def _reuse_existing(path: Path, planned: list[PlannedTensor], group: list[dict[str, Any]]) -> tuple[dict[str, str], str, int] | None:
    """A complete shard from an earlier run is kept when its header and every tensor hash match."""
    header = encode_header(planned)
    expected_size = len(header) + sum(t.nbytes for t in planned)
    if not path.is_file() or path.stat().st_size != expected_size:
        return None
    file_digest = hashlib.sha256()
    digests: dict[str, str] = {}
    with open(path, "rb") as handle:
        if handle.read(len(header)) != header:
            return None
        file_digest.update(header)
        for tensor in planned:
            digest = hashlib.sha256()
            remaining = tensor.nbytes
            while remaining:
                chunk = handle.read(min(HASH_CHUNK_BYTES, remaining))
                digest.update(chunk)
                file_digest.update(chunk)
                remaining -= len(chunk)
            digests[tensor.name] = digest.hexdigest()
    if any(digests[t["name"]] != t["sha256"] for t in group):
        return None
    return digests, file_digest.hexdigest(), expected_size


__all__ = ["STAGE", "ExtractInputs", "ExtractResult", "plan_shards", "run"]


def _inputs(ctx: Context) -> dict[str, Any]:
    return {"fetch": file_digest(ctx.workdir.fetch_manifest), "max_shard_bytes": ctx.recipe.max_shard_bytes}


def _run(ctx: Context) -> StageOutcome:
    manifest = read_json(ctx.workdir.fetch_manifest, hint="run the fetch stage first")
    result = run(ExtractInputs(manifest, ctx.workdir, ctx.recipe.max_shard_bytes), show_progress=ctx.out.show_progress)
    ctx.out.info(f"extract: {len(result.shards)} shard(s), {result.total_bytes} tensor bytes")
    outputs = [ctx.workdir.draft / name for name in result.shards] + [ctx.workdir.draft / INDEX_FILE, result.report]
    return outputs, {"shards": list(result.shards), "total_bytes": result.total_bytes}


STAGE = Stage("extract", "write the draft's safetensors shards and index", _inputs, _run)
