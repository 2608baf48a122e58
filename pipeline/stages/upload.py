"""upload: plan a release as immutable data, then apply it as one Hub commit and one tag.

Reads the verified draft folder (`verify.json` must have passed and every file must still hash
as verify recorded), the committed card, lock and benchmarks, and the destination's current state
(paths-info, tree, refs: read-only). The plan lists every file as add, change, unchanged or
delete with size and sha256, the parent commit it was made against and the tag. Applying makes
one `create_commit` with `parent_commit` (so a moved remote gives a 412, never an overwrite) and
`create_tag` on the commit it returned. Unchanged files are never sent; an unchanged release
makes no commit and, when the tag already marks that commit, no tag either.
A plan can also be made without weights, from the sizes and sha256s the committed lock records
(`LockedFile`): a review of what a release would change. Such a plan is never applied.
Refuses: an unverified or changed draft, a tag present at another commit, a version not newer
than the latest release, applying a plan made from the lock.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile

from pipeline.checkpoint.files import HASH_CHUNK_BYTES, sha256_file
from pipeline.errors import CheckFailed, InputError, PipelineError
from pipeline.recipe.versions import Version, latest_release
from pipeline.remote.calls import DEFAULT_RETRIES, RetryPolicy, call
from pipeline.remote.errors import Conflict

# Remote files a release replaces wholesale: an old shard layout or old benchmark files must not
# linger. Anything else someone put in the repo (a notebook, the Hub's .gitattributes) is kept.
MANAGED_PATTERNS = ("model-*-of-*.safetensors", "model.safetensors.index.json", "benchmarks/*")


@dataclass(frozen=True)
class LockedFile:
    """A draft file known only by the size and sha256 its lock records: it can be planned, not uploaded."""

    size: int
    sha256: str


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    sha256: str
    action: str  # add | change | unchanged | delete | keep (someone else's file, left alone)
    local: str | None


@dataclass(frozen=True)
class UploadPlan:
    """Everything a release would do, computed without writing anything."""

    destination: str
    version: str
    tag: str | None
    repo_exists: bool
    parent_commit: str | None
    tag_state: str  # new | present | none (dev version: no tag)
    commit_message: str
    commit_description: str
    files: tuple[PlannedFile, ...]

    @property
    def changed(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if f.action in ("add", "change", "delete"))

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.files if f.action in ("add", "change"))

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["files"] = [{k: v for k, v in asdict(f).items() if k != "local"} for f in self.files]
        document["upload_bytes"] = self.upload_bytes
        return document

    def human(self) -> str:
        lines = [
            f"destination: {self.destination}{'' if self.repo_exists else ' (will be created)'}",
            f"version: {self.version}   tag: {self.tag or '(none: dev version)'} ({self.tag_state})",
            f"parent commit: {self.parent_commit or '(none)'}",
        ]
        for planned in self.files:
            lines.append(f"  {planned.action:<9} {planned.path:<48} {planned.size:>14,d}  {planned.sha256[:12]}")
        lines.append(f"{len(self.changed)} file(s) to change, {self.upload_bytes:,d} bytes to upload")
        return "\n".join(lines)


def _managed(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in MANAGED_PATTERNS)


def git_blob_sha1(path: Path) -> str:
    """The id git (and the Hub) gives a regular file's content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verified_draft_files(draft: Path, verify_report: Path) -> dict[str, Path]:
    """The draft's files, refusing an unverified folder or one changed since verify."""
    try:
        report = json.loads(verify_report.read_text())
    except FileNotFoundError:
        raise CheckFailed(f"{verify_report}: missing; the draft was never verified", hint="run the verify stage") from None
    if not report.get("passed"):
        raise CheckFailed(f"{verify_report}: verify did not pass; an unverified draft is never uploaded")
    recorded = report.get("files") or {}
    present = {p.relative_to(draft).as_posix() for p in draft.rglob("*") if p.is_file() and not p.name.startswith(".")}
    if present != set(recorded):
        extra = sorted(present ^ set(recorded))
        raise CheckFailed(f"{draft}: {extra[0]} was added or removed after verify", hint="run verify again")
    for name, entry in sorted(recorded.items()):
        path = draft / name
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise CheckFailed(f"{draft / name}: changed after verify", hint="run verify again")
    return {name: draft / name for name in sorted(recorded)}


def _remote_files(api: HfApi, repo_id: str, revision: str, policy: RetryPolicy) -> dict[str, RepoFile]:
    entries = call(
        "list destination files", lambda: list(api.list_repo_tree(repo_id, revision=revision, recursive=True)), policy, repo=repo_id
    )
    return {entry.path: entry for entry in entries if isinstance(entry, RepoFile)}


def _same(local: Path, sha256: str, remote: RepoFile) -> bool:
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256
    return remote.blob_id == git_blob_sha1(local)


def _action(local: Path, sha256: str, remote: RepoFile | None) -> str:
    if remote is None:
        return "add"
    return "unchanged" if _same(local, sha256, remote) else "change"


def _locked_action(
    api: HfApi, destination: str, revision: str | None, path: str, sha256: str, remote: RepoFile | None, policy: RetryPolicy
) -> str:
    """The action for a file known only by its sha256; a small non-LFS remote file is read to compare."""
    if remote is None:
        return "add"
    if remote.lfs is None:
        local = call(
            f"read {path} from the destination",
            lambda: hf_hub_download(destination, path, revision=revision, endpoint=api.endpoint, token=api.token),
            policy,
            repo=destination,
        )
        return "unchanged" if sha256_file(Path(local)) == sha256 else "change"
    return "unchanged" if remote.lfs.sha256 == sha256 else "change"


def plan_upload(
    api: HfApi,
    destination: str,
    files: Mapping[str, Path | LockedFile],
    version: str,
    tag: str | None,
    message: str,
    description: str,
    policy: RetryPolicy = DEFAULT_RETRIES,
) -> UploadPlan:
    """Compare local (or locked) files with the destination; makes read requests only.

    A release whose tag already exists is compared with the tree that tag marks, not with the
    branch head: commits made after it (a notebook, a fix to the card by hand) do not make a
    rerun of the same release look like a new one.
    """
    try:
        info = call(
            "read destination", lambda: api.model_info(destination), policy, repo=destination, passthrough=(RepositoryNotFoundError,)
        )
        parent, repo_exists = info.sha, True
    except RepositoryNotFoundError:
        parent, repo_exists = None, False
    refs = call("read tags", lambda: api.list_repo_refs(destination), policy, repo=destination) if repo_exists else None
    tags = {ref.name: ref.target_commit for ref in refs.tags} if refs else {}
    compared = tags[tag] if tag is not None and tag in tags else parent
    remote = _remote_files(api, destination, compared, policy) if compared else {}

    planned = []
    for path, local in sorted(files.items()):
        if isinstance(local, LockedFile):
            action = _locked_action(api, destination, parent, path, local.sha256, remote.get(path), policy)
            planned.append(PlannedFile(path, local.size, local.sha256, action, None))
            continue
        sha256 = sha256_file(local)
        size = local.stat().st_size
        planned.append(PlannedFile(path, size, sha256, _action(local, sha256, remote.get(path)), str(local)))
    for path, entry in sorted(remote.items()):
        if path not in files:
            action = "delete" if _managed(path) else "keep"
            planned.append(PlannedFile(path, entry.size, entry.lfs.sha256 if entry.lfs else "", action, None))

    tag_state = "none"
    if tag is not None:
        tag_state = _tag_state(destination, tag, tags, any(f.action in ("add", "change", "delete") for f in planned))
    return UploadPlan(destination, version, tag, repo_exists, parent, tag_state, message, description, tuple(planned))


def _tag_state(destination: str, tag: str, tags: dict[str, str], changes: bool) -> str:
    """`present` when the tag already marks exactly these files (compared at the tag), `new` when it is free."""
    if tag in tags:
        if not changes:
            return "present"
        raise CheckFailed(
            f"{destination}: tag {tag} already exists at commit {tags[tag][:12]} and holds other files",
            hint="a Hub tag is never moved; release a new version",
        )
    latest = latest_release(list(tags))
    version = Version.parse(tag)
    if latest is not None and version is not None and version <= latest:
        raise CheckFailed(f"{destination}: version {tag} is not newer than the latest release {latest.tag}")
    return "new"


@dataclass(frozen=True)
class ReleaseResult:
    commit: str | None
    created_commit: bool
    created_tag: bool
    uploaded_bytes: int


def _operations(plan: UploadPlan) -> list[CommitOperationAdd | CommitOperationDelete]:
    """Commit operations, built fresh for every attempt: the client marks them used once committed."""
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=f.local) for f in plan.files if f.action in ("add", "change") and f.local
    ]
    return operations + [CommitOperationDelete(path_in_repo=f.path) for f in plan.files if f.action == "delete"]


def apply_plan(api: HfApi, plan: UploadPlan, policy: RetryPolicy = DEFAULT_RETRIES) -> ReleaseResult:
    """Turn the plan into one commit and one tag; the operations are built only now.

    Uploads go through the client's LFS path, the one the embedded Hub rehearses (the real Hub
    accepts it too). A repo this call created is deleted again when its first commit fails, so
    a refusal never leaves an empty repo behind.
    """
    unbacked = [f.path for f in plan.files if f.action in ("add", "change") and not f.local]
    if unbacked:
        raise CheckFailed(f"{unbacked[0]}: planned from the lock, with no file to upload; such a plan is for review only")
    constants.HF_HUB_DISABLE_XET = True  # read by the client at call time (utils/_runtime.py is_xet_available)
    destination = plan.destination
    if not plan.repo_exists:
        call("create destination", lambda: api.create_repo(destination, exist_ok=True), policy, repo=destination, permission="write")
    changes = bool(plan.changed)
    commit = plan.parent_commit
    if changes:
        try:
            commit = _commit(api, plan, policy)
        except BaseException:
            if not plan.repo_exists:
                _remove_created_repo(api, destination, policy)
            raise
    created_tag = False
    if plan.tag_state == "new" and plan.tag and commit:
        _tag(api, destination, plan.tag, commit, plan.commit_message, policy)
        created_tag = True
    return ReleaseResult(commit, changes, created_tag, plan.upload_bytes if changes else 0)


def _commit(api: HfApi, plan: UploadPlan, policy: RetryPolicy) -> str:
    parent = plan.parent_commit or _head(api, plan.destination, policy)
    info = call(
        "commit the release",
        lambda: api.create_commit(
            plan.destination,
            _operations(plan),
            commit_message=plan.commit_message,
            commit_description=plan.commit_description,
            parent_commit=parent,
        ),
        policy,
        repo=plan.destination,
        permission="write",
    )
    return str(info.oid)


def _tag(api: HfApi, destination: str, tag: str, commit: str, message: str, policy: RetryPolicy) -> None:
    """Create the tag; one that already marks `commit` is success (our earlier answer was lost)."""
    try:
        call(
            "tag the release",
            lambda: api.create_tag(destination, tag=tag, revision=commit, tag_message=message),
            policy,
            repo=destination,
            permission="write",
        )
    except Conflict:
        refs = call("read tags", lambda: api.list_repo_refs(destination), policy, repo=destination)
        existing = next((ref.target_commit for ref in refs.tags if ref.name == tag), None)
        if existing != commit:
            raise CheckFailed(
                f"{destination}: tag {tag} exists at commit {existing}, not at the release commit {commit}",
                hint="a Hub tag is never moved; release a new version",
            ) from None


def _remove_created_repo(api: HfApi, destination: str, policy: RetryPolicy) -> None:
    """Delete a repo this release created, if it still holds nothing but the Hub's initial commit."""
    with contextlib.suppress(PipelineError):  # the failure that brought us here is the one to report
        commits = call("read destination history", lambda: api.list_repo_commits(destination), policy, repo=destination)
        if len(commits) <= 1:
            call("remove the empty destination", lambda: api.delete_repo(destination), policy, repo=destination, permission="write")


def _head(api: HfApi, destination: str, policy: RetryPolicy) -> str | None:
    """A freshly created repo may already hold the Hub's initial commit; plan against it."""
    try:
        return call(
            "read destination",
            lambda: api.model_info(destination),
            policy,
            repo=destination,
            passthrough=(RepositoryNotFoundError, RevisionNotFoundError),
        ).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def locked_draft_files(lock: dict[str, Any]) -> dict[str, LockedFile]:
    """The draft's files as the committed lock records them (empty for a draft never built)."""
    return {name: LockedFile(entry["size"], entry["sha256"]) for name, entry in sorted((lock.get("files") or {}).items())}


def load_plan_files(*groups: Mapping[str, Path | LockedFile]) -> dict[str, Path | LockedFile]:
    """Merge file groups, refusing two sources for one path in the repo."""
    merged: dict[str, Path | LockedFile] = {}
    for group in groups:
        for path, local in group.items():
            if path in merged:
                raise InputError(f"{path}: would be uploaded twice ({merged[path]} and {local})")
            merged[path] = local
    return merged
