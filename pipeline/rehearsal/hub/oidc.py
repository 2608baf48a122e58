"""Trusted Publishers on the embedded Hub: the RFC 8693 token exchange, and an id-token issuer.

The exchange is the request huggingface_hub sends (`_oidc.py` `exchange_oidc_token`): POST
/oauth/token with JSON `grant_type` (token exchange), `subject_token_type` (id token),
`subject_token` and `resource` (the repo). The server checks the id token's signature, issuer,
audience (the Hub URL the client asked for: the client requests `aud` = its endpoint,
`_oidc.py` `get_oidc_token`), expiry, and every claim of the publisher configured on that repo,
each matched exactly (facts/hub-api.md §4). It answers a repo-scoped write token valid for one
hour, or 400 `invalid_grant` with a description.

Id tokens here are HS256 JWTs signed with a key the issuer and the server share: a rehearsal has
no CA and no JWKS endpoint, and a shared key still makes the signature check real.
`IdTokenIssuer` plays GitHub Actions' side (`ACTIONS_ID_TOKEN_REQUEST_URL` /
`ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answered with `{"value": <jwt>}`) for end-to-end rehearsals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pipeline.rehearsal.hub.auth import AccessPolicy, Grant

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
TOKEN_LIFETIME_SECONDS = 3600


class InvalidGrant(Exception):
    """The exchange is refused; the message is the `error_description` the client shows."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_id_token(claims: Mapping[str, Any], key: bytes) -> str:
    """An HS256 JWT carrying `claims`."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def mint_id_token(
    key: bytes,
    *,
    audience: str,
    subject: str,
    issuer: str = GITHUB_ISSUER,
    lifetime_seconds: int = 300,
    now: float | None = None,
    claims: Mapping[str, str] | None = None,
) -> str:
    """An id token shaped like GitHub Actions' (iss, aud, sub, iat, nbf, exp, plus `claims`)."""
    issued = int(time.time() if now is None else now)
    body = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_seconds,
        **(claims or {}),
    }
    return sign_id_token(body, key)


def verify_id_token(token: str, keys: Mapping[str, bytes], now: float) -> dict[str, Any]:
    """The claims of a well-signed, current id token from a known issuer; InvalidGrant otherwise."""
    try:
        header_text, payload_text, signature_text = token.split(".")
        header = json.loads(_unb64(header_text))
        claims = json.loads(_unb64(payload_text))
        signature = _unb64(signature_text)
    except ValueError:
        raise InvalidGrant("The subject token is not a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise InvalidGrant("The subject token must be an HS256 JWT")
    key = keys.get(str(claims.get("iss")))
    if key is None:
        raise InvalidGrant(f"Unknown issuer {claims.get('iss')!r}")
    expected = hmac.new(key, f"{header_text}.{payload_text}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise InvalidGrant("The subject token's signature is invalid")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= now:
        raise InvalidGrant("The subject token has expired")
    if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] > now + 60:
        raise InvalidGrant("The subject token is not valid yet")
    return claims


@dataclass(frozen=True)
class Publisher:
    """A repo publisher: the issuer and the claims an id token must carry, matched exactly."""

    repo: str
    claims: Mapping[str, str]
    issuer: str = GITHUB_ISSUER
    read_only: bool = False


@dataclass
class TrustedPublishers:
    """The publishers configured per repo and the issuers' signing keys."""

    publishers: list[Publisher] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict)

    def exchange(self, payload: Mapping[str, Any], audience: str, access: AccessPolicy, now: float | None = None) -> dict[str, Any]:
        """The token-exchange answer for `payload`, or InvalidGrant."""
        now = time.time() if now is None else now
        if payload.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            raise InvalidGrant(f"grant_type must be {TOKEN_EXCHANGE_GRANT}")
        if payload.get("subject_token_type") != ID_TOKEN_TYPE:
            raise InvalidGrant(f"subject_token_type must be {ID_TOKEN_TYPE}")
        resource, token = payload.get("resource"), payload.get("subject_token")
        if not isinstance(resource, str) or not isinstance(token, str):
            raise InvalidGrant("resource and subject_token are required")
        claims = verify_id_token(token, self.keys, now)
        if claims.get("aud") != audience:
            raise InvalidGrant(f"The subject token's audience must be {audience}")
        candidates = [p for p in self.publishers if p.repo == resource and p.issuer == claims.get("iss")]
        if not candidates:
            raise InvalidGrant(f"No trusted publisher is configured on {resource} for this issuer")
        for publisher in candidates:
            mismatched = sorted(name for name, value in publisher.claims.items() if claims.get(name) != value)
            if not mismatched:
                grant = Grant(
                    f"oidc:{resource}", "read" if publisher.read_only else "write", frozenset({resource}), now + TOKEN_LIFETIME_SECONDS
                )
                return {"access_token": access.issue(grant), "token_type": "bearer", "expires_in": TOKEN_LIFETIME_SECONDS}
        raise InvalidGrant(f"The subject token's claims do not match the trusted publisher of {resource}: {', '.join(mismatched)}")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class IdTokenIssuer:
    """GitHub Actions' id-token endpoint in miniature, in a background thread.

    Point `ACTIONS_ID_TOKEN_REQUEST_URL` at `url` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` at
    `request_token`; each GET `?audience=...` answers a freshly minted token with `claims`.
    """

    def __init__(
        self, key: bytes, claims: Mapping[str, str], issuer: str = GITHUB_ISSUER, request_token: str = "gha-request-token"
    ) -> None:
        self.key = key
        self.claims = dict(claims)
        self.issuer = issuer
        self.request_token = request_token
        self.requests = 0
        self._httpd: WSGIServer | None = None

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.requests += 1
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.request_token}":
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'{"message": "Bad request token"}']
        audience = (parse_qs(environ.get("QUERY_STRING", "")).get("audience") or [""])[-1]
        subject = self.claims.get("sub", "")
        extra = {k: v for k, v in self.claims.items() if k != "sub"}
        value = mint_id_token(self.key, audience=audience, subject=subject, issuer=self.issuer, claims=extra)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"value": value}).encode()]

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("The issuer is not running")
        return f"http://127.0.0.1:{self._httpd.server_port}/token"

    def __enter__(self) -> IdTokenIssuer:
        self._httpd = make_server("127.0.0.1", 0, self.app, handler_class=_QuietHandler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
