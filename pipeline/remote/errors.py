"""The one place Hub failures become the project's errors: one line, the right exit code, a hint.

401 (no token, or one the Hub refused) and 403 (a token without the permission) are bad
credentials, exit 2, never retried and never called an outage. A refused Trusted Publisher
exchange is bad credentials too. A missing repo, revision or file is bad input (exit 2); a
refusal of what we sent (400, 409, 422) is a refused check (exit 1); a remote that kept failing
through the retry budget is exit 3. The token itself never appears in a message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx2
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OIDCError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from pipeline.errors import CheckFailed, InputError, PipelineError, RemoteError
from pipeline.remote.transport import RetriesExhausted

OIDC_ENV = "HF_OIDC_RESOURCE"
TOKEN_EXCHANGE_PATH = "/oauth/token"
# Where GitHub Actions mints id tokens (read by huggingface_hub's _oidc.py).
ID_TOKEN_URL_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"


def credentials_hint(permission: str, repo: str) -> str:
    """What to set: a token with the permission, or (for writes) a Trusted Publisher exchange."""
    hint = f"set HF_TOKEN to a token with {permission} access to {repo}"
    return hint + (f", or {OIDC_ENV}={repo} to publish through a Trusted Publisher" if permission == "write" else "")


class BranchMoved(CheckFailed):
    """The branch head is no longer the commit a write was planned against (HTTP 412)."""


class Conflict(CheckFailed):
    """The Hub already holds what we asked it to create (HTTP 409), e.g. a tag."""


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def anonymous_not_found(exc: BaseException) -> bool:
    """A 401 "repository not found" to a request that carried no token: to an anonymous caller the
    Hub answers so for a repo that is missing and for one that is private alike."""
    response = getattr(exc, "response", None)
    return (
        status_of(exc) == 401
        and response is not None
        and response.headers.get("X-Error-Code") == "RepoNotFound"
        and "authorization" not in response.request.headers
    )


def server_message(exc: HfHubHTTPError) -> str:
    """What the Hub said, from `X-Error-Message` or the JSON body, on one line."""
    response = exc.response
    message = response.headers.get("X-Error-Message") or exc.server_message
    if not message:
        try:
            body: Any = response.json()
        except (ValueError, httpx2.ResponseNotRead):
            body = None
        if isinstance(body, dict):
            error, description = body.get("error"), body.get("error_description")
            message = f"{error}: {description}" if error and description else str(error or description or "")
    return " ".join(str(message or f"HTTP {response.status_code}").split())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes: the client wraps HTTP errors in RuntimeError and friends."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _endpoint(url: httpx2.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode()}"


def hub_error(exc: BaseException, *, action: str, repo: str | None = None, permission: str = "read") -> PipelineError | None:
    """The project's error for a Hub failure anywhere in `exc`'s chain; None when it is not one."""
    for link in _chain(exc):
        if isinstance(link, PipelineError):
            return link
        if isinstance(link, RetriesExhausted):
            return RemoteError(
                f"{action}: the Hub answered {link.detail} to the last of {link.attempts} attempt(s)"
                + (f" on {repo}" if repo and repo not in action else ""),
                hint="the Hub kept failing; retry later (the recipe's retries: section bounds each request)",
            )
        if isinstance(link, OIDCError):
            first_line = str(link).strip().splitlines()[0] if str(link).strip() else "no id token"
            return InputError(f"{OIDC_ENV} is set but no OIDC id token is available: {first_line}", hint=_oidc_hint())
        if isinstance(link, HfHubHTTPError) and getattr(link, "response", None) is not None:
            return _from_response(link, action, repo, permission)
        if isinstance(link, httpx2.TransportError):
            return RemoteError(f"{action}: {link.__class__.__name__} talking to the Hub", hint="retry later, or check HF_ENDPOINT")
    return None


def _oidc_hint() -> str:
    return (
        "in GitHub Actions the job needs `permissions: id-token: write`; elsewhere set HF_OIDC_ID_TOKEN, "
        f"or unset {OIDC_ENV} to use HF_TOKEN"
    )


def _from_response(exc: HfHubHTTPError, action: str, repo: str | None, permission: str) -> PipelineError:
    response = exc.response
    status = response.status_code
    request = response.request
    endpoint = _endpoint(request.url)
    said = server_message(exc)
    target = repo or "the repo"
    subject = action if repo is None or repo in action else f"{repo}: {action}"
    id_token_url = os.environ.get(ID_TOKEN_URL_ENV, "").split("?", 1)[0]
    if id_token_url and str(request.url).startswith(id_token_url):
        return InputError(f"the CI provider refused to mint an OIDC id token (HTTP {status}: {said})", hint=_oidc_hint())
    if request.url.path.endswith(TOKEN_EXCHANGE_PATH):
        resource = os.environ.get(OIDC_ENV) or "the resource"
        return InputError(
            f"{endpoint} refused the Trusted Publisher exchange for {resource}: {said}",
            hint=f"the id token's claims must match the publisher configured on {resource} exactly "
            f"(e.g. sub repo:OWNER/REPO:environment:NAME); check {OIDC_ENV}",
        )
    if status == 401:
        source = f"the token from the Trusted Publisher exchange ({OIDC_ENV})" if os.environ.get(OIDC_ENV) else "HF_TOKEN"
        sent = "the Hub refused the token sent" if "authorization" in request.headers else "no token was sent"
        return InputError(
            f"{subject}: {source} is missing or invalid for {endpoint} (HTTP 401: {sent})",
            hint=f"set HF_TOKEN to a valid token with {permission} access to {target}; releases may instead set "
            f"{OIDC_ENV}=<destination> to use a Trusted Publisher",
        )
    if status == 403 and not isinstance(exc, GatedRepoError):
        return InputError(
            f"{subject}: the token lacks {permission} permission on {target} (HTTP 403: {said})",
            hint=credentials_hint(permission, target),
        )
    if isinstance(exc, (RepositoryNotFoundError, GatedRepoError)):
        return InputError(
            f"{subject}: repository {target} not found, or private and not visible to this token", hint="check the repo id and HF_TOKEN"
        )
    if isinstance(exc, RevisionNotFoundError):
        return InputError(f"{subject}: revision not found ({said})")
    if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        return InputError(f"{subject}: file not found ({said})")
    if status == 412:
        return BranchMoved(f"{subject}: the branch moved since the release was planned (HTTP 412)", hint="run the command again")
    if status == 409:
        return Conflict(f"{subject}: {said} (HTTP 409)")
    if 400 <= status < 500:
        return CheckFailed(f"{subject}: the Hub refused the request (HTTP {status}: {said})")
    return RemoteError(f"{subject}: the Hub answered HTTP {status} ({said})", hint="retry later, or check HF_ENDPOINT")
