"""The embedded Hub's WSGI app: the Hub HTTP API the huggingface_hub client needs.

The real client talks to it exactly as to huggingface.co (design §8; routes from
facts/hub-api.md §6): repo create, validate-yaml, repo info, preupload, LFS batch and PUT,
ndjson commit, tags, branches, refs, commits, paths-info, tree, and resolve with Range.
Xet is refused (501), so clients must run with `HF_HUB_DISABLE_XET=1`. Access is open unless
tokens or Trusted Publishers are configured (`auth.py`, `oidc.py`); card metadata is validated
as the Hub does (`metadata.py`). No token is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from pipeline.rehearsal.hub.account import AccountRoutes, card_errors
from pipeline.rehearsal.hub.auth import AccessPolicy, Forbidden, Grant
from pipeline.rehearsal.hub.faults import ANY_ROUTE, FaultInjector, FaultPlan
from pipeline.rehearsal.hub.model import (
    DEFAULT_BRANCH,
    AddFile,
    DeleteFile,
    DeleteFolder,
    HubRequestError,
    Operation,
    RepoNotFound,
    lfs_entry,
    lfs_patterns,
    wants_lfs,
)
from pipeline.rehearsal.hub.oidc import TrustedPublishers
from pipeline.rehearsal.hub.reads import ReadRoutes
from pipeline.rehearsal.hub.stats import ServerStats
from pipeline.rehearsal.hub.storage import HubStorage
from pipeline.rehearsal.hub.wsgi import (
    Request,
    RequestBody,
    Response,
    error_response,
    json_response,
)

CONCURRENT_FILE = "CONCURRENT_WRITER.md"  # what the race fault's other writer commits
logger = logging.getLogger(__name__)

_API_REPO = r"/api/(?P<plural>models|datasets|spaces)/(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_WEB_REPO = r"/(?:(?P<plural>datasets|spaces)/)?(?P<namespace>[^/]+)/(?P<name>[^/]+?)"
_REV = r"(?P<rev>[^/]+)"
# The route name counted for requests that match no route.
UNKNOWN_ROUTE = "unknown"

WsgiStartResponse = Callable[..., Any]


class HubApp(AccountRoutes, ReadRoutes):
    """The WSGI application: match a route, apply due faults, check access, run the handler, count it."""

    def __init__(
        self,
        storage: HubStorage,
        stats: ServerStats,
        faults: FaultPlan | None = None,
        access: AccessPolicy | None = None,
        publishers: TrustedPublishers | None = None,
        page_size: int | None = None,
    ) -> None:
        self.storage = storage
        self.page_size = page_size
        self.cdn_url: str | None = None
        self.licenses: frozenset[str] | None = None
        self.download_key = secrets.token_bytes(32)
        self.stats = stats
        self.faults = faults or FaultPlan()
        self.access = access or AccessPolicy()
        self.publishers = publishers or TrustedPublishers()
        if self.publishers.publishers:
            self.access.strict = True
        # Signs LFS upload URLs: the client PUTs to them without credentials, as to a presigned URL.
        self._upload_key = secrets.token_bytes(32)

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

    @property
    def injector(self) -> FaultInjector:
        """The faults being applied now (shared with the CDN origin)."""
        return self._injector

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
            request.grant = self._authorize(route, request)
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
        if response.status < 300 and injector.answer_lost(route.name):
            # The work is done but the answer never reaches the client, as behind a failing proxy.
            _close(response.body)
            return error_response(502, "Bad gateway: the answer was lost")
        return response

    def _authorize(self, route: Route, request: Request) -> Grant | None:
        """The caller's grant, after refusing what it may not do on this route (open mode allows all)."""
        if route.access == "signed":
            return None
        grant = self.access.identify(request.environ)
        if route.access in ("read", "write"):
            repo = request.repo()
            try:
                record: dict[str, Any] | None = self.storage.repo_record(repo)
            except RepoNotFound:
                record = None
            if route.access == "read":
                self.access.check_read(grant, repo, record)
            else:
                self.access.check_write(grant, repo, record)
        return grant

    # ---- uploads and commits ----------------------------------------------------------------

    def preupload(self, request: Request) -> Response:
        repo = request.repo()
        commit = self.storage.resolve(repo, request.params["rev"])
        tree = self.storage.tree(commit)
        files = request.body.json_object().get("files")
        if not isinstance(files, list):
            raise HubRequestError("`files` must be a list")
        attributes = tree.get(".gitattributes")
        patterns = lfs_patterns(b"".join(self.storage.read_blob(attributes.sha256, 0, attributes.size))) if attributes else ()
        answers = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not isinstance(item.get("size"), int):
                raise HubRequestError("Each file needs a `path` and a `size`")
            path, size = item["path"], item["size"]
            entry = tree.get(path)
            # The oid the client compares with its own: sha256 for LFS files, git sha1 otherwise.
            oid = None if entry is None else (entry.sha256 if entry.lfs else entry.git_oid)
            mode = "lfs" if wants_lfs(path, size, _sample(item), patterns) else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return json_response(200, {"files": answers, "commitOid": commit.id})

    def lfs_batch(self, request: Request) -> Response:
        repo = request.repo()
        self.storage.repo_record(repo)
        payload = request.body.json_object()
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
                href = f"{request.base_url}/api/lfs/objects/{oid}?size={size}&signature={self._upload_signature(oid, size)}"
                answer["actions"] = {"upload": {"href": href}}
            # An object without `actions` is already stored: the client skips its upload.
            answers.append(answer)
        return json_response(200, {"transfer": "basic", "objects": answers}, content_type="application/vnd.git-lfs+json")

    def _upload_signature(self, oid: str, size: int) -> str:
        return hmac.new(self._upload_key, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    def lfs_upload(self, request: Request) -> Response:
        size = (request.query.get("size") or [""])[-1]
        signature = (request.query.get("signature") or [""])[-1]
        if not size.isdigit() or not hmac.compare_digest(signature, self._upload_signature(request.params["oid"], int(size))):
            raise Forbidden("This upload URL is not signed by the LFS batch endpoint")

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
        for operation in operations:
            if isinstance(operation, AddFile) and operation.entry.path == "README.md" and not operation.entry.lfs:
                readme = b"".join(self.storage.read_blob(operation.entry.sha256, 0, operation.entry.size)).decode("utf-8", "replace")
                if reasons := card_errors(readme, self.licenses):
                    raise HubRequestError(f"Invalid metadata in README.md: {reasons[0]}")
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
        tag = request.body.json_object().get("tag")
        if not isinstance(tag, str):
            raise HubRequestError("`tag` must be a string")
        self.storage.create_ref(request.repo(), "tag", tag, request.params["rev"])
        return json_response(200, {})

    def delete_tag(self, request: Request) -> Response:
        self.storage.delete_ref(request.repo(), "tag", request.params["rev"])
        return json_response(200, {})

    def create_branch(self, request: Request) -> Response:
        start = request.body.json_object().get("startingPoint") or DEFAULT_BRANCH
        if not isinstance(start, str):
            raise HubRequestError("`startingPoint` must be a revision")
        self.storage.create_ref(request.repo(), "branch", request.params["rev"], start)
        return json_response(200, {})

    def delete_branch(self, request: Request) -> Response:
        self.storage.delete_ref(request.repo(), "branch", request.params["rev"])
        return json_response(200, {})


@dataclass(frozen=True)
class Route:
    """One route: HTTP method, path pattern (on the raw, still-quoted path), name, handler."""

    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Callable[[HubApp, Request], Response]
    writes: bool = False
    # Who may call it: public (anyone), read / write (checked against the repo in the path),
    # admin (checked by the handler, the repo is in the body), signed (the URL carries a signature).
    access: str = "read"


def _route(
    method: str, pattern: str, name: str, handler: Callable[[HubApp, Request], Response], *, writes: bool = False, access: str = "read"
) -> Route:
    return Route(method, re.compile(pattern), name, handler, writes, access)


ROUTES: tuple[Route, ...] = (
    _route("POST", r"/api/repos/create", "repo_create", HubApp.create_repo, writes=True, access="admin"),
    _route("DELETE", r"/api/repos/delete", "repo_delete", HubApp.delete_repo, writes=True, access="admin"),
    _route("POST", r"/api/validate-yaml", "validate_yaml", HubApp.validate_yaml, access="public"),
    _route("POST", r"/oauth/token", "token_exchange", HubApp.token_exchange, access="signed"),
    _route("GET", _API_REPO, "repo_info", HubApp.repo_info),
    _route("PUT", _API_REPO + "/settings", "repo_settings", HubApp.repo_settings, writes=True, access="write"),
    _route("GET", _API_REPO + "/revision/" + _REV, "repo_info", HubApp.repo_info),
    _route("POST", _API_REPO + "/preupload/" + _REV, "preupload", HubApp.preupload, access="write"),
    _route("POST", _API_REPO + "/commit/" + _REV, "commit", HubApp.commit, writes=True, access="write"),
    _route("POST", _API_REPO + "/tag/" + _REV, "tag_create", HubApp.create_tag, writes=True, access="write"),
    _route("DELETE", _API_REPO + "/tag/" + _REV, "tag_delete", HubApp.delete_tag, writes=True, access="write"),
    _route("POST", _API_REPO + "/branch/" + _REV, "branch_create", HubApp.create_branch, writes=True, access="write"),
    _route("DELETE", _API_REPO + "/branch/" + _REV, "branch_delete", HubApp.delete_branch, writes=True, access="write"),
    _route("GET", _API_REPO + "/refs", "refs", HubApp.refs),
    _route("GET", _API_REPO + "/commits/" + _REV, "commits", HubApp.commits),
    _route("POST", _API_REPO + "/paths-info/" + _REV, "paths_info", HubApp.paths_info),
    _route("GET", _API_REPO + "/tree/" + _REV + r"(?:/(?P<path>.+))?", "tree", HubApp.list_tree),
    _route("GET", _API_REPO + r"/xet-(?:read|write)-token/" + _REV, "xet_token", HubApp.xet_token),
    _route("POST", _WEB_REPO + r"\.git/info/lfs/objects/batch", "lfs_batch", HubApp.lfs_batch, access="write"),
    _route("PUT", r"/api/lfs/objects/(?P<oid>[0-9a-f]{64})", "lfs_upload", HubApp.lfs_upload, writes=True, access="signed"),
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


def _sample(item: Mapping[str, Any]) -> bytes:
    """The file's first bytes as the client sent them (base64), to tell binary from text."""
    try:
        return base64.b64decode(str(item.get("sample") or ""), validate=True)
    except binascii.Error:
        raise HubRequestError(f"{item['path']}: `sample` is not valid base64") from None


def _ndjson_item(line: bytes) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError:
        raise HubRequestError("Commit body is not valid ndjson") from None
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), dict):
        raise HubRequestError("Each ndjson line must be {key, value}")
    return item
