"""The draft's shard layout: a pure function of the selected tensors and the shard size limit.

Names, dtypes, shapes, the family's order and `max_shard_size` decide every shard's name, header
and tensor offsets, so they are known as soon as the source headers are read: fetch lands each
tensor's bytes at its final offset, and extract only writes the header into the space reserved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline.checkpoint.safetensors_format import encode_header

SHARD_NAME = "model-{index:05d}-of-{count:05d}.safetensors"
# Fits a core's L2 cache, so the second digest of each chunk reads it from cache, not from memory.
HASH_CHUNK_BYTES = 1024 * 1024


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


@dataclass(frozen=True)
class ShardDigests:
    """What one read of a shard found: each tensor's sha256 and the whole file's."""

    tensors: Mapping[str, str]
    file: str


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


def hash_shard(path: Path, layout: ShardLayout, progress: Callable[[int], None] = lambda count: None) -> ShardDigests | None:
    """Each tensor's sha256 and the file's, in one read of a file laid out as `layout`.

    None when the file's size or header differ from the layout. Every byte feeds two digests, its
    tensor's and the file's; the file's runs on a helper thread (hashlib releases the GIL on large
    updates), so on two cores the pair costs about one hash.
    """
    if not path.is_file() or path.stat().st_size != layout.size:
        return None
    buffer = memoryview(bytearray(HASH_CHUNK_BYTES))  # reused: a fresh buffer per read costs page faults
    tensors: dict[str, str] = {}
    with open(path, "rb", buffering=0) as handle, ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-digest") as side:
        if handle.read(len(layout.header)) != layout.header:
            return None
        file_digest = hashlib.sha256(layout.header)
        for placed in layout.tensors:
            digest = hashlib.sha256()
            remaining = placed.slot.nbytes
            while remaining:
                count = handle.readinto(buffer[: min(len(buffer), remaining)])
                if not count:
                    return None  # shrunk while being read
                chunk = buffer[:count]
                file_update = side.submit(file_digest.update, chunk)
                digest.update(chunk)
                file_update.result()  # both digests are done with the buffer before the next read
                remaining -= count
                progress(count)
            tensors[placed.slot.name] = digest.hexdigest()
    return ShardDigests(tensors, file_digest.hexdigest())
