"""Where model files come from: a local folder or a Hub repo, behind one small interface.

Stages ask a source to list files, read a small file, read or stream a byte range, and say which
commit it resolved to. Every file name that reaches a source has passed `check_repo_path`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pipeline.errors import InputError

STREAM_CHUNK_BYTES = 4 * 1024 * 1024
MAX_SMALL_FILE_BYTES = 64 * 1024 * 1024  # configs, indexes and cards; anything larger is not "small"


def check_repo_path(name: object, where: str) -> str:
    """A file name from a remote index or header must stay inside its repo."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise InputError(f"{where}: file name must be a non-empty string of at most 255 characters")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{where}: file name {name[:80]!r} escapes the repo")
    return name


class ModelSource(Protocol):
    """Read access to one model repo at one revision."""

    label: str

    @property
    def bytes_transferred(self) -> int:
        """Bytes received so far: what the fetch report compares with the bytes needed."""

    def resolve(self) -> str | None:
        """The commit id the revision points at (None for a local folder)."""

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def read(self, name: str) -> bytes:
        """A whole small file (configs, indexes, cards)."""

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file."""

    def stream_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a file in chunks, for tensors of any size."""

    def lfs_sha256(self, name: str) -> str | None:
        """The content sha256 the remote vouches for, when it keeps one."""

    def local_path(self, name: str) -> Path:
        """A local copy of the whole file (downloaded and checked if remote)."""

    def fingerprint(self, name: str) -> str:
        """Changes whenever the file's content may have changed (a commit id, or size and mtime)."""


class LocalSource:
    """A model folder on disk."""

    def __init__(self, root: Path, label: str) -> None:
        self.root = root
        self.label = label
        self.bytes_transferred = 0
        self._count_lock = threading.Lock()
        if not root.is_dir():
            raise InputError(f"{label}: folder {root} does not exist")

    def resolve(self) -> str | None:
        return None

    def _path(self, name: str) -> Path:
        check_repo_path(name, self.label)
        path = self.root / name
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InputError(f"{self.label}: {name} resolves outside the folder")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise InputError(f"{self.label}: {name} is missing") from None

    def read(self, name: str) -> bytes:
        if self.size(name) > MAX_SMALL_FILE_BYTES:
            raise InputError(f"{self.label}: {name} is larger than {MAX_SMALL_FILE_BYTES} bytes")
        return self._path(name).read_bytes()

    def read_range(self, name: str, start: int, end: int) -> bytes:
        return b"".join(self.stream_range(name, start, end))

    def stream_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        try:
            handle = open(self._path(name), "rb")
        except FileNotFoundError:
            raise InputError(f"{self.label}: {name} is missing") from None
        with handle:
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = handle.read(min(STREAM_CHUNK_BYTES, remaining))
                if not chunk:
                    raise InputError(f"{self.label}: {name} ends before byte {end}")
                remaining -= len(chunk)
                with self._count_lock:
                    self.bytes_transferred += len(chunk)
                yield chunk

    def lfs_sha256(self, name: str) -> str | None:
        return None

    def local_path(self, name: str) -> Path:
        return self._path(name)

    def fingerprint(self, name: str) -> str:
        """Size and modification time: enough to notice a changed local file between runs."""
        stat = os.stat(self._path(name))
        return f"{stat.st_size}:{stat.st_mtime_ns}"


class DelegatingSource:
    """A source that passes every call to `inner`; a subclass overrides only what it changes."""

    def __init__(self, inner: ModelSource) -> None:
        self.inner = inner
        self.label = inner.label

    @property
    def bytes_transferred(self) -> int:
        return self.inner.bytes_transferred

    def resolve(self) -> str | None:
        return self.inner.resolve()

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def read(self, name: str) -> bytes:
        return self.inner.read(name)

    def read_range(self, name: str, start: int, end: int) -> bytes:
        return self.inner.read_range(name, start, end)

    def stream_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        return self.inner.stream_range(name, start, end)

    def lfs_sha256(self, name: str) -> str | None:
        return self.inner.lfs_sha256(name)

    def local_path(self, name: str) -> Path:
        return self.inner.local_path(name)

    def fingerprint(self, name: str) -> str:
        return self.inner.fingerprint(name)


class WholeShardSource(DelegatingSource):
    """Reads tensor ranges from whole downloaded shards (each checked against its LFS sha256).

    The fallback when range reads are unavailable or a publisher wants the Hub's own hash on every
    shard; it moves the full shards, so bytes fetched grow to the shards' size.
    """

    def __init__(self, inner: ModelSource) -> None:
        super().__init__(inner)
        self._paths: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._shard_locks: dict[str, threading.Lock] = {}

    def _local(self, name: str) -> LocalSource:
        # One lock per shard: parts of one shard wait for its download, other shards download alongside.
        with self._lock:
            shard_lock = self._shard_locks.setdefault(name, threading.Lock())
        with shard_lock:
            if name not in self._paths:
                self._paths[name] = self.inner.local_path(name).resolve()  # the Hub cache links snapshots to blobs
        path = self._paths[name]
        return LocalSource(path.parent, self.label)

    def local_path(self, name: str) -> Path:
        return self._paths.get(name) or self.inner.local_path(name)

    def read_range(self, name: str, start: int, end: int) -> bytes:
        return b"".join(self.stream_range(name, start, end))

    def stream_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        local = self._local(name)
        yield from local.stream_range(self._paths[name].name, start, end)


class RememberedReads(DelegatingSource):
    """A source that reads each small file once per run and hands the same bytes to every later reader.

    Fetch, the shard planner, inspect and the lock all read the config, index and card; without this
    each would ask the remote again. The source is pinned to one commit for the run, so the bytes
    cannot change underneath.
    """

    def __init__(self, inner: ModelSource) -> None:
        super().__init__(inner)
        self._small: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> bytes:
        with self._lock:
            if name not in self._small:
                self._small[name] = self.inner.read(name)
            return self._small[name]
