"""An independent reader for tests: parses a safetensors file with nothing but json and struct."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path


def tensor_bytes(path: Path) -> dict[str, bytes]:
    """Every tensor's raw bytes, by name."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    start = 8 + length
    return {name: data[start + e["data_offsets"][0] : start + e["data_offsets"][1]] for name, e in header.items()}


def folder_tensor_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every tensor in every shard of a folder."""
    hashes: dict[str, str] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        for name, raw in tensor_bytes(shard).items():
            hashes[name] = hashlib.sha256(raw).hexdigest()
    return hashes


def header_of(path: Path) -> tuple[dict, int]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), 8 + length


def rewrite_header(path: Path, header: dict) -> None:
    """Replace a shard's header, keeping its data section as it is."""
    _, start = header_of(path)
    data = path.read_bytes()[start:]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def drop_tensor(path: Path, name: str) -> None:
    """Rewrite a shard without one tensor, keeping the rest contiguous."""
    header, start = header_of(path)
    data = path.read_bytes()
    metadata = header.pop("__metadata__", None)
    kept, chunks, offset = {}, [], 0
    for tensor, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        if tensor == name:
            continue
        begin, end = entry["data_offsets"]
        chunks.append(data[start + begin : start + end])
        kept[tensor] = {**entry, "data_offsets": [offset, offset + end - begin]}
        offset += end - begin
    if metadata is not None:
        kept["__metadata__"] = metadata
    raw = json.dumps(kept).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(chunks))


def rename_tensor(folder: Path, old: str, new: str) -> None:
    """Store tensor `old` of a checkpoint folder under `new` (same bytes), in its shard and its index."""
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"][old]
    header, _ = header_of(shard)
    header[new] = header.pop(old)
    rewrite_header(shard, header)
    index["weight_map"][new] = index["weight_map"].pop(old)
    index_path.write_text(json.dumps(index))
