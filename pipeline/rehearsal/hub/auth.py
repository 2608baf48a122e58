"""Who may do what on the embedded Hub: tokens, roles, fine-grained repo scopes.

Off by default (every request allowed, the demo-friendly mode). With at least one token or one
Trusted Publisher configured the server is strict, as the Hub is:

- a token that is sent but unknown or expired is refused on every route with 401 and
  `X-Error-Message: Invalid credentials in Authorization header` (the text huggingface_hub's
  `hf_raise_for_status` tests to tell a bad token from a missing repo);
- writes (create, preupload, LFS batch, commit, tags, branches, delete) need a token: 401 without
  one, 403 with a read token or one whose scope leaves the repo out;
- private repos are invisible: 401 RepoNotFound without a token, 404 RepoNotFound with a token
  that cannot see them, 403 only when the token's owner belongs to the repo's namespace (a
  fine-grained token of that namespace) but its scope leaves the repo out;
- creating or deleting a repo needs a write token without a repo scope: fine-grained and Trusted
  Publisher tokens may write to the repos they name and nothing else.

Assumed where the Hub's exact answers are unknown: the wording of the 401/403 messages, 403
(not 404) for a scoped token of the right namespace, and that repo-scoped tokens cannot create
repos (facts/hub-api.md §4 leaves that unverified, so the stricter answer is taken).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.rehearsal.hub.model import HubRequestError, RepoNotFound, RepoRef

ROLES = ("read", "write")
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


class Unauthorized(HubRequestError):
    status = 401


class Forbidden(HubRequestError):
    status = 403


class AnonymousRepoNotFound(RepoNotFound):
    """What an anonymous client is told about a repo it may not see, or that does not exist."""

    status = 401


@dataclass(frozen=True)
class Grant:
    """What one token allows: a role, optionally limited to some repos, until an expiry."""

    name: str
    role: str
    repos: frozenset[str] | None = None  # None: every repo (a classic token of an owner of everything)
    expires_at: float | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"token {self.name!r}: role must be one of {', '.join(ROLES)}, not {self.role!r}")

    def covers(self, repo: RepoRef) -> bool:
        return self.repos is None or repo.id in self.repos

    def member_of(self, namespace: str) -> bool:
        return self.repos is None or any(r.split("/", 1)[0] == namespace for r in self.repos)

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def parse_token_spec(spec: str) -> tuple[str, Grant]:
    """`VALUE:ROLE[:REPO...]`, e.g. `hf_ci:write:org/draft`: the token, its role and repo scope."""
    parts = [p.strip() for p in spec.strip().split(":")]
    if len(parts) < 2 or not parts[0] or parts[1] not in ROLES:
        raise ValueError(f"a token is VALUE:ROLE[:REPO...] with ROLE one of {', '.join(ROLES)}")
    repos = [p for p in parts[2:] if p]
    for repo in repos:
        if repo.count("/") != 1:
            raise ValueError(f"token scope {repo!r}: a repo is namespace/name")
    name = f"{parts[0][:4]}…({parts[1]})"  # never the whole secret, even in logs
    return parts[0], Grant(name, parts[1], frozenset(repos) if repos else None)


def load_token_file(path: Path) -> list[str]:
    """Token specs, one a line; blank lines and `#` comments are skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class AccessPolicy:
    """The tokens the server knows; strict as soon as it knows one (or a publisher issues them)."""

    tokens: dict[str, Grant] = field(default_factory=dict)
    strict: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> AccessPolicy:
        tokens = dict(parse_token_spec(spec) for spec in specs)
        return cls(tokens, strict=bool(tokens))

    def add(self, spec: str) -> None:
        """Accept one more token, given as `VALUE:ROLE[:REPO...]`; the server becomes strict."""
        value, grant = parse_token_spec(spec)
        with self._lock:
            self.tokens[value] = grant
            self.strict = True

    def issue(self, grant: Grant) -> str:
        """A fresh token for `grant` (Trusted Publisher exchanges); the server becomes strict."""
        value = "hf_oidc_" + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[value] = grant
            self.strict = True
        return value

    def identify(self, headers: Mapping[str, Any]) -> Grant | None:
        """The grant of the request's bearer token; None for an anonymous request."""
        header = headers.get("HTTP_AUTHORIZATION")
        if not header or not self.strict:
            return None
        scheme, _, value = str(header).partition(" ")
        grant = self._lookup(value.strip()) if scheme.lower() == "bearer" else None
        if grant is None or not grant.live(time.time()):
            raise Unauthorized(INVALID_CREDENTIALS)
        return grant

    def _lookup(self, value: str) -> Grant | None:
        with self._lock:
            known = list(self.tokens.items())
        # Compare every known token in constant time, so timing does not reveal a prefix.
        found = None
        for token, grant in known:
            if hmac.compare_digest(token.encode(), value.encode()):
                found = grant
        return found

    def check_read(self, grant: Grant | None, repo: RepoRef, record: Mapping[str, Any] | None) -> None:
        """Refuse to show a repo that does not exist or that this caller may not see."""
        if not self.strict:
            return
        if record is None or (record.get("private") and not (grant and grant.covers(repo))):
            if grant is None:
                raise AnonymousRepoNotFound("Repository not found")
            if record is not None and grant.member_of(repo.namespace):
                raise Forbidden(f"This fine-grained token has no read access to {repo.id}")
            raise RepoNotFound(f"Repository {repo.id} not found")

    def check_write(self, grant: Grant | None, repo: RepoRef, record: Mapping[str, Any] | None) -> None:
        if not self.strict:
            return
        if grant is None:
            raise Unauthorized(f"You must be authenticated to write to {repo.id}")
        self.check_read(grant, repo, record)
        if grant.role != "write":
            raise Forbidden(f"This token has the read role: writing to {repo.id} needs a token with write access")
        if not grant.covers(repo):
            raise Forbidden(f"This fine-grained token has no write access to {repo.id}")

    def check_admin(self, grant: Grant | None, repo: RepoRef) -> None:
        """Creating or deleting a repo: a write token that is not limited to some repos."""
        if not self.strict:
            return
        if grant is None:
            raise Unauthorized(f"You must be authenticated to create or delete {repo.id}")
        if grant.role != "write":
            raise Forbidden(f"This token has the read role: creating or deleting {repo.id} needs a token with write access")
        if grant.repos is not None:
            raise Forbidden(f'You don\'t have the rights to create or delete a model under the namespace "{repo.namespace}"')
