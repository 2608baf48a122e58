"""extract: seal the shards fetch landed, so they become the draft's safetensors shards and index.

Reads `<workdir>/fetch/fetch.json` and the landed shards under `fetch/shards/`. Each shard already
holds its tensors' bytes at their final offsets; extract writes the deterministic header into the
space fetch reserved, reads the shard once to hash every tensor, checks each tensor's sha256
against fetch.json, and only then renames it to `<workdir>/draft/model-0000i-of-0000n.safetensors`.
Then it writes `model.safetensors.index.json` and `<workdir>/extract.json` (per-tensor sha256;
verify hashes the whole files). Output is deterministic: fixed tensor
order (the family's), fixed header and metadata, so two builds of the same fetch are byte-identical.
No byte of tensor data is written again. Refuses when a shard's bytes no longer match fetch.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.utils import tqdm

from pipeline.checkpoint.files import atomic_write_json, read_json, remove_stale_temp_files
from pipeline.checkpoint.readers import INDEX_FILE
from pipeline.checkpoint.shard_layout import ShardLayout, TensorSlot, hash_shard, lay_out
from pipeline.errors import CheckFailed, InputError
from pipeline.recipe.layout import Workdir
from pipeline.stages.context import Context, Stage, StageOutcome, file_digest

SCHEMA = "mtp-extract/v2"  # v2: no per-shard file sha256 (verify records it)


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


def _slot(tensor: dict[str, Any]) -> TensorSlot:
    return TensorSlot(tensor["name"], tensor["dtype"], tuple(tensor["shape"]), tensor["nbytes"])


def run(inputs: ExtractInputs, show_progress: bool = True) -> ExtractResult:
    """Seal each landed shard (or keep an identical sealed one), then write the index."""
    workdir, manifest = inputs.workdir, inputs.manifest
    tensors = manifest["tensors"]
    layouts = _layouts(manifest, inputs.max_shard_bytes, workdir)
    draft = workdir.draft
    draft.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(draft)

    expected = {tensor["name"]: tensor["sha256"] for tensor in tensors}
    shards: dict[str, Any] = {}
    written: dict[str, dict[str, Any]] = {}
    source_file = {tensor["name"]: tensor["source_file"] for tensor in tensors}
    total = sum(t["nbytes"] for t in tensors)
    with tqdm(total=total, unit="B", unit_scale=True, desc="extract", disable=not show_progress) as bar:
        for layout in layouts:
            found = _seal_or_reuse(workdir, layout, expected, bar)
            for placed in layout.tensors:
                slot = placed.slot
                written[slot.name] = {
                    "shard": layout.name,
                    "dtype": slot.dtype,
                    "shape": list(slot.shape),
                    "sha256": found[slot.name],
                    "source_file": source_file[slot.name],
                }
            shards[layout.name] = {"size": layout.size, "tensors": [p.slot.name for p in layout.tensors]}

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
    return ExtractResult(workdir.extract_report, tuple(shards), total)


def _layouts(manifest: dict[str, Any], max_shard_bytes: int, workdir: Workdir) -> list[ShardLayout]:
    """The layout fetch landed the bytes in, recomputed from the tensors and checked against fetch.json."""
    if manifest.get("max_shard_bytes") != max_shard_bytes or "shards" not in manifest:
        raise InputError(
            f"{workdir.fetch_manifest}: shards were laid out for max_shard_bytes {manifest.get('max_shard_bytes')}, the recipe says {max_shard_bytes}",
            hint="run the fetch stage again",
        )
    layouts = lay_out([_slot(t) for t in manifest["tensors"]], max_shard_bytes)
    recorded = [(entry["name"], entry["size"]) for entry in manifest["shards"]]
    if recorded != [(layout.name, layout.size) for layout in layouts]:
        raise InputError(f"{workdir.fetch_manifest}: shards disagree with the layout of its tensors", hint="run the fetch stage again")
    return layouts


def _seal_or_reuse(workdir: Workdir, layout: ShardLayout, expected: dict[str, str], bar: Any) -> dict[str, str]:
    """The tensor digests of the shard now under its final name: the landed one sealed, or a sealed one kept."""
    final = workdir.draft / layout.name
    landing = workdir.landed_shard(layout.name)
    if landing.is_file():
        size = landing.stat().st_size
        if size != layout.size:
            raise InputError(f"{landing}: {size} bytes, the layout needs {layout.size}", hint="run the fetch stage again")
        _write_header(landing, layout)
        found = hash_shard(landing, layout, bar.update)
        if found is None:
            raise InputError(f"{landing}: changed while it was being sealed", hint="run the fetch stage again")
        changed = [name for name, sha in found.items() if sha != expected[name]]
        if changed:
            landing.unlink()  # never sealed: the next fetch lands this shard again
            raise CheckFailed(f"{landing}: bytes of {changed[0]} changed since fetch", hint="run the fetch stage again")
        os.replace(landing, final)
        return found
    kept = hash_shard(final, layout, bar.update)
    if kept is None or any(sha != expected[name] for name, sha in kept.items()):
        raise InputError(f"{landing}: missing, and {final} does not hold this shard", hint="run the fetch stage again")
    return kept


def _write_header(path: Path, layout: ShardLayout) -> None:
    """The header goes into the space fetch reserved; durable before the shard can take its final name."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, layout.header, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["STAGE", "ExtractInputs", "ExtractResult", "run"]


def _inputs(ctx: Context) -> dict[str, Any]:
    return {"fetch": file_digest(ctx.workdir.fetch_manifest), "max_shard_bytes": ctx.recipe.max_shard_bytes}


def _run(ctx: Context) -> StageOutcome:
    manifest = read_json(ctx.workdir.fetch_manifest, hint="run the fetch stage first")
    result = run(ExtractInputs(manifest, ctx.workdir, ctx.recipe.max_shard_bytes), show_progress=ctx.out.show_progress)
    ctx.out.info(f"extract: {len(result.shards)} shard(s), {result.total_bytes} tensor bytes")
    outputs = [ctx.workdir.draft / name for name in result.shards] + [ctx.workdir.draft / INDEX_FILE, result.report]
    return outputs, {"shards": list(result.shards), "total_bytes": result.total_bytes}


STAGE = Stage("extract", "seal the landed shards into the draft's safetensors shards and index", _inputs, _run)
