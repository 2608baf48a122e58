"""The safetensors format, read defensively and written by streaming.

A file is an 8-byte little-endian header length, a JSON header, then raw tensor bytes. We write it
ourselves because the library's writer wants every tensor in memory; the library stays the
reference parser in verify and in tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Protocol

from pipeline.checkpoint.files import DuplicateKeyError, loads_strict

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library refuses larger headers too
MAX_TENSOR_NAME = 512
TENSOR_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]*$")
METADATA_KEY = "__metadata__"
DRAFT_METADATA = {"format": "pt"}  # fixed, so two builds of one lock are byte-identical

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a header describes it; offsets are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A parsed and checked safetensors header."""

    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]
    data_start: int

    def absolute_range(self, name: str) -> tuple[int, int]:
        """The [start, end) byte range of a tensor within the whole file."""
        entry = self.tensors[name]
        return self.data_start + entry.begin, self.data_start + entry.end


class HeaderError(ValueError):
    """A safetensors header that cannot be trusted; the message names the field."""


def check_tensor_name(name: object) -> str:
    """Tensor names from remote headers must be plain identifiers: no paths, no control bytes."""
    if not isinstance(name, str) or not name:
        raise HeaderError("tensor name must be a non-empty string")
    if len(name) > MAX_TENSOR_NAME:
        raise HeaderError(f"tensor name of {len(name)} characters exceeds {MAX_TENSOR_NAME}")
    if not TENSOR_NAME.match(name) or ".." in name:
        raise HeaderError(f"tensor name {name[:80]!r} has characters outside [A-Za-z0-9_.:-] or '..'")
    return name


def header_length(prefix: bytes, file_size: int) -> int:
    """Decode and bound-check the 8-byte header length."""
    if len(prefix) < HEADER_LENGTH_BYTES or file_size < HEADER_LENGTH_BYTES:
        raise HeaderError("file is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix[:HEADER_LENGTH_BYTES])
    if length == 0 or length > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {length} is outside 1..{MAX_HEADER_BYTES}")
    if HEADER_LENGTH_BYTES + length > file_size:
        raise HeaderError(f"header length {length} runs past the end of the file ({file_size} bytes)")
    return int(length)


def parse_header(raw: bytes, file_size: int) -> Header:
    """Parse and validate a header; `raw` is the JSON bytes, `file_size` the whole file's size."""
    try:
        document = loads_strict(raw.decode("utf-8"))
    except DuplicateKeyError as exc:
        raise HeaderError(f"header names a tensor twice ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HeaderError("header is not valid UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise HeaderError("header is not a JSON object")
    data_start = HEADER_LENGTH_BYTES + len(raw)
    data_size = file_size - data_start
    metadata = document.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderError(f"{METADATA_KEY} must map strings to strings")
    tensors = {name: _entry(name, value, data_size) for name, value in document.items()}
    _check_no_overlap(tensors.values())
    return Header(tensors, metadata, data_start)


def _entry(name: str, value: Any, data_size: int) -> TensorEntry:
    check_tensor_name(name)
    if not isinstance(value, dict):
        raise HeaderError(f"{name}: entry is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise HeaderError(f"{name}.dtype: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise HeaderError(f"{name}.shape: must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise HeaderError(f"{name}.data_offsets: must be two non-negative integers")
    begin, end = offsets
    if begin > end or end > data_size:
        raise HeaderError(f"{name}.data_offsets: [{begin}, {end}] is outside the data section of {data_size} bytes")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if end - begin != expected:
        raise HeaderError(f"{name}.data_offsets: {end - begin} bytes but shape {shape} of {dtype} needs {expected}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_no_overlap(entries: Iterable[TensorEntry]) -> None:
    previous: TensorEntry | None = None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if previous is not None and entry.begin < previous.end and entry.nbytes and previous.nbytes:
            raise HeaderError(f"{entry.name}.data_offsets: overlaps {previous.name}")
        previous = entry


def read_header(read_range: Callable[[int, int], bytes], file_size: int) -> Header:
    """Read a header through a byte-range reader: the first 8 bytes, then exactly the JSON."""
    length = header_length(read_range(0, HEADER_LENGTH_BYTES), file_size)
    raw = read_range(HEADER_LENGTH_BYTES, HEADER_LENGTH_BYTES + length)
    if len(raw) != length:
        raise HeaderError(f"header is truncated: {len(raw)} of {length} bytes")
    return parse_header(raw, file_size)


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: where it goes, and how to stream its bytes.

    `chunks` may hand out views of one reused buffer: each chunk is consumed before the next is asked for.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    chunks: Callable[[], Iterator[bytes | memoryview]]


class DescribedTensor(Protocol):
    """What a header says about a tensor: enough to lay it out, no bytes needed."""

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def nbytes(self) -> int: ...


def encode_header(tensors: Iterable[DescribedTensor]) -> bytes:
    """A deterministic header: fixed order, fixed metadata, padded with spaces to 8 bytes."""
    document: dict[str, Any] = {METADATA_KEY: DRAFT_METADATA}
    offset = 0
    for tensor in tensors:
        document[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    raw = json.dumps(document, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_shard(handle: IO[bytes], tensors: list[PlannedTensor]) -> tuple[dict[str, str], str, int]:
    """Stream tensors into an open file, hashing as it writes.

    Every byte feeds two digests, its tensor's and the file's. The file's runs on a helper thread
    while this one hashes the tensor and writes: hashlib releases the GIL on large updates, so on
    two cores the pair costs about one hash.

    Returns (tensor name -> sha256 of its bytes, sha256 of the file, file size).
    """
    header = encode_header(tensors)
    file_digest = hashlib.sha256(header)
    handle.write(header)
    size = len(header)
    tensor_digests: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-digest") as side:
        for tensor in tensors:
            digest = hashlib.sha256()
            written = 0
            for chunk in tensor.chunks():
                file_update = side.submit(file_digest.update, chunk)
                digest.update(chunk)
                handle.write(chunk)
                written += len(chunk)
                file_update.result()  # the chunk may be a reused buffer: done with it before the next
            if written != tensor.nbytes:
                raise HeaderError(f"{tensor.name}: got {written} bytes, expected {tensor.nbytes}")
            tensor_digests[tensor.name] = digest.hexdigest()
            size += written
    return tensor_digests, file_digest.hexdigest(), size
