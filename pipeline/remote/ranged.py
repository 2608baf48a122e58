"""Copy byte ranges of remote files into local blobs over several connections at once.

A Hub download over one connection is capped far below what several reach, and the
draft is dominated by four ~1 GB tensors, so a tensor is split into parts that are fetched in
parallel and written at their offsets (`os.pwrite`) into a preallocated partial file. Each part is
flushed and then noted in a small part log, so a killed fetch resumes with only the missing parts.
The sha256 is taken in byte order: whoever completes the part at the hash frontier reads the
newly contiguous bytes back (still in the page cache) and feeds them to the digest, so hashing
overlaps the download. Memory is bounded by the number of connections (one network chunk each,
one hash buffer per blob being hashed), whatever the tensor size.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from pipeline.checkpoint.files import PUBLISHED_FILE_MODE
from pipeline.checkpoint.sources import ModelSource
from pipeline.errors import InputError

# Small enough that eight connections share one 1 GB tensor, large enough that per-request
# overhead (headers, a new connection, one fdatasync) stays well under 1% of the transfer.
PART_BYTES = 64 * 1024 * 1024
# Fits a core's L2 cache: the digest reads each chunk from cache right after it is copied in.
HASH_CHUNK_BYTES = 1024 * 1024
PARTIAL_SUFFIX = ".part"
PART_LOG_SUFFIX = ".parts"
_flush = getattr(os, "fdatasync", os.fsync)  # data only: the size was fixed when the file was preallocated


@dataclass(frozen=True)
class Part:
    """Bytes [start, end) of a blob, fetched by one ranged request."""

    index: int
    start: int
    end: int


def plan_parts(nbytes: int, part_bytes: int) -> list[Part]:
    """Split `nbytes` into consecutive parts of at most `part_bytes` (an empty blob has none)."""
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    return [Part(i, start, min(start + part_bytes, nbytes)) for i, start in enumerate(range(0, nbytes, part_bytes))]


@dataclass(frozen=True)
class BlobJob:
    """Bytes [start, end) of `source_file` to land in `blob`.

    `plan_key` names the partial file and part log: it must change whenever anything that decides
    the bytes changes, so a resumed fetch never mixes parts of two plans.
    """

    source_file: str
    start: int
    end: int
    blob: Path
    plan_key: str

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def partial(self) -> Path:
        return self.blob.with_name(f"{self.blob.stem}.{self.plan_key}{PARTIAL_SUFFIX}")

    @property
    def part_log(self) -> Path:
        return self.blob.with_name(f"{self.blob.stem}.{self.plan_key}{PART_LOG_SUFFIX}")


class _Stopped(Exception):
    """Another part failed: stop this one at the next chunk."""


class _Assembly:
    """One blob being assembled: the parts still missing, the part log, and the in-order hash."""

    def __init__(self, job: BlobJob, part_bytes: int, on_complete: Callable[[str], None]) -> None:
        self.job = job
        self.parts = plan_parts(job.nbytes, part_bytes)
        self.on_complete = on_complete
        self._lock = threading.Lock()
        self._done = _prepare_partial(job, len(self.parts))
        self._hashed = 0  # parts [0, _hashed) are in the digest
        self._hashing = False
        self._digest = hashlib.sha256()

    def missing(self) -> list[Part]:
        return [part for part in self.parts if part.index not in self._done]

    def already_have(self) -> int:
        return sum(part.end - part.start for part in self.parts if part.index in self._done)

    def finished(self, part: Part) -> None:
        """Record a flushed part, then advance the hash frontier as far as the parts allow."""
        with self._lock:
            if len(self.parts) > 1:
                with open(self.job.part_log, "a", encoding="ascii") as log:
                    log.write(f"{part.index}\n")
            self._done.add(part.index)
            if self._hashing:
                return  # the thread already hashing will pick this part up
            self._hashing = True
        self._advance_hash()

    def _advance_hash(self) -> None:
        buffer = memoryview(bytearray(HASH_CHUNK_BYTES))  # one buffer per pass: no allocation per chunk
        with open(self.job.partial, "rb", buffering=0) as handle:
            while True:
                with self._lock:
                    if self._hashed not in self._done:
                        self._hashing = False
                        complete = self._hashed == len(self.parts)
                        break
                    part = self.parts[self._hashed]
                    self._hashed += 1
                self._hash_part(handle, buffer, part)
        if complete:
            self._finish()

    def _hash_part(self, handle: io.FileIO, buffer: memoryview, part: Part) -> None:
        handle.seek(part.start)
        remaining = part.end - part.start
        while remaining:
            count = handle.readinto(buffer[: min(len(buffer), remaining)])
            if not count:
                raise InputError(f"{self.job.partial}: ends before byte {part.end}", hint="run fetch again")
            self._digest.update(buffer[:count])
            remaining -= count

    def start_if_empty(self) -> None:
        """A blob with no missing part (empty, or fully logged) is hashed and finished now."""
        if not self.missing():
            with self._lock:
                self._hashing = True
            self._advance_hash()

    def _finish(self) -> None:
        self.job.partial.replace(self.job.blob)
        self.job.part_log.unlink(missing_ok=True)
        self.on_complete(self._digest.hexdigest())


def _prepare_partial(job: BlobJob, part_count: int) -> set[int]:
    """Open or create the preallocated partial file; return the parts a previous run completed."""
    partial = job.partial
    if partial.is_file() and partial.stat().st_size == job.nbytes:
        return _read_part_log(job.part_log, part_count) if part_count > 1 else set()
    job.part_log.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PUBLISHED_FILE_MODE)
    try:
        _preallocate(fd, job.nbytes, partial)
    finally:
        os.close(fd)
    return set()


def _preallocate(fd: int, nbytes: int, path: Path) -> None:
    """Reserve the blob's blocks now, so a full disk fails the fetch at its start, not its end."""
    if nbytes == 0:
        return
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except AttributeError:  # macOS has no posix_fallocate
        os.ftruncate(fd, nbytes)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InputError(f"{path.parent}: no space left for {nbytes} bytes", hint="free disk space, then run fetch again") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, nbytes)


def _read_part_log(path: Path, part_count: int) -> set[int]:
    """Completed part numbers; a line cut short by a kill is ignored, so that part is fetched again."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return set()
    lines = text.split("\n")[:-1]  # the last element is empty or an unfinished line
    return {int(line) for line in lines if line.isdigit() and int(line) < part_count}


def fetch_blobs(
    source: ModelSource,
    jobs: list[tuple[BlobJob, Callable[[str], None]]],
    connections: int,
    progress: Callable[[int], None],
    part_bytes: int = PART_BYTES,
) -> None:
    """Fetch every job's missing parts over `connections` parallel connections.

    Each job's callback receives the blob's sha256 once the blob is complete under its final
    name; a blob finished before another part fails stays finished. The first failure stops the
    other parts at their next chunk and is raised once every connection has stopped.
    """
    assemblies = [_Assembly(job, part_bytes, on_complete) for job, on_complete in jobs]
    for assembly in assemblies:
        progress(assembly.already_have())
        assembly.start_if_empty()
    # Largest blobs first (each in byte order, for the hash frontier): the last parts to start
    # are then small ones, and the connections finish together instead of one 64 MiB straggler.
    ordered = sorted(assemblies, key=lambda assembly: assembly.job.nbytes, reverse=True)
    work = [(assembly, part) for assembly in ordered for part in assembly.missing()]
    if not work:
        return
    stop = threading.Event()
    futures = []
    pool = ThreadPoolExecutor(max_workers=max(1, connections), thread_name_prefix="fetch")
    try:
        futures = [pool.submit(_fetch_part, source, assembly, part, stop, progress) for assembly, part in work]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        stop.set()  # on success every part is done already; otherwise the rest stop at their next chunk
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
    first = next((e for e in errors if e is not None and not isinstance(e, _Stopped)), None)
    if first is not None:
        raise first


def _fetch_part(source: ModelSource, assembly: _Assembly, part: Part, stop: threading.Event, progress: Callable[[int], None]) -> None:
    """One ranged request written at its offset, flushed, then handed to the blob's hash frontier."""
    job = assembly.job
    if stop.is_set():
        raise _Stopped
    offset = part.start
    fd = os.open(job.partial, os.O_WRONLY)
    try:
        chunks: Iterator[bytes] = source.stream_range(job.source_file, job.start + part.start, job.start + part.end)
        with contextlib.closing(chunks):  # type: ignore[type-var]
            for chunk in chunks:
                if stop.is_set():
                    raise _Stopped
                _pwrite_all(fd, chunk, offset)
                offset += len(chunk)
                progress(len(chunk))
        if offset != part.end:
            first, last = job.start + part.start, job.start + part.end
            raise InputError(f"{source.label}: {job.source_file}: bytes {first}-{last} gave {offset - part.start} of {last - first}")
        # Flushed before the part log names it: a crash must not leave a logged part unwritten.
        _flush(fd)
    finally:
        os.close(fd)
    assembly.finished(part)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
