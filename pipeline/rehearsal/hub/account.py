"""Repo-level routes of the embedded Hub: create, delete, settings, metadata validation, token exchange."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.rehearsal.hub.auth import AccessPolicy
from pipeline.rehearsal.hub.metadata import metadata_errors
from pipeline.rehearsal.hub.model import HubRequestError, RepoRef
from pipeline.rehearsal.hub.oidc import InvalidGrant, TrustedPublishers
from pipeline.rehearsal.hub.storage import HubStorage
from pipeline.rehearsal.hub.views import InvalidMetadata, front_matter
from pipeline.rehearsal.hub.wsgi import Request, Response, error_response, json_response


class AccountRoutes:
    """Handlers for what a repo owner does: they check admin rights themselves (the repo is in the body)."""

    storage: HubStorage
    access: AccessPolicy
    publishers: TrustedPublishers
    licenses: frozenset[str] | None  # the licence ids this Hub accepts; None: the committed copy

    def create_repo(self, request: Request) -> Response:
        payload = request.body.json_object()
        repo = repo_from_body(payload)
        self.access.check_admin(request.grant, repo)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{request.base_url}/{repo.url_path}"
        if not self.storage.create_repo(repo, private=private):
            return error_response(409, f"You already created this {repo.type} repo", extra={"url": url})
        return json_response(200, {"url": url, "name": repo.id, "id": repo.id})

    def delete_repo(self, request: Request) -> Response:
        repo = repo_from_body(request.body.json_object())
        self.access.check_admin(request.grant, repo)
        self.storage.delete_repo(repo)
        return json_response(200, {})

    def repo_settings(self, request: Request) -> Response:
        repo = request.repo()
        self.access.check_admin(request.grant, repo)
        visibility = request.body.json_object().get("visibility")
        if visibility not in (None, "public", "private"):
            raise HubRequestError("`visibility` must be public or private")
        if visibility is not None:
            self.storage.set_private(repo, visibility == "private")
        return json_response(200, {})

    def validate_yaml(self, request: Request) -> Response:
        content = request.body.json_object().get("content")
        if not isinstance(content, str):
            raise HubRequestError("`content` must be the README text")
        reasons = card_errors(content, self.licenses)
        if reasons:
            return error_response(400, reasons[0], extra={"errors": [{"message": r} for r in reasons], "warnings": []})
        return json_response(200, {"errors": [], "warnings": []})

    def token_exchange(self, request: Request) -> Response:
        try:
            answer = self.publishers.exchange(request.body.json_object(), request.base_url, self.access)
        except InvalidGrant as exc:
            body = {"error": "invalid_grant", "error_description": str(exc)}
            return json_response(400, body, [("X-Error-Message", f"invalid_grant: {exc}"[:1000])])
        return json_response(200, answer)


def repo_from_body(payload: Mapping[str, Any]) -> RepoRef:
    name, namespace = payload.get("name"), payload.get("organization")
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise HubRequestError("A repo id needs a namespace: create it as <namespace>/<name>")
    return RepoRef(payload.get("type") or "model", namespace, name)


def card_errors(readme: str, licenses: frozenset[str] | None = None) -> list[str]:
    """Why the Hub would refuse this README's metadata (unparsable YAML included)."""
    try:
        metadata = front_matter(readme)
    except InvalidMetadata as exc:
        return [str(exc)]
    return metadata_errors(metadata or {}, licenses)
