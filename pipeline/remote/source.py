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
from huggingface_hub.errors import HfHubHTTPError, OIDCError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

from pipeline.checkpoint.files import sha256_file
from pipeline.checkpoint.sources import MAX_SMALL_FILE_BYTES, check_repo_path
from pipeline.errors import InputError, PipelineError, RemoteError
from pipeline.recipe.loader import HubRef
from pipeline.remote.calls import LIBRARY_NAME, RetryPolicy, call
from pipeline.remote.errors import hub_error
from pipeline.remote.transport import RETRY_EXCEPTIONS, RetriesExhausted, use_policy

DEFAULT_ATTEMPTS = 6  # a dropped body or a 5xx/429 is retried this many times before exit 3
DEFAULT_BACKOFF_SECONDS = 0.5
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
        self._policy = RetryPolicy(attempts, backoff_seconds)
        self._lock = threading.Lock()
        self._commit: str | None = None
        self._files: dict[str, RepoFile] | None = None

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return call(f"{self.label}: {action}", fn, self._policy, repo=self.ref.repo_id, passthrough=(RevisionNotFoundError,))
        except RevisionNotFoundError:
            raise InputError(f"{self.label}: revision {self.ref.revision!r} not found") from None

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
        action = f"{self.label}: read {name}"
        try:
            headers = build_hf_headers(token=self.api.token, library_name=LIBRARY_NAME)
        except (OIDCError, HfHubHTTPError, httpx2.HTTPError) as exc:
            raise _translated(exc, action, self.ref.repo_id) from exc
        use_policy(self._policy)
        position, failures = start, 0
        while position < end:
            dropped: Exception | None = None
            try:
                # The bounded transport retries statuses and failed connects; this loop resumes bodies.
                with http_stream_backoff(
                    "GET",
                    url,
                    headers={**headers, "Range": f"bytes={position}-{end - 1}", "Accept-Encoding": "identity"},
                    follow_redirects=True,
                    max_retries=0,
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
                    except RETRY_EXCEPTIONS as exc:
                        dropped = exc
            except RetriesExhausted as exc:
                raise _translated(exc, action, self.ref.repo_id) from exc
            except RETRY_EXCEPTIONS as exc:
                dropped = exc
            except HfHubHTTPError as exc:
                raise _translated(exc, action, self.ref.repo_id) from exc
            if position < end:
                failures += 1
                if failures >= self.attempts:
                    raise RemoteError(
                        f"{action}: the body broke off {failures} time(s) ({(dropped or 'ended early')!r})",
                        hint="retry later, or check HF_ENDPOINT",
                    )
                time.sleep(self._policy.wait(failures, None))


def _translated(exc: BaseException, action: str, repo: str) -> PipelineError:
    return hub_error(exc, action=action, repo=repo) or RemoteError(f"{action}: {exc.__class__.__name__}")


def _check_range_answer(response: httpx2.Response, position: int, label: str, name: str) -> None:
    """A server that ignores Range would hand us the wrong bytes; refuse rather than corrupt."""
    content_range = response.headers.get("Content-Range", "")
    if response.status_code != 206 or not content_range.startswith(f"bytes {position}-"):
        raise RemoteError(f"{label}: {name}: the server did not honour the byte range (HTTP {response.status_code})")
