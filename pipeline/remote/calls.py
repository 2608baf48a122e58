"""Calls to the Hub API under the recipe's retry budget, their failures turned into our errors.

Retrying happens in one layer, the bounded transport (`pipeline.remote.transport`); `call` only
sends a request again when a response body broke off after its headers arrived, which no
transport can see. Every write we make is guarded by `parent_commit` or is idempotent (an
existing tag at the same commit), so sending one again after a lost answer is safe: the worst
case is a 412 and a re-plan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OIDCError

from pipeline.remote.errors import anonymous_not_found, hub_error, status_of
from pipeline.remote.transport import DEFAULT_RETRIES, RETRY_EXCEPTIONS, RetriesExhausted, RetryPolicy, use_policy

__all__ = ["DEFAULT_RETRIES", "RetryPolicy", "call", "default_api", "status_of"]

T = TypeVar("T")
LIBRARY_NAME = "mtp-draft-pipeline"


def default_api() -> HfApi:
    """The client for this command: HF_ENDPOINT is read now, not when the library was imported."""
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, library_name=LIBRARY_NAME)


def _broken_body(exc: BaseException) -> bool:
    """A body that broke off mid-way: the one failure the transport cannot retry."""
    return isinstance(exc, RETRY_EXCEPTIONS) and not isinstance(exc, RetriesExhausted)


def call(
    action: str,
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_RETRIES,
    *,
    repo: str | None = None,
    permission: str = "read",
    passthrough: Collection[type[BaseException]] = (),
) -> T:
    """Run `fn` under `policy`; a Hub failure becomes a PipelineError naming `action` and `repo`.

    Exceptions of a `passthrough` type reach the caller as they are (e.g. RepositoryNotFoundError
    where a missing repo is an answer, not a failure), unless they are really a refused token. `permission` is what the call needs
    ("read" or "write"), for the message when the token lacks it.
    """
    use_policy(policy)
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except (HfHubHTTPError, httpx2.HTTPError, OIDCError, OSError, RuntimeError, ValueError) as exc:
            if passthrough and isinstance(exc, tuple(passthrough)) and (status_of(exc) not in (401, 403) or anonymous_not_found(exc)):
                raise
            if _broken_body(exc) and attempt < policy.attempts:
                continue
            error = hub_error(exc, action=action, repo=repo, permission=permission)
            if error is None:
                raise
            raise error from exc
    raise AssertionError("unreachable")
