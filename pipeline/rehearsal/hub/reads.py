"""Read routes of the embedded Hub: repo info, refs, commits, paths-info, tree pages and resolve with Range."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from pipeline.rehearsal.hub.faults import FaultInjector
from pipeline.rehearsal.hub.model import DEFAULT_BRANCH, EntryNotFound, HubRequestError
from pipeline.rehearsal.hub.stats import ServerStats
from pipeline.rehearsal.hub.storage import HubStorage
from pipeline.rehearsal.hub.views import card_data, commit_json, describe, sibling_json
from pipeline.rehearsal.hub.wsgi import RangeNotSatisfiable, Request, Response, error_response, json_response, parse_range


class ReadRoutes:
    """Handlers that only read the storage."""

    storage: HubStorage
    stats: ServerStats
    _injector: FaultInjector
    page_size: int | None  # entries per tree page; None sends every entry at once
    cdn_url: str | None  # where LFS downloads are redirected; None serves them from the Hub origin
    download_key: bytes  # signs the redirect URLs the CDN origin accepts

    def repo_info(self, request: Request) -> Response:
        repo = request.repo()
        record = self.storage.repo_record(repo)
        commit = self.storage.resolve(repo, request.params.get("rev", DEFAULT_BRANCH))
        tree = self.storage.tree(commit)
        with_blobs = request.flag("blobs")
        info: dict[str, Any] = {
            "id": repo.id,
            "author": repo.namespace,
            "sha": commit.id,
            "private": record["private"],
            "gated": False,
            "disabled": False,
            "createdAt": record["createdAt"],
            "lastModified": commit.date,
            "tags": [],
            "siblings": [sibling_json(tree[path], with_blobs) for path in sorted(tree)],
        }
        card = card_data(self.storage, tree)
        if card is not None:
            info["cardData"] = card
        return json_response(200, info)

    def refs(self, request: Request) -> Response:
        refs = self.storage.refs(request.repo())

        def listed(names: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": prefix + n, "targetCommit": c} for n, c in sorted(names.items())]

        payload = {
            "branches": listed(refs.branches, "refs/heads/"),
            "tags": listed(refs.tags, "refs/tags/"),
            "converts": [],
            "pullRequests": [],
        }
        return json_response(200, payload)

    def commits(self, request: Request) -> Response:
        repo = request.repo()
        head = self.storage.resolve(repo, request.params["rev"])
        return json_response(200, [commit_json(commit) for commit in self.storage.history(repo, head)])

    # ---- reading trees and files ----------------------------------------------------------

    def paths_info(self, request: Request) -> Response:
        repo = request.repo()
        commit = self.storage.resolve(repo, request.params["rev"])
        tree = self.storage.tree(commit)
        form = request.body.form()
        expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        found = []
        for path in dict.fromkeys(p.strip("/") for p in form.get("paths", [])):
            if path in tree:
                found.append(describe(self.storage, repo, commit, path, folder=False, expand=expand))
            elif path and any(p.startswith(path + "/") for p in tree):
                found.append(describe(self.storage, repo, commit, path, folder=True, expand=expand))
        return json_response(200, found)

    def list_tree(self, request: Request) -> Response:
        repo = request.repo()
        commit = self.storage.resolve(repo, request.params["rev"])
        tree = self.storage.tree(commit)
        folder = request.params.get("path", "").strip("/")
        prefix = folder + "/" if folder else ""
        below = [path for path in tree if path.startswith(prefix)]
        if folder and not below:
            raise EntryNotFound(f"{folder} is not a folder at {request.params['rev']}")
        recursive, expand = request.flag("recursive"), request.flag("expand")
        files: list[str] = []
        folders: set[str] = set()
        for path in below:
            parts = path[len(prefix) :].split("/")
            if recursive:
                folders.update(prefix + "/".join(parts[:depth]) for depth in range(1, len(parts)))
                files.append(path)
            elif len(parts) == 1:
                files.append(path)
            else:
                folders.add(prefix + parts[0])
        listing = sorted([(p, False) for p in files] + [(p, True) for p in folders])
        start = _cursor(request)
        end = len(listing) if self.page_size is None else start + self.page_size
        entries = [describe(self.storage, repo, commit, p, folder=is_folder, expand=expand) for p, is_folder in listing[start:end]]
        # Like the Hub, a long listing comes in pages chained by `Link: <...>; rel="next"`.
        links = [("Link", f'<{_page_url(request, end)}>; rel="next"')] if end < len(listing) else []
        return json_response(200, entries, links)

    def resolve(self, request: Request) -> Response:
        repo = request.repo()
        commit = self.storage.resolve(repo, request.params["rev"])
        path = request.params["path"]
        self.stats.record_file_request(f"{repo.namespace}/{repo.name}", path)
        entry = self.storage.tree(commit).get(path)
        headers = [("X-Repo-Commit", commit.id)]
        if entry is None:
            return error_response(404, f"Entry not found: {path}", "EntryNotFound", headers=headers)
        if entry.lfs:
            headers += [("X-Linked-Etag", f'"{entry.sha256}"'), ("X-Linked-Size", str(entry.size))]
            if self.cdn_url is not None:
                # As on the Hub: LFS bytes come from another origin, through a signed URL.
                location = f"{self.cdn_url}/blobs/{entry.sha256}?signature={self.blob_signature(entry.sha256)}"
                headers += [("ETag", f'"{entry.sha256}"'), ("Location", location), ("Content-Length", "0")]
                return Response(302, headers)
        headers.append(("ETag", f'"{entry.sha256 if entry.lfs else entry.git_oid}"'))
        return self.bytes_response(request.method, request.header("Range"), entry.sha256, entry.size, headers)

    def blob_signature(self, sha256: str) -> str:
        return hmac.new(self.download_key, sha256.encode(), hashlib.sha256).hexdigest()

    def bytes_response(self, method: str, range_header: str | None, sha256: str, size: int, headers: list[tuple[str, str]]) -> Response:
        """A blob's bytes, or the part a `Range` header asks for (206), or 416 past its end."""
        headers = [*headers, ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
        try:
            span = parse_range(range_header, size)
        except RangeNotSatisfiable:
            headers.append(("Content-Range", f"bytes */{size}"))
            return error_response(416, "Requested range not satisfiable", headers=headers)
        start, end = span if span is not None else (0, size - 1)
        length = end - start + 1
        if span is not None:
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Content-Length", str(length)))
        status = 200 if span is None else 206
        if method == "HEAD":
            return Response(status, headers)
        return Response(status, headers, self._blob_body(sha256, start, length))

    def _blob_body(self, sha256: str, start: int, length: int) -> Iterator[bytes]:
        cut_at = self._injector.drop_limit(length)
        # A shorter body than Content-Length announced, then a closed connection: a drop.
        for chunk in self.storage.read_blob(sha256, start, length if cut_at is None else cut_at):
            self.stats.add_resolve_bytes_sent(len(chunk))
            yield chunk

    def xet_token(self, request: Request) -> Response:
        return error_response(501, "Xet is not supported by the embedded Hub: set HF_HUB_DISABLE_XET=1")


def _cursor(request: Request) -> int:
    value = (request.query.get("cursor") or ["0"])[-1]
    if not value.isdigit():
        raise HubRequestError(f"Invalid cursor {value!r}")
    return int(value)


def _page_url(request: Request, cursor: int) -> str:
    raw = str(request.environ.get("REQUEST_URI") or quote(str(request.environ.get("PATH_INFO", ""))))
    query = {key: values[-1] for key, values in request.query.items()}
    return f"{request.base_url}{raw.split('?', 1)[0]}?{urlencode({**query, 'cursor': cursor})}"
