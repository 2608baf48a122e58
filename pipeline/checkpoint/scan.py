"""One sequential read of a safetensors shard: header checks, per-tensor sha256, NaN/Inf counts, file sha256.

Verify reads every draft shard through this once; the safetensors library then reads the header
again as the reference parser.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from pipeline.checkpoint.files import sha256_file
from pipeline.checkpoint.safetensors_format import HEADER_LENGTH_BYTES, Header, HeaderError, header_length, parse_header

# Exponent-all-ones masks: an element is NaN or Inf exactly when its exponent bits are all set.
NON_FINITE_MASKS = {"BF16": ("<u2", 0x7F80), "F16": ("<u2", 0x7C00), "F32": ("<u4", 0x7F800000), "F64": ("<u8", 0x7FF0000000000000)}


@dataclass
class ShardScan:
    header: Header | None = None
    problems: list[str] = field(default_factory=list)
    tensor_sha: dict[str, str] = field(default_factory=dict)
    non_finite: dict[str, int] = field(default_factory=dict)
    sha256: str = ""
    size: int = 0


# Fits a core's L2 cache, so the second digest and the scan read each chunk from cache, not memory.
SCAN_CHUNK_BYTES = 1024 * 1024


def scan_shard(path: Path) -> ShardScan:
    """One sequential read: header checks, per-tensor sha256, NaN/Inf count, file sha256.

    The file digest runs on a helper thread while this one hashes and scans the tensor (hashlib
    releases the GIL), so on two cores the pass costs about one sha256 of the shard.
    """
    scan = ShardScan(size=path.stat().st_size)
    file_digest = hashlib.sha256()
    contiguous = True  # a gap makes the streamed file digest meaningless; it is taken again below
    with open(path, "rb", buffering=0) as handle, ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-digest") as side:
        prefix = handle.read(HEADER_LENGTH_BYTES)
        try:
            length = header_length(prefix, scan.size)
            raw = handle.read(length)
            scan.header = parse_header(raw, scan.size)
        except HeaderError as exc:
            scan.problems.append(f"{path.name}: {exc}")
            scan.sha256 = sha256_file(path)
            return scan
        file_digest.update(prefix + raw)
        entries = sorted(scan.header.tensors.values(), key=lambda e: e.begin)
        buffer = memoryview(bytearray(SCAN_CHUNK_BYTES))  # reused: no allocation per chunk
        counter = _NonFiniteCounter(SCAN_CHUNK_BYTES)
        position = 0
        for entry in entries:
            if entry.begin != position:
                scan.problems.append(f"{path.name}: {entry.name} starts at {entry.begin}, expected {position} (offsets not contiguous)")
                handle.seek(scan.header.data_start + entry.begin)
                contiguous = False
            digest = hashlib.sha256()
            bad = 0
            remaining = entry.nbytes
            while remaining:
                count = handle.readinto(buffer[: min(len(buffer), remaining)])
                if not count:
                    break
                chunk = buffer[:count]
                file_update = side.submit(file_digest.update, chunk) if contiguous else None
                digest.update(chunk)
                bad += counter.count(chunk, entry.dtype)
                if file_update is not None:
                    file_update.result()  # the buffer is reused by the next read
                remaining -= count
            scan.tensor_sha[entry.name] = digest.hexdigest()
            if bad:
                scan.non_finite[entry.name] = bad
            position = entry.end
        if scan.header.data_start + position != scan.size:
            scan.problems.append(f"{path.name}: {scan.size - scan.header.data_start - position} trailing bytes after the last tensor")
    scan.sha256 = file_digest.hexdigest() if contiguous and not scan.problems else sha256_file(path)
    _cross_check_with_library(path, scan)
    return scan


class _NonFiniteCounter:
    """Counts NaN/Inf elements of a chunk with numpy, into scratch arrays allocated once per shard."""

    def __init__(self, chunk_bytes: int) -> None:
        import numpy  # here, not at the top: only verify scans, and numpy costs every command's start-up

        self._np = numpy
        self._masked = numpy.empty(chunk_bytes, dtype=numpy.uint8)
        self._hits = numpy.empty(chunk_bytes // 2, dtype=numpy.bool_)

    def count(self, chunk: memoryview, dtype: str) -> int:
        if dtype not in NON_FINITE_MASKS:
            return 0
        layout, mask = NON_FINITE_MASKS[dtype]
        np = self._np
        values = np.frombuffer(chunk, dtype=layout)
        masked = self._masked.view(layout)[: len(values)]
        hits = self._hits[: len(values)]
        np.bitwise_and(values, mask, out=masked)
        np.equal(masked, mask, out=hits)
        return int(np.count_nonzero(hits))


def _cross_check_with_library(path: Path, scan: ShardScan) -> None:
    """The safetensors library is the reference parser: it must see the same names, dtypes and shapes."""
    if scan.header is None:
        return
    try:
        with safe_open(str(path), framework="numpy") as handle:
            seen = {name: (handle.get_slice(name).get_dtype(), tuple(handle.get_slice(name).get_shape())) for name in handle.keys()}  # noqa: SIM118 (safe_open handles are not iterable)
    except Exception as exc:  # the library's own error types vary between versions
        scan.problems.append(f"{path.name}: the safetensors library refuses it ({exc.__class__.__name__})")
        return
    ours = {name: (e.dtype, e.shape) for name, e in scan.header.tensors.items()}
    if seen != ours:
        scan.problems.append(f"{path.name}: the safetensors library reads a different header")
