"""The one-pass shard writer and scanner: digests split across threads equal plain sha256, and
NaN/Inf counts are exact for every float dtype, across chunk boundaries."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.checkpoint.safetensors_format import PlannedTensor, write_shard
from pipeline.checkpoint.scan import SCAN_CHUNK_BYTES, scan_shard


def _reused_buffer_chunks(data: bytes, size: int) -> Iterator[memoryview]:
    """Chunks that all share one buffer, as extract hands them out."""
    buffer = memoryview(bytearray(size))
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        buffer[: len(piece)] = piece
        yield buffer[: len(piece)]


def test_write_shard_digests_equal_sha256_of_what_it_wrote(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    payloads = {"a": rng.bytes(3 * 4096 + 10), "b": rng.bytes(5000), "c": b""}
    planned = [
        PlannedTensor(name, "U8", (len(data),), len(data), lambda data=data: _reused_buffer_chunks(data, 4096))
        for name, data in payloads.items()
    ]
    path = tmp_path / "shard.safetensors"

    with open(path, "wb") as handle:
        digests, file_sha, size = write_shard(handle, planned)

    written = path.read_bytes()
    assert size == len(written) and file_sha == hashlib.sha256(written).hexdigest()
    assert digests == {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    assert written.endswith(payloads["a"] + payloads["b"])


def test_scan_counts_every_nan_and_inf_and_hashes_in_one_pass(tmp_path: Path) -> None:
    boundary = SCAN_CHUNK_BYTES // 2  # the first BF16/F16 element of the second chunk
    bf16 = np.zeros(SCAN_CHUNK_BYTES, dtype="<u2")  # two chunks' worth
    bf16[[0, boundary - 1, boundary, -1]] = [0x7FC0, 0x7F80, 0xFF80, 0x7F81]  # NaN, +Inf, -Inf, NaN
    f16 = np.ones(boundary + 3, dtype=np.float16)
    f16[[boundary - 1, boundary + 2]] = [np.inf, np.nan]
    f32 = np.array([1.0, np.nan, -np.inf, 3.0e38], dtype=np.float32)
    f64 = np.array([np.inf, 0.5], dtype=np.float64)
    tensors = {
        "bf16": ("BF16", bf16),
        "f16": ("F16", f16),
        "f32": ("F32", f32),
        "f64": ("F64", f64),
        "u8": ("U8", np.full(7, 0xFF, np.uint8)),
    }
    path = tmp_path / "scan.safetensors"
    with open(path, "wb") as handle:
        write_shard(handle, [PlannedTensor(n, d, a.shape, a.nbytes, lambda a=a: iter([a.tobytes()])) for n, (d, a) in tensors.items()])

    scan = scan_shard(path)

    assert scan.problems == []
    assert scan.non_finite == {"bf16": 4, "f16": 2, "f32": 2, "f64": 1}
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert scan.tensor_sha["f32"] == hashlib.sha256(f32.tobytes()).hexdigest()
    assert scan.tensor_sha["bf16"] == hashlib.sha256(bf16.tobytes()).hexdigest()
