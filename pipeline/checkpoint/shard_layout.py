"""The draft's shard layout: a pure function of the selected tensors and the shard size limit.

Names, dtypes, shapes, the family's order and `max_shard_size` decide every shard's name, header
and tensor offsets, so they are known as soon as the source headers are read: fetch lands each
tensor's bytes at its final offset, and extract only writes the header into the space reserved.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline.checkpoint.safetensors_format import encode_header

SHARD_NAME = "model-{index:05d}-of-{count:05d}.safetensors"
HASH_CHUNK_BYTES = 1024 * 1024
HASH_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class TensorSlot:
    """A tensor as the draft stores it: name, dtype, shape and size in bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class PlacedTensor:
    """A tensor and the absolute offset of its first byte in its shard file."""

    slot: TensorSlot
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.slot.nbytes


@dataclass(frozen=True)
class ShardLayout:
    """One shard file: its name, its deterministic header, and where each tensor's bytes go."""

    name: str
    header: bytes
    tensors: tuple[PlacedTensor, ...]

    @property
    def size(self) -> int:
        return len(self.header) + sum(placed.slot.nbytes for placed in self.tensors)

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".safetensors")


def group_tensors(slots: Sequence[TensorSlot], max_shard_bytes: int) -> list[list[TensorSlot]]:
    """Greedy split in the fixed tensor order; a tensor larger than the limit gets a shard alone."""
    groups: list[list[TensorSlot]] = [[]]
    size = 0
    for slot in slots:
        if groups[-1] and size + slot.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(slot)
        size += slot.nbytes
    return groups


def lay_out(slots: Sequence[TensorSlot], max_shard_bytes: int) -> list[ShardLayout]:
    """Every shard of the draft, in order, with its header and tensor offsets."""
    groups = group_tensors(slots, max_shard_bytes)
    shards = []
    for number, group in enumerate(groups, start=1):
        header = encode_header(group)
        offset = len(header)
        placed = []
        for slot in group:
            placed.append(PlacedTensor(slot, offset))
            offset += slot.nbytes
        shards.append(ShardLayout(SHARD_NAME.format(index=number, count=len(groups)), header, tuple(placed)))
    return shards


def hash_shard(path: Path, layout: ShardLayout, progress: Callable[[int], None] = lambda count: None) -> dict[str, str] | None:
    """Each tensor's sha256 in a file laid out as `layout`; None when its size or header differ, or
    it shrank while being read.

    Tensors are hashed on up to `HASH_THREADS` threads, largest first (hashlib releases the GIL on
    large updates): one read of the shard, spread over the cores.
    """
    if not path.is_file() or path.stat().st_size != layout.size:
        return None
    with open(path, "rb", buffering=0) as handle:
        if handle.read(len(layout.header)) != layout.header:
            return None
    largest_first = sorted(layout.tensors, key=lambda placed: placed.slot.nbytes, reverse=True)
    with ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="tensor-digest") as pool:
        found = pool.map(lambda placed: _tensor_digest(path, placed, progress), largest_first)
        digests = dict(zip((placed.slot.name for placed in largest_first), found, strict=True))
    if any(digest is None for digest in digests.values()):
        return None
    return {placed.slot.name: str(digests[placed.slot.name]) for placed in layout.tensors}


def _tensor_digest(path: Path, placed: PlacedTensor, progress: Callable[[int], None]) -> str | None:
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(HASH_CHUNK_BYTES, placed.slot.nbytes)))  # reused for the tensor's chunks
    remaining = placed.slot.nbytes
    with open(path, "rb", buffering=0) as handle:
        handle.seek(placed.offset)
        while remaining:
            count = handle.readinto(buffer[: min(len(buffer), remaining)])
            if not count:
                return None
            digest.update(buffer[:count])
            remaining -= count
            progress(count)
    return digest.hexdigest()
