"""Land byte ranges of remote files at their offsets in local files, over several connections at once.

A Hub download over one connection is capped far below what several reach, and the draft is
dominated by four ~1 GB tensors, so each range (a segment: one tensor's bytes) is split into parts
fetched in parallel and written at their final offsets (`os.pwrite`) into a preallocated partial
file, which may hold many segments: a draft shard is laid out once and its tensors land in place,
so no byte is written twice. Each part is flushed and then noted in the file's part log, so a killed
fetch resumes with only the missing parts. Each segment's sha256 is taken in byte order: whoever
completes the part at a segment's hash frontier reads the newly contiguous bytes back (still in the
page cache) and feeds them to its digest, so hashing overlaps the download. Memory is bounded by
the number of connections (one network chunk each, one hash buffer per segment being hashed),
whatever the tensor size.
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
    """Bytes [start, end) of a segment, fetched by one ranged request."""

    index: int
    start: int
    end: int


def plan_parts(nbytes: int, part_bytes: int) -> list[Part]:
    """Split `nbytes` into consecutive parts of at most `part_bytes` (an empty segment has none)."""
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    return [Part(i, start, min(start + part_bytes, nbytes)) for i, start in enumerate(range(0, nbytes, part_bytes))]


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of `source_file`, to land at `offset` in the local file."""

    source_file: str
    start: int
    end: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FileJob:
    """A local file of `size` bytes whose segments come from the source; other bytes are left zero.

    `plan_key` names the partial file and part log: it must change whenever anything that decides
    the bytes or their places changes, so a resumed fetch never mixes parts of two plans.
    """

    path: Path
    size: int
    segments: tuple[Segment, ...]
    plan_key: str

    @property
    def partial(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.{self.plan_key}{PARTIAL_SUFFIX}")

    @property
    def part_log(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.{self.plan_key}{PART_LOG_SUFFIX}")

    @property
    def nbytes(self) -> int:
        """Bytes to fetch: the segments' total."""
        return sum(segment.nbytes for segment in self.segments)


class _Stopped(Exception):
    """Another part failed: stop this one at the next chunk."""


class _LandingFile:
    """One file being landed: its part log, which parts are done, and how many segments are hashed."""

    def __init__(self, job: FileJob, part_bytes: int, on_complete: Callable[[list[str]], None]) -> None:
        self.job = job
        self.on_complete = on_complete
        self.lock = threading.Lock()
        self.segments: list[_Segment] = []
        first = 0
        for position, segment in enumerate(job.segments):
            parts = plan_parts(segment.nbytes, part_bytes)
            self.segments.append(_Segment(self, position, segment, first, parts))
            first += len(parts)
        self.part_count = first
        self.done = _prepare_partial(job, first)
        self._hashed_segments = 0

    def record(self, number: int) -> None:
        """Note a flushed part in the log (caller holds the lock)."""
        with open(self.job.part_log, "a", encoding="ascii") as log:
            log.write(f"{number}\n")
        self.done.add(number)

    def segment_hashed(self) -> None:
        with self.lock:
            self._hashed_segments += 1
            complete = self._hashed_segments == len(self.segments)
        if complete:
            self.finish()

    def finish(self) -> None:
        """Every segment is landed and hashed: the caller records the digests, then the file takes its name.

        In that order a kill between the two leaves a complete part log beside the partial file, so
        the next run only hashes it again instead of fetching it again.
        """
        self.on_complete([segment.digest.hexdigest() for segment in self.segments])
        self.job.partial.replace(self.job.path)
        self.job.part_log.unlink(missing_ok=True)


class _Segment:
    """One segment's parts and its in-order hash frontier."""

    def __init__(self, landing: _LandingFile, position: int, segment: Segment, first_part: int, parts: list[Part]) -> None:
        self.landing = landing
        self.position = position
        self.segment = segment
        self.first_part = first_part  # the part log numbers this segment's parts from here
        self.parts = parts
        self.digest = hashlib.sha256()
        self._hashed = 0  # parts [0, _hashed) are in the digest
        self._hashing = False

    def _is_done(self, part: Part) -> bool:
        return self.first_part + part.index in self.landing.done

    def missing(self) -> list[Part]:
        return [part for part in self.parts if not self._is_done(part)]

    def already_have(self) -> int:
        return sum(part.end - part.start for part in self.parts if self._is_done(part))

    def finished(self, part: Part) -> None:
        """Record a flushed part, then advance the hash frontier as far as the parts allow."""
        with self.landing.lock:
            self.landing.record(self.first_part + part.index)
            if self._hashing:
                return  # the thread already hashing will pick this part up
            self._hashing = True
        self._advance_hash()

    def start_if_complete(self) -> None:
        """A segment with no missing part (empty, or fully logged) is hashed now."""
        if not self.missing():
            with self.landing.lock:
                self._hashing = True
            self._advance_hash()

    def _advance_hash(self) -> None:
        buffer = memoryview(bytearray(HASH_CHUNK_BYTES))  # one buffer per pass: no allocation per chunk
        with open(self.landing.job.partial, "rb", buffering=0) as handle:
            while True:
                with self.landing.lock:
                    if self._hashed == len(self.parts) or not self._is_done(self.parts[self._hashed]):
                        self._hashing = False
                        complete = self._hashed == len(self.parts)
                        break
                    part = self.parts[self._hashed]
                    self._hashed += 1
                self._hash_part(handle, buffer, part)
        if complete:
            self.landing.segment_hashed()

    def _hash_part(self, handle: io.FileIO, buffer: memoryview, part: Part) -> None:
        handle.seek(self.segment.offset + part.start)
        remaining = part.end - part.start
        while remaining:
            count = handle.readinto(buffer[: min(len(buffer), remaining)])
            if not count:
                raise InputError(f"{self.landing.job.partial}: ends before byte {self.segment.offset + part.end}", hint="run fetch again")
            self.digest.update(buffer[:count])
            remaining -= count


def _prepare_partial(job: FileJob, part_count: int) -> set[int]:
    """Open or create the preallocated partial file; return the parts a previous run completed."""
    partial = job.partial
    if partial.is_file() and partial.stat().st_size == job.size:
        return _read_part_log(job.part_log, part_count)
    job.part_log.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PUBLISHED_FILE_MODE)
    try:
        _preallocate(fd, job.size, partial)
    finally:
        os.close(fd)
    return set()


def _preallocate(fd: int, nbytes: int, path: Path) -> None:
    """Reserve the file's blocks now, so a full disk fails the fetch at its start, not its end."""
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


def fetch_files(
    source: ModelSource,
    jobs: list[tuple[FileJob, Callable[[list[str]], None]]],
    connections: int,
    progress: Callable[[int], None],
    part_bytes: int = PART_BYTES,
) -> None:
    """Fetch every job's missing parts over `connections` parallel connections.

    Each job's callback receives its segments' sha256s, in order, once every part is landed and
    hashed, just before the file takes its final name; a file finished before another part fails
    stays finished. The first failure
    stops the other parts at their next chunk and is raised once every connection has stopped.
    """
    landings = [_LandingFile(job, part_bytes, on_complete) for job, on_complete in jobs]
    segments = [segment for landing in landings for segment in landing.segments]
    for segment in segments:
        progress(segment.already_have())
    for landing in landings:
        if not landing.segments:
            landing.finish()
    for segment in segments:
        segment.start_if_complete()
    # Largest segments first (each in byte order, for its hash frontier): the last parts to start
    # are then small ones, and the connections finish together instead of one 64 MiB straggler.
    ordered = sorted(segments, key=lambda segment: segment.segment.nbytes, reverse=True)
    work = [(segment, part) for segment in ordered for part in segment.missing()]
    if not work:
        return
    stop = threading.Event()
    futures = []
    pool = ThreadPoolExecutor(max_workers=max(1, connections), thread_name_prefix="fetch")
    try:
        futures = [pool.submit(_fetch_part, source, segment, part, stop, progress) for segment, part in work]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        stop.set()  # on success every part is done already; otherwise the rest stop at their next chunk
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
    first = next((e for e in errors if e is not None and not isinstance(e, _Stopped)), None)
    if first is not None:
        raise first


def _fetch_part(source: ModelSource, state: _Segment, part: Part, stop: threading.Event, progress: Callable[[int], None]) -> None:
    """One ranged request written at its offset, flushed, then handed to the segment's hash frontier."""
    job, segment = state.landing.job, state.segment
    if stop.is_set():
        raise _Stopped
    position = part.start
    fd = os.open(job.partial, os.O_WRONLY)
    try:
        chunks: Iterator[bytes] = source.stream_range(segment.source_file, segment.start + part.start, segment.start + part.end)
        with contextlib.closing(chunks):  # type: ignore[type-var]
            for chunk in chunks:
                if stop.is_set():
                    raise _Stopped
                _pwrite_all(fd, chunk, segment.offset + position)
                position += len(chunk)
                progress(len(chunk))
        if position != part.end:
            first, last = segment.start + part.start, segment.start + part.end
            raise InputError(f"{source.label}: {segment.source_file}: bytes {first}-{last} gave {position - part.start} of {last - first}")
        # Flushed before the part log names it: a crash must not leave a logged part unwritten.
        _flush(fd)
    finally:
        os.close(fd)
    state.finished(part)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
