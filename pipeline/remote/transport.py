"""The one retry layer for every Hub request, so the recipe's `retries` bounds them all.

huggingface_hub retries some calls on its own (tree pages, preupload, LFS batch and PUT, the
commit) through `http_backoff`: 5 more tries, sleeping 1 to 8 s (utils/_http.py,
`_http_backoff_base`, `_DEFAULT_RETRY_ON_STATUS_CODES`). Stacked under our own retries that
made a 503 storm cost dozens of requests and minutes nobody could predict. Instead, the
client's shared httpx2 session (installed with `set_client_factory`) uses this transport, which
tries each request at most `attempts` times, sleeping `backoff_seconds * 2**k` between tries,
and then raises `RetriesExhausted`: a transport error the library does not retry, so no other
layer adds a try.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx2
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import set_client_factory

# 408 and 429 and the 5xx a proxy or an overloaded Hub answers; the library retries the same set.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Failures before an answer arrived: the request may be sent again.
RETRY_EXCEPTIONS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one Hub request before reporting the remote as failed (exit 3).

    Try k (k >= 1) is followed by a wait of `backoff_seconds * 2**(k-1)`, so `attempts` tries
    wait `backoff_seconds * (2**(attempts-1) - 1)` seconds in all. A `Retry-After` answer may
    lengthen a wait up to the longest scheduled one, never beyond: whatever the Hub says, one
    request never waits more than `worst_case_seconds`.
    """

    attempts: int = 6
    backoff_seconds: float = 0.5

    @property
    def longest_wait(self) -> float:
        return self.backoff_seconds * 2 ** max(self.attempts - 2, 0)

    def wait(self, tried: int, retry_after: float | None) -> float:
        scheduled = self.backoff_seconds * 2 ** (tried - 1)
        if retry_after is None:
            return scheduled
        return max(scheduled, min(retry_after, self.longest_wait))

    @property
    def scheduled_seconds(self) -> float:
        """The waits of a request tried `attempts` times when the Hub sends no Retry-After."""
        return self.backoff_seconds * (2 ** (self.attempts - 1) - 1)

    @property
    def worst_case_seconds(self) -> float:
        return (self.attempts - 1) * self.longest_wait


DEFAULT_RETRIES = RetryPolicy()


class RetriesExhausted(httpx2.TransportError):
    """A request still failed after the policy's last try; not retried by anyone."""

    def __init__(self, request: httpx2.Request, attempts: int, detail: str) -> None:
        super().__init__(f"{request.method} {request.url.path}: {detail} after {attempts} attempt(s)", request=request)
        self.attempts = attempts
        self.detail = detail


_installed = False
_policy_lock = threading.Lock()
_policy: RetryPolicy = DEFAULT_RETRIES


def use_policy(policy: RetryPolicy) -> None:
    """Bound every following Hub request by `policy`, and make sure the bounded transport is in use."""
    global _policy
    with _policy_lock:
        _policy = policy
    _install()


def current_policy() -> RetryPolicy:
    return _policy


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _rewinder(request: httpx2.Request) -> Callable[[], None] | None:
    """How to send the request body again, or None when it cannot be replayed.

    Bodies given as bytes replay as they are. A body streamed from a file (LFS uploads) is
    rewound to where it started; httpx2 keeps that file as the stream's `_stream`.
    """
    stream = request.stream
    if isinstance(stream, httpx2.ByteStream):
        return lambda: None
    source = getattr(stream, "_stream", None)
    if source is not None and callable(getattr(source, "seek", None)) and callable(getattr(source, "tell", None)):
        start = source.tell()
        return lambda: source.seek(start)
    return None


class BoundedRetryTransport(httpx2.BaseTransport):
    """Sends each request at most `attempts` times under the current policy."""

    def __init__(self, inner: httpx2.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self._inner = inner or httpx2.HTTPTransport()
        self._sleep = sleep

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        policy = current_policy()
        rewind = _rewinder(request)
        tried = 0
        while True:
            tried += 1
            retry_after = None
            try:
                response = self._inner.handle_request(request)
            except RETRY_EXCEPTIONS as exc:
                detail = exc.__class__.__name__
                if tried >= policy.attempts or rewind is None:
                    raise RetriesExhausted(request, tried, detail) from exc
            else:
                if response.status_code not in RETRY_STATUS:
                    return response
                detail = f"HTTP {response.status_code}"
                retry_after = _retry_after(response)
                response.close()
                if tried >= policy.attempts or rewind is None:
                    raise RetriesExhausted(request, tried, detail)
            self._sleep(policy.wait(tried, retry_after))
            rewind()

    def close(self) -> None:
        self._inner.close()


def _bounded_client() -> httpx2.Client:
    # The library's own client settings (request hook, redirects, no timeout), over our transport.
    return httpx2.Client(
        transport=BoundedRetryTransport(),
        event_hooks={"request": [hf_http.hf_request_event_hook]},
        follow_redirects=True,
        timeout=None,
    )


def _install() -> None:
    global _installed
    with _policy_lock:
        if _installed:
            return
        _installed = True
    set_client_factory(_bounded_client)
