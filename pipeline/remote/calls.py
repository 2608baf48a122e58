"""Calls to the Hub API with retries, and the translation of their failures into our errors.

Every write we make is guarded by `parent_commit` or is idempotent (an existing tag at the same
commit), so retrying a call whose answer was lost is safe: the worst case is a 412 and a re-plan.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from pipeline.errors import RemoteError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a Hub call before reporting the remote as failed (exit 3)."""

    attempts: int = 6
    backoff_seconds: float = 0.5


DEFAULT_RETRIES = RetryPolicy()

RETRY_STATUS = (429, 500, 502, 503, 504)


def default_api() -> HfApi:
    """The client for this command: HF_ENDPOINT is read now, not when the library was imported."""
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, library_name="mtp-draft-pipeline")


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _failure(exc: BaseException) -> str | None:
    """A short description when `exc` is a failure worth retrying, else None.

    The client wraps upload failures in RuntimeError; the HTTP error is its cause.
    """
    if isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)):
        return None
    if isinstance(exc, HfHubHTTPError):
        status = status_of(exc)
        return f"HTTP {status}" if status in RETRY_STATUS else None
    if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError)):
        # hf_hub_download reports an unreachable or failing Hub as a missing local entry.
        return exc.__class__.__name__
    return None


def call(action: str, fn: Callable[[], T], policy: RetryPolicy = DEFAULT_RETRIES) -> T:
    """Run `fn`, retrying 429/5xx and dropped connections; then fail with RemoteError (exit 3)."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except (HfHubHTTPError, httpx2.TransportError, LocalEntryNotFoundError, RuntimeError) as exc:
            detail = _failure(exc)
            if detail is None:
                raise
            # An upload error arrives wrapped after the client's own retries: retrying again would
            # multiply the wait without changing the odds.
            if attempt == policy.attempts or isinstance(exc, RuntimeError):
                tries = f" after {attempt} attempts" if attempt > 1 else " (after the client's own retries)"
                raise RemoteError(f"{action}: {detail}{tries}", hint="retry later, or check HF_ENDPOINT") from None
            time.sleep(retry_after(exc.__cause__ or exc) or policy.backoff_seconds * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
