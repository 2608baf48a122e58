"""Compare a draft's source at a new commit with the locked one, reading no tensor data.

Reads, at both commits: the repo's file listing (the Hub's LFS sha256 of every shard comes with
it), the small files the draft build reads (config, index, card, licence and `auto_map` files)
and, for a shard whose sha256 changed, its header (two small range reads). Equal shard sha256
proves equal tensor bytes; a changed shard only says "rebuild needed", with the tensors whose
header entry (dtype, shape, offsets) changed: equal metadata cannot prove equal values.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checkpoint.files import sha256_bytes
from pipeline.checkpoint.readers import (
    CARD_FILE,
    CONFIG_FILE,
    INDEX_FILE,
    LICENSE_FILES,
    auto_map_files,
    read_card_license,
    read_config,
    read_shard_header,
    read_weight_index,
)
from pipeline.checkpoint.safetensors_format import Header, TensorEntry
from pipeline.checkpoint.sources import ModelSource
from pipeline.errors import InputError
from pipeline.families import Family
from pipeline.families.base import config_value
from pipeline.flows.watch_report import FieldChange, HeaderChange, ShardChange, SourceState, SourceWatch

GEOMETRY_FIELDS = ("hidden_size", "vocab_size", "num_hidden_layers", "intermediate_size", "head_dim")
QUANTIZATION_FIELD = "quantization_config"


@dataclass(frozen=True)
class SourceComparison:
    """The watch finding and the source facts a re-pinned lock needs."""

    watch: SourceWatch
    files: dict[str, dict[str, Any]]  # the small files at the new commit: {name: {size, sha256}}
    tensor_shards: dict[str, str | None]  # draft tensor -> shard holding it at the new commit
    shard_sha256: dict[str, str | None]  # LFS sha256 of every new shard holding a draft tensor
    changed_tensors: tuple[str, ...]  # tensors whose bytes are not proven equal


def carried_file_names(source: ModelSource, config: Mapping[str, Any]) -> list[str]:
    """The small source files a build reads and the lock records (the fetch stage's rule)."""
    names = [CONFIG_FILE, INDEX_FILE, CARD_FILE, *LICENSE_FILES, *auto_map_files(dict(config))]
    return [name for name in dict.fromkeys(names) if source.exists(name)]


def compare_source(old: ModelSource, new: ModelSource, family: Family, lock: Mapping[str, Any]) -> SourceComparison:
    """The source at `new` against `old`, the locked commit described by `lock`."""
    locked = lock["source"]
    old_commit, new_commit = str(locked["commit"]), str(new.resolve())
    config = read_config(new)
    files = {name: _digest(new.read(name)) for name in carried_file_names(new, config)}
    changed_files = sorted(name for name in set(files) | set(locked["files"]) if files.get(name) != locked["files"].get(name))
    names = _source_names(new, family, config, lock["tensors"])
    tensor_shards = _tensor_shards(new, names)
    new_digests = {shard: new.lfs_sha256(shard) for shard in sorted({s for s in tensor_shards.values() if s})}
    recorded = locked.get("shard_sha256") or {}
    old_digests = {shard: recorded.get(shard) or old.lfs_sha256(shard) for shard in locked["shards_read"]}

    by_shard: dict[str, list[Mapping[str, Any]]] = {}
    for tensor in lock["tensors"]:
        now = tensor_shards[tensor["name"]]
        before = old_digests.get(tensor["source_file"])
        if now is None or before is None or new_digests.get(now) != before:
            by_shard.setdefault(tensor["source_file"], []).append(tensor)
    shards = tuple(
        _shard_change(old, new, shard, tensors, names, tensor_shards, (old_digests, new_digests))
        for shard, tensors in sorted(by_shard.items())
    )
    fields = _config_fields(old, config, family, changed_files) + _licence_fields(old, new, changed_files)
    reasons = _reasons(shards, changed_files, fields)
    state: SourceState = "rebuild-needed" if reasons else "bytes-unchanged"
    watch = SourceWatch(state, old_commit, new_commit, shards, tuple(changed_files), tuple(fields), tuple(reasons))
    changed = tuple(name for change in shards for name in change.tensors)
    return SourceComparison(watch, files, tensor_shards, new_digests, changed)


def _digest(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": sha256_bytes(data)}


def _source_names(
    new: ModelSource, family: Family, config: Mapping[str, Any], tensors: list[Mapping[str, Any]]
) -> dict[str, tuple[str, ...]]:
    """The names each locked draft tensor may have in the source, as the family reads them."""
    try:
        expected = {t.name: t.source_names for t in family.expected_tensors(family.read_geometry(config))}
    except ValueError as exc:
        raise InputError(f"{new.label}: {CONFIG_FILE}: {exc}") from None
    return {t["name"]: expected.get(t["name"], (t["name"],)) for t in tensors}


def _tensor_shards(new: ModelSource, names: Mapping[str, tuple[str, ...]]) -> dict[str, str | None]:
    """Which shard holds each draft tensor at the new commit (None: the index lacks it)."""
    index = read_weight_index(new)
    shards: dict[str, str | None] = {}
    for tensor, candidates in names.items():
        found = next((name for name in candidates if name in index.weight_map), None)
        shards[tensor] = index.weight_map[found] if found else None
    return shards


def _shard_change(
    old: ModelSource,
    new: ModelSource,
    shard: str,
    tensors: list[Mapping[str, Any]],
    names: Mapping[str, tuple[str, ...]],
    tensor_shards: Mapping[str, str | None],
    digests: tuple[Mapping[str, str | None], Mapping[str, str | None]],
) -> ShardChange:
    """One changed shard: its two sha256 and the draft tensors whose header entry changed."""
    new_shard = tensor_shards[tensors[0]["name"]]
    try:
        before = _header(old, shard)
    except InputError:  # the locked commit is gone (history squashed): the lock's dtype and shape stand in
        before = None
    after = {name: _header(new, name) for name in {tensor_shards[t["name"]] for t in tensors} if name}
    changes = []
    for tensor in tensors:
        now = tensor_shards[tensor["name"]]
        changes += _header_changes(tensor, names[tensor["name"]], before, after[now] if now else None)
    old_digest, new_digest = digests[0].get(shard), digests[1].get(new_shard) if new_shard else None
    return ShardChange(shard, new_shard, old_digest, new_digest, tuple(t["name"] for t in tensors), tuple(changes))


def _header(source: ModelSource, shard: str) -> Header | None:
    return read_shard_header(source, shard) if source.exists(shard) else None


def _entry(header: Header | None, names: tuple[str, ...]) -> TensorEntry | None:
    if header is None:
        return None
    return next((header.tensors[name] for name in names if name in header.tensors), None)


def _header_changes(tensor: Mapping[str, Any], names: tuple[str, ...], before: Header | None, after: Header | None) -> list[HeaderChange]:
    old, new = _entry(before, names), _entry(after, names)
    name = tensor["name"]
    if new is None:
        return [HeaderChange(name, "missing", list(tensor["shape"]), None)]
    if old is None:  # the locked commit no longer has the shard: compare with what the lock recorded
        pairs = [("dtype", tensor["dtype"], new.dtype), ("shape", list(tensor["shape"]), list(new.shape))]
    else:
        pairs = [
            ("dtype", old.dtype, new.dtype),
            ("shape", list(old.shape), list(new.shape)),
            ("offsets", [old.begin, old.end], [new.begin, new.end]),
        ]
    return [HeaderChange(name, field, a, b) for field, a, b in pairs if a != b]


def _config_fields(old: ModelSource, config: Mapping[str, Any], family: Family, changed: list[str]) -> list[FieldChange]:
    """The fields of a changed config.json that decide the draft: geometry, per-layer arrays, quantization.

    Each is read as vLLM reads it (`text_config` first) and named by its dotted path.
    """
    if CONFIG_FILE not in changed or not old.exists(CONFIG_FILE):
        return []
    before = read_config(old)
    keys = (*GEOMETRY_FIELDS, family.count_key, *family.per_layer_arrays, QUANTIZATION_FIELD)
    fields = []
    for key in dict.fromkeys(keys):
        (old_path, a), (new_path, b) = _field(before, key), _field(config, key)
        if a != b:
            fields.append(FieldChange(CONFIG_FILE, new_path or old_path or key, a, b))
    return fields


def _field(config: Mapping[str, Any], key: str) -> tuple[str | None, Any]:
    try:
        return config_value(config, key)
    except KeyError:
        return None, None


def _licence_fields(old: ModelSource, new: ModelSource, changed: list[str]) -> list[FieldChange]:
    if CARD_FILE not in changed:
        return []
    before, after = _card_licence(old), _card_licence(new)
    return [] if before == after else [FieldChange(CARD_FILE, "license", before, after)]


def _card_licence(source: ModelSource) -> str | None:
    if not source.exists(CARD_FILE):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CARD_FILE
        path.write_bytes(source.read(CARD_FILE))
        return read_card_license(path, f"{source.label}: {CARD_FILE}")


def _reasons(shards: tuple[ShardChange, ...], changed: list[str], fields: list[FieldChange]) -> list[str]:
    """Why the draft cannot simply be re-pinned; empty when its bytes are proven unchanged."""
    reasons = []
    for change in shards:
        named = sorted({h.tensor for h in change.header_changes})
        headers = (
            f"; header changed for {', '.join(named)}" if named else "; headers unchanged, but equal metadata cannot prove equal values"
        )
        reasons.append(f"{change.shard} changed and holds {len(change.tensors)} draft tensor(s){headers}")
    carried = [name for name in changed if name not in (CARD_FILE, INDEX_FILE)]
    if carried:
        reasons.append(f"the draft carries {', '.join(carried)}, which changed")
    reasons += [f"the source card's license changed: {f.old} -> {f.new}" for f in fields if f.field == "license"]
    return reasons
