"""The embedded Hub's WSGI app: the Hub HTTP API the huggingface_hub client needs.

The real client talks to it exactly as to huggingface.co (design §8; routes from
facts/hub-api.md §6): repo create, validate-yaml, repo info, preupload, LFS batch and PUT,
ndjson commit, tags, branches, refs, commits, paths-info, tree, and resolve with Range.
Xet is refused (501), so clients must run with `HF_HUB_DISABLE_XET=1`. There is no auth:
any token is accepted, and none is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from pipeline.rehearsal.hub.faults import ANY_ROUTE, FaultInjector, FaultPlan
from pipeline.rehearsal.hub.stats import ServerStats
from pipeline.rehearsal.hub.storage import (
    DEFAULT_BRANCH,
    AddFile,
    DeleteFile,
    DeleteFolder,
    EntryNotFound,
    FileEntry,
    HubRequestError,
    HubStorage,
    Operation,
    RepoRef,
    lfs_entry,
    wants_lfs,
)
from pipeline.rehearsal.hub.views import (
    InvalidMetadata,
    card_data,
    commit_json,
    describe,
    front_matter,
    sibling_json,
)
from pipeline.rehearsal.hub.wsgi import (
    RangeNotSatisfiable,
    Request,
    RequestBody,
    Response,
    error_response,
    json_response,
    parse_range,
)

CONCURRENT_FILE = "CONCURRENT_WRITER.md"  # what the race fault's other writer commits
logger = logging.getLogger(__name__)

_API_REPO = r"/api/(?P<plural>models|datasets|spaces)/(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_WEB_REPO = r"/(?:(?P<plural>datasets|spaces)/)?(?P<namespace>[^/]+)/(?P<name>[^/]+?)"
_REV = r"(?P<rev>[^/]+)"
# The route name counted for requests that match no route.
UNKNOWN_ROUTE = "unknown"

WsgiStartResponse = Callable[..., Any]


class HubApp:
    """The WSGI application: match a route, apply due faults, run the handler, count it."""

    def __init__(self, storage: HubStorage, stats: ServerStats, faults: FaultPlan | None = None) -> None:
        self.storage = storage
        self.stats = stats
        self.faults = faults or FaultPlan()

    @property
    def faults(self) -> FaultPlan:
        return self._injector.plan

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        plan = plan or FaultPlan()
        if plan.error_route not in ROUTE_NAMES | {ANY_ROUTE, UNKNOWN_ROUTE}:
            raise ValueError(f"error_route {plan.error_route!r} is none of {sorted(ROUTE_NAMES)}")
        # A new injector restarts the "first K" counts for the new plan.
        self._injector = FaultInjector(plan, self.stats)

    def __call__(self, environ: dict[str, Any], start_response: WsgiStartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        route, params, path_known = _find_route(method, _raw_path(environ))
        name = route.name if route else UNKNOWN_ROUTE
        self.stats.record_request(method, name)
        injector = self._injector
        body = RequestBody(environ)
        try:
            response = self._respond(route, params, path_known, body, environ, injector)
        finally:
            body.drain()
        start_response(response.status_line, response.headers)
        if method == "HEAD":
            _close(response.body)
            return []
        return injector.pace(response.body)

    def _respond(
        self,
        route: Route | None,
        params: dict[str, str],
        path_known: bool,
        body: RequestBody,
        environ: Mapping[str, Any],
        injector: FaultInjector,
    ) -> Response:
        if route is None:
            status = 405 if path_known else 404
            return error_response(status, "Method not allowed" if path_known else "Not found")
        injected = injector.error_for(route.name)
        if injected is not None:
            headers = [] if injected.retry_after is None else [("Retry-After", str(injected.retry_after))]
            return error_response(injected.status, "Injected fault", headers=headers)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        request = Request(environ["REQUEST_METHOD"].upper(), params, query, body, environ)
        try:
            if route.name == "commit" and injector.race_due():
                self._concurrent_writer(request)
            response = route.handler(self, request)
        except HubRequestError as exc:
            return error_response(exc.status, exc.message, exc.code)
        except Exception:
            logger.exception("embedded Hub failed on %s", route.name)
            return error_response(500, "Internal server error")
        if route.writes and response.status < 300:
            self.stats.record_write()
        return response

    # ---- repos ------------------------------------------------------------------------------

    def create_repo(self, request: Request) -> Response:
        payload = _json_object(request.body)
        name, namespace = payload.get("name"), payload.get("organization")
        if not isinstance(name, str) or not isinstance(namespace, str):
            raise HubRequestError("A repo id needs a namespace: create it as <namespace>/<name>")
        repo = RepoRef(payload.get("type") or "model", namespace, name)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{request.base_url}/{repo.url_path}"
        if not self.storage.create_repo(repo, private=private):
            return error_response(409, f"You already created this {repo.type} repo", extra={"url": url})
        return json_response(200, {"url": url, "name": repo.id, "id": repo.id})

    def validate_yaml(self, request: Request) -> Response:
        content = _json_object(request.body).get("content")
        if not isinstance(content, str):
            raise HubRequestError("`content` must be the README text")
        try:
            front_matter(content)
        except InvalidMetadata as exc:
            return error_response(400, str(exc), extra={"errors": [{"message": str(exc)}], "warnings": []})
        return json_response(200, {"errors": [], "warnings": []})

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

    # ---- uploads and commits ----------------------------------------------------------------

    def preupload(self, request: Request) -> Response:
        repo = request.repo()
        commit = self.storage.resolve(repo, request.params["rev"])
        tree = self.storage.tree(commit)
        files = _json_object(request.body).get("files")
        if not isinstance(files, list):
            raise HubRequestError("`files` must be a list")
        answers = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not isinstance(item.get("size"), int):
                raise HubRequestError("Each file needs a `path` and a `size`")
            path, size = item["path"], item["size"]
            entry = tree.get(path)
            # The oid the client compares with its own: sha256 for LFS files, git sha1 otherwise.
            oid = None if entry is None else (entry.sha256 if entry.lfs else entry.git_oid)
            answers.append({"path": path, "uploadMode": "lfs" if wants_lfs(path, size) else "regular", "shouldIgnore": False, "oid": oid})
        return json_response(200, {"files": answers, "commitOid": commit.id})

    def lfs_batch(self, request: Request) -> Response:
        repo = request.repo()
        self.storage.repo_record(repo)
        payload = _json_object(request.body)
        if payload.get("operation") != "upload":
            raise HubRequestError("Only the LFS upload operation is supported")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise HubRequestError("`objects` must be a list")
        answers = []
        for item in objects:
            oid, size = (item.get("oid"), item.get("size")) if isinstance(item, dict) else (None, None)
            answer: dict[str, Any] = {"oid": oid, "size": size}
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                answer["error"] = {"code": 422, "message": "An object needs a sha256 `oid` and a `size`"}
            elif self.storage.blob_size(oid) is None:
                href = f"{request.base_url}/api/lfs/objects/{oid}?size={size}"
                answer["actions"] = {"upload": {"href": href}}
            # An object without `actions` is already stored: the client skips its upload.
            answers.append(answer)
        return json_response(200, {"transfer": "basic", "objects": answers}, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, request: Request) -> Response:
        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                self.stats.add_lfs_bytes_received(len(chunk))
                yield chunk

        self.storage.store_stream(counted(request.body.iter_chunks()), request.params["oid"])
        return json_response(200, {})

    def commit(self, request: Request) -> Response:
        repo = request.repo()
        self.storage.repo_record(repo)
        if request.flag("create_pr"):
            raise HubRequestError("Pull requests are not supported by the embedded Hub")
        lines = (_ndjson_item(line) for line in request.body.iter_lines() if line.strip())
        header = next(lines, None)
        if header is None or header["key"] != "header":
            raise HubRequestError("The first ndjson line must be the commit header")
        value = header["value"]
        parent = value.get("parentCommit")
        if parent is not None and not (isinstance(parent, str) and re.fullmatch(r"[0-9a-fA-F]{5,40}", parent)):
            raise HubRequestError(f"Invalid parentCommit {parent!r}")
        operations = [self._operation(item["key"], item["value"]) for item in lines]
        commit = self.storage.apply_commit(
            repo,
            request.params["rev"],
            operations,
            summary=str(value.get("summary") or ""),
            description=str(value.get("description") or ""),
            parent_commit=parent,
        )
        commit_url = f"{request.base_url}/{repo.url_path}/commit/{commit.id}"
        return json_response(200, {"commitUrl": commit_url, "commitOid": commit.id, "pullRequestUrl": None})

    def _concurrent_writer(self, request: Request) -> None:
        """Another writer's commit landing first: it moves the branch the request planned against."""
        repo = request.repo()
        entry = self.storage.store_regular(CONCURRENT_FILE, b"written by another client\n")
        self.storage.apply_commit(
            repo, request.params["rev"], [AddFile(entry)], summary="A concurrent commit", description="", parent_commit=None
        )

    def _operation(self, key: str, value: Mapping[str, Any]) -> Operation:
        path = value.get("path")
        if not isinstance(path, str):
            raise HubRequestError(f"A {key} operation needs a `path`")
        if key == "file":
            if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
                raise HubRequestError(f"{path}: file content must be base64 text")
            try:
                data = base64.b64decode(value["content"], validate=True)
            except binascii.Error:
                raise HubRequestError(f"{path}: file content is not valid base64") from None
            return AddFile(self.storage.store_regular(path, data))
        if key == "lfsFile":
            oid = value.get("oid")
            if not isinstance(oid, str) or (stored := self.storage.blob_size(oid)) is None:
                raise HubRequestError(f"{path}: LFS object {oid} was never uploaded")
            if value.get("size", stored) != stored:
                raise HubRequestError(f"{path}: LFS object {oid} has {stored} bytes, not {value['size']}")
            return AddFile(lfs_entry(path, oid, stored))
        if key == "deletedFile":
            return DeleteFile(path)
        if key == "deletedFolder":
            return DeleteFolder(path)
        raise HubRequestError(f"Unknown commit operation {key!r}")

    # ---- refs -----------------------------------------------------------------------------

    def create_tag(self, request: Request) -> Response:
        tag = _json_object(request.body).get("tag")
        if not isinstance(tag, str):
            raise HubRequestError("`tag` must be a string")
        self.storage.create_ref(request.repo(), "tag", tag, request.params["rev"])
        return json_response(200, {})

    def delete_tag(self, request: Request) -> Response:
        self.storage.delete_ref(request.repo(), "tag", request.params["rev"])
        return json_response(200, {})

    def create_branch(self, request: Request) -> Response:
        start = _json_object(request.body).get("startingPoint") or DEFAULT_BRANCH
        if not isinstance(start, str):
            raise HubRequestError("`startingPoint` must be a revision")
        self.storage.create_ref(request.repo(), "branch", request.params["rev"], start)
        return json_response(200, {})

    def delete_branch(self, request: Request) -> Response:
        self.storage.delete_ref(request.repo(), "branch", request.params["rev"])
        return json_response(200, {})

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
        entries = [describe(self.storage, repo, commit, p, folder=is_folder, expand=expand) for p, is_folder in listing]
        return json_response(200, entries)

    def resolve(self, request: Request) -> Response:
        repo = request.repo()
        commit = self.storage.resolve(repo, request.params["rev"])
        path = request.params["path"]
        self.stats.record_file_request(f"{repo.namespace}/{repo.name}", path)
        entry = self.storage.tree(commit).get(path)
        headers = [("X-Repo-Commit", commit.id)]
        if entry is None:
            return error_response(404, f"Entry not found: {path}", "EntryNotFound", headers=headers)
        headers += [
            ("ETag", f'"{entry.sha256 if entry.lfs else entry.git_oid}"'),
            ("Accept-Ranges", "bytes"),
            ("Content-Type", "application/octet-stream"),
        ]
        if entry.lfs:
            headers += [("X-Linked-Etag", f'"{entry.sha256}"'), ("X-Linked-Size", str(entry.size))]
        try:
            span = parse_range(request.header("Range"), entry.size)
        except RangeNotSatisfiable:
            headers.append(("Content-Range", f"bytes */{entry.size}"))
            return error_response(416, "Requested range not satisfiable", headers=headers)
        start, end = span if span is not None else (0, entry.size - 1)
        length = end - start + 1
        if span is not None:
            headers.append(("Content-Range", f"bytes {start}-{end}/{entry.size}"))
        headers.append(("Content-Length", str(length)))
        status = 200 if span is None else 206
        if request.method == "HEAD":
            return Response(status, headers)
        return Response(status, headers, self._file_body(entry, start, length))

    def _file_body(self, entry: FileEntry, start: int, length: int) -> Iterator[bytes]:
        cut_at = self._injector.drop_limit(length)
        # A shorter body than Content-Length announced, then a closed connection: a drop.
        for chunk in self.storage.read_blob(entry.sha256, start, length if cut_at is None else cut_at):
            self.stats.add_resolve_bytes_sent(len(chunk))
            yield chunk

    def xet_token(self, request: Request) -> Response:
        return error_response(501, "Xet is not supported by the embedded Hub: set HF_HUB_DISABLE_XET=1")


@dataclass(frozen=True)
class Route:
    """One route: HTTP method, path pattern (on the raw, still-quoted path), name, handler."""

    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Callable[[HubApp, Request], Response]
    writes: bool = False


def _route(method: str, pattern: str, name: str, handler: Callable[[HubApp, Request], Response], *, writes: bool = False) -> Route:
    return Route(method, re.compile(pattern), name, handler, writes)


ROUTES: tuple[Route, ...] = (
    _route("POST", r"/api/repos/create", "repo_create", HubApp.create_repo, writes=True),
    _route("POST", r"/api/validate-yaml", "validate_yaml", HubApp.validate_yaml),
    _route("GET", _API_REPO, "repo_info", HubApp.repo_info),
    _route("GET", _API_REPO + "/revision/" + _REV, "repo_info", HubApp.repo_info),
    _route("POST", _API_REPO + "/preupload/" + _REV, "preupload", HubApp.preupload),
    _route("POST", _API_REPO + "/commit/" + _REV, "commit", HubApp.commit, writes=True),
    _route("POST", _API_REPO + "/tag/" + _REV, "tag_create", HubApp.create_tag, writes=True),
    _route("DELETE", _API_REPO + "/tag/" + _REV, "tag_delete", HubApp.delete_tag, writes=True),
    _route("POST", _API_REPO + "/branch/" + _REV, "branch_create", HubApp.create_branch, writes=True),
    _route("DELETE", _API_REPO + "/branch/" + _REV, "branch_delete", HubApp.delete_branch, writes=True),
    _route("GET", _API_REPO + "/refs", "refs", HubApp.refs),
    _route("GET", _API_REPO + "/commits/" + _REV, "commits", HubApp.commits),
    _route("POST", _API_REPO + "/paths-info/" + _REV, "paths_info", HubApp.paths_info),
    _route("GET", _API_REPO + "/tree/" + _REV + r"(?:/(?P<path>.+))?", "tree", HubApp.list_tree),
    _route("GET", _API_REPO + r"/xet-(?:read|write)-token/" + _REV, "xet_token", HubApp.xet_token),
    _route("POST", _WEB_REPO + r"\.git/info/lfs/objects/batch", "lfs_batch", HubApp.lfs_batch),
    _route("PUT", r"/api/lfs/objects/(?P<oid>[0-9a-f]{64})", "lfs_upload", HubApp.lfs_upload, writes=True),
    _route("GET", _WEB_REPO + "/resolve/" + _REV + r"/(?P<path>.+)", "resolve", HubApp.resolve),
    _route("HEAD", _WEB_REPO + "/resolve/" + _REV + r"/(?P<path>.+)", "resolve", HubApp.resolve),
)
ROUTE_NAMES = frozenset(route.name for route in ROUTES)


def _find_route(method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """The route for this request and its unquoted parameters; the flag says the path exists."""
    path_known = False
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method == method:
            return route, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}, True
        path_known = True
    return None, {}, path_known


def _raw_path(environ: Mapping[str, Any]) -> str:
    # Route on the path as sent: a quoted `/` inside a revision or folder stays one segment.
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if raw:
        return str(raw).split("?", 1)[0]
    path = str(environ.get("PATH_INFO", ""))
    # PEP 3333 hands the bytes over as latin-1; httpx2's WSGITransport passes decoded text.
    with contextlib.suppress(UnicodeError):
        path = path.encode("latin-1").decode("utf-8")
    return quote(path, safe="/")


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _json_object(body: RequestBody) -> dict[str, Any]:
    payload = body.json()
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise HubRequestError("Request body must be a JSON object")
    return payload


def _ndjson_item(line: bytes) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError:
        raise HubRequestError("Commit body is not valid ndjson") from None
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), dict):
        raise HubRequestError("Each ndjson line must be {key, value}")
    return item
