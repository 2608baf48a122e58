"""A Hub repo as a model source, read through the real huggingface_hub client.

Small files come through `hf_hub_download` (cached, pinned to the resolved commit); tensors come
as HTTP Range reads on the resolve URL through the library's own session and backoff, resumed
from the last byte received when a connection drops mid-body. Whole-shard mode downloads the
file and checks it against the LFS sha256 the Hub keeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

from pipeline.checkpoint.files import sha256_file
from pipeline.checkpoint.sources import MAX_SMALL_FILE_BYTES, check_repo_path
from pipeline.errors import InputError, RemoteError
from pipeline.recipe.loader import HubRef
from pipeline.remote.calls import RetryPolicy, call

DEFAULT_ATTEMPTS = 6  # a dropped body or a 5xx/429 is retried this many times before exit 3
DEFAULT_BACKOFF_SECONDS = 0.5
TRANSPORT_ERRORS = (httpx2.TransportError,)
T = TypeVar("T")


class HubSource:
    """Read access to `org/name` at one resolved commit on a Hub endpoint."""

    def __init__(
        self,
        ref: HubRef,
        role: str,
        *,
        api: HfApi | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        cache_dir: Path | None = None,
    ) -> None:
        self.ref = ref
        self.api = api or HfApi()
        self.label = f"{role} {ref.repo_id}@{ref.revision}"
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.cache_dir = cache_dir
        self.bytes_transferred = 0
        self._lock = threading.Lock()
        self._commit: str | None = None
        self._files: dict[str, RepoFile] | None = None

    def _remote(self, action: str, exc: Exception) -> Exception:
        """Translate a client error: unknown repo/revision/file is bad input, the rest is remote failure."""
        if isinstance(exc, (RepositoryNotFoundError, GatedRepoError)):
            return InputError(f"{self.label}: repository not found or not accessible", hint="check the repo id and HF_TOKEN")
        if isinstance(exc, RevisionNotFoundError):
            return InputError(f"{self.label}: revision {self.ref.revision!r} not found")
        if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
            return InputError(f"{self.label}: {action}: file not found")
        status = getattr(getattr(exc, "response", None), "status_code", None)
        detail = f"HTTP {status}" if status else exc.__class__.__name__
        return RemoteError(
            f"{self.label}: {action} failed after {self.attempts} attempts ({detail})", hint="retry later, or check HF_ENDPOINT"
        )

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return call(f"{self.label}: {action}", fn, RetryPolicy(self.attempts, self.backoff_seconds))
        except (HfHubHTTPError, httpx2.HTTPError) as exc:
            raise self._remote(action, exc) from None

    def resolve(self) -> str:
        if self._commit is None:
            info = self._call("resolve revision", lambda: self.api.model_info(self.ref.repo_id, revision=self.ref.revision))
            if not info.sha:
                raise RemoteError(f"{self.label}: the Hub returned no commit id")
            self._commit = info.sha
        return self._commit

    def _tree(self) -> dict[str, RepoFile]:
        if self._files is None:
            commit = self.resolve()
            entries = self._call("list files", lambda: list(self.api.list_repo_tree(self.ref.repo_id, revision=commit, recursive=True)))
            self._files = {entry.path: entry for entry in entries if isinstance(entry, RepoFile)}
        return self._files

    def _entry(self, name: str) -> RepoFile:
        check_repo_path(name, self.label)
        entry = self._tree().get(name)
        if entry is None:
            raise InputError(f"{self.label}: {name} is missing")
        return entry

    def exists(self, name: str) -> bool:
        check_repo_path(name, self.label)
        return name in self._tree()

    def size(self, name: str) -> int:
        return self._entry(name).size

    def lfs_sha256(self, name: str) -> str | None:
        lfs = self._entry(name).lfs
        return lfs.sha256 if lfs else None

    def fingerprint(self, name: str) -> str:
        return self.resolve()

    def _download(self, name: str) -> Path:
        commit = self.resolve()
        path = self._call(
            f"download {name}",
            lambda: hf_hub_download(
                self.ref.repo_id, name, revision=commit, endpoint=self.api.endpoint, token=self.api.token, cache_dir=self.cache_dir
            ),
        )
        return Path(path)

    def read(self, name: str) -> bytes:
        """A small file by one ranged read, under the same retry policy as tensor reads."""
        size = self.size(name)
        if size > MAX_SMALL_FILE_BYTES:
            raise InputError(f"{self.label}: {name} is larger than {MAX_SMALL_FILE_BYTES} bytes")
        return self.read_range(name, 0, size) if size else b""

    def local_path(self, name: str) -> Path:
        """The whole file, checked against the LFS sha256 the Hub records for it."""
        path = self._download(name)
        expected = self.lfs_sha256(name)
        if expected is not None and sha256_file(path) != expected:
            path.unlink(missing_ok=True)
            raise RemoteError(f"{self.label}: {name}: downloaded bytes do not match the Hub's LFS sha256")
        self._count(path.stat().st_size)
        return path

    def read_range(self, name: str, start: int, end: int) -> bytes:
        return b"".join(self.stream_range(name, start, end))

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_transferred += nbytes

    def _url(self, name: str) -> str:
        return f"{self.api.endpoint.rstrip('/')}/{self.ref.repo_id}/resolve/{self.resolve()}/{quote(name)}"

    def stream_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) in chunks; a dropped body is resumed from the next missing byte."""
        url = self._url(self._entry(name).path)
        headers = build_hf_headers(token=self.api.token, library_name="mtp-draft-pipeline")
        position, failures = start, 0
        while position < end:
            dropped: Exception | None = None
            try:
                with http_stream_backoff(
                    "GET",
                    url,
                    headers={**headers, "Range": f"bytes={position}-{end - 1}", "Accept-Encoding": "identity"},
                    follow_redirects=True,
                    max_retries=self.attempts - 1,
                    base_wait_time=self.backoff_seconds,
                    max_wait_time=8 * self.backoff_seconds,
                ) as response:
                    hf_raise_for_status(response)
                    _check_range_answer(response, position, self.label, name)
                    # A body error must not escape into the library's backoff context: it would
                    # retry inside a generator that already yielded. We resume here instead.
                    # Chunks are passed on as they arrive (no re-chunking buffer), so a drop loses
                    # no received byte and the resume starts exactly where the body stopped.
                    try:
                        for chunk in response.iter_bytes():
                            chunk = chunk[: end - position]
                            if not chunk:
                                break
                            position += len(chunk)
                            self._count(len(chunk))
                            yield chunk
                    except TRANSPORT_ERRORS as exc:
                        dropped = exc
            except TRANSPORT_ERRORS as exc:
                dropped = exc
            except HfHubHTTPError as exc:
                raise self._remote(f"read {name}", exc) from None
            if position < end:
                failures += 1
                if failures >= self.attempts:
                    raise self._remote(f"read {name}", dropped or httpx2.RemoteProtocolError("body ended early"))
                time.sleep(self.backoff_seconds * 2 ** min(failures - 1, 4))


def _check_range_answer(response: httpx2.Response, position: int, label: str, name: str) -> None:
    """A server that ignores Range would hand us the wrong bytes; refuse rather than corrupt."""
    content_range = response.headers.get("Content-Range", "")
    if response.status_code != 206 or not content_range.startswith(f"bytes {position}-"):
        raise RemoteError(f"{label}: {name}: the server did not honour the byte range (HTTP {response.status_code})")
