"""Calls to the Hub API with retries, and the translation of their failures into our errors.

Every write we make is guarded by `parent_commit` or is idempotent (an existing tag at the same
commit), so retrying a call whose answer was lost is safe: the worst case is a 412 and a re-plan.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from pipeline.errors import RemoteError

T = TypeVar("T")
RETRY_STATUS = (429, 500, 502, 503, 504)
DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF_SECONDS = 0.5


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


def call(action: str, fn: Callable[[], T], *, attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF_SECONDS) -> T:
    """Run `fn`, retrying 429/5xx and dropped connections; then fail with RemoteError (exit 3)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except HfHubHTTPError as exc:
            status = status_of(exc)
            if status not in RETRY_STATUS:
                raise
            if attempt == attempts:
                raise RemoteError(f"{action}: HTTP {status} after {attempts} attempts", hint="retry later") from None
            time.sleep(retry_after(exc) or backoff * 2 ** (attempt - 1))
        except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
            # hf_hub_download reports an unreachable or failing Hub as a missing local entry.
            if attempt == attempts:
                raise RemoteError(
                    f"{action}: {exc.__class__.__name__} after {attempts} attempts", hint="check HF_ENDPOINT and the network"
                ) from None
            time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
