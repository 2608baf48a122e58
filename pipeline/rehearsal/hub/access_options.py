"""Strict-mode settings of `hub serve` from its command-line options, refused with one clear line."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError
from pipeline.rehearsal.hub.auth import AccessPolicy, load_token_file
from pipeline.rehearsal.hub.oidc import GITHUB_ISSUER, Publisher, TrustedPublishers


def parse_publisher(spec: str) -> Publisher:
    """`'org/name CLAIM=VALUE...'`: the repo, then the claims an id token must carry exactly."""
    repo, *pairs = spec.split()
    claims = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    if repo.count("/") != 1 or not claims or len(claims) != len(pairs):
        raise ValueError("a publisher is 'namespace/name CLAIM=VALUE ...' with at least one claim")
    return Publisher(repo, claims)


def access_from_options(
    tokens: list[str], tokens_file: str | None, publishers: list[str], key_file: str | None
) -> tuple[AccessPolicy, TrustedPublishers]:
    specs = list(tokens)
    if tokens_file:
        try:
            specs += load_token_file(Path(tokens_file))
        except OSError as exc:
            raise InputError(f"--tokens-file {tokens_file}: {exc.strerror}") from None
    try:
        access = AccessPolicy.from_specs(specs)
    except ValueError as exc:
        raise InputError(f"--token: {exc}", hint="e.g. --token hf_ci:write:org/draft") from None
    try:
        configured = [parse_publisher(spec) for spec in publishers]
    except ValueError as exc:
        raise InputError(f"--trusted-publisher: {exc}") from None
    keys: dict[str, bytes] = {}
    if configured:
        if not key_file:
            raise InputError("--trusted-publisher needs --oidc-key-file: the key id tokens are signed with")
        try:
            keys[GITHUB_ISSUER] = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise InputError(f"--oidc-key-file {key_file}: {exc.strerror}") from None
    return access, TrustedPublishers(configured, keys)
