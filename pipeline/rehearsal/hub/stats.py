"""Traffic counters for the embedded Hub, so tests can assert what a client really sent."""

from __future__ import annotations

import threading
from collections import Counter


class ServerStats:
    """Thread-safe counters of requests, writes, transferred bytes and fired faults.

    `writes` counts requests that changed state (repo created, LFS object stored, commit,
    tag or branch created or deleted); a refused write does not count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._by_method: Counter[str] = Counter()
            self._by_route: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._writes = 0
            self._lfs_bytes_received = 0
            self._resolve_bytes_sent = 0
            self._file_requests: Counter[str] = Counter()

    def record_request(self, method: str, route: str) -> None:
        with self._lock:
            self._by_method[method] += 1
            self._by_route[route] += 1

    def record_file_request(self, repo: str, path: str) -> None:
        """A GET or HEAD of one file's content (the resolve route), by `repo/path`."""
        with self._lock:
            self._file_requests[f"{repo}/{path}"] += 1

    @property
    def file_requests(self) -> dict[str, int]:
        """Content requests per `repo/path`: how often a client asked for each file."""
        with self._lock:
            return dict(self._file_requests)

    def record_write(self) -> None:
        with self._lock:
            self._writes += 1

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def add_lfs_bytes_received(self, count: int) -> None:
        with self._lock:
            self._lfs_bytes_received += count

    def add_resolve_bytes_sent(self, count: int) -> None:
        with self._lock:
            self._resolve_bytes_sent += count

    @property
    def requests_by_method(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_method)

    @property
    def requests_by_route(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_route)

    @property
    def faults_fired(self) -> dict[str, int]:
        """Faults that fired, by kind: `error`, `drop`, `throttle`."""
        with self._lock:
            return dict(self._faults)

    @property
    def requests(self) -> int:
        with self._lock:
            return sum(self._by_method.values())

    @property
    def writes(self) -> int:
        with self._lock:
            return self._writes

    @property
    def lfs_bytes_received(self) -> int:
        with self._lock:
            return self._lfs_bytes_received

    @property
    def resolve_bytes_sent(self) -> int:
        with self._lock:
            return self._resolve_bytes_sent

    def snapshot(self) -> dict[str, object]:
        """All counters at one instant, as plain data."""
        with self._lock:
            return {
                "requests_by_method": dict(self._by_method),
                "requests_by_route": dict(self._by_route),
                "writes": self._writes,
                "lfs_bytes_received": self._lfs_bytes_received,
                "resolve_bytes_sent": self._resolve_bytes_sent,
                "faults_fired": dict(self._faults),
            }
