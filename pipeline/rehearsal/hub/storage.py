"""Repository storage for the embedded Hub: content-addressed blobs, trees, commits and refs.

Everything lives under one root directory, so a server restarted on the same root sees the
same repos:

    blobs/<sha256[:2]>/<sha256>          file contents, regular and LFS alike
    trees/<tree id>.json                 a commit's full file list (immutable, content-addressed)
    repos/<type>/<namespace>/<name>/
        repo.json                        creation metadata
        refs.json                        branches and tags
        commits/<commit id>.json         one record per commit, with its parents

Every write goes to a temp file in the same filesystem and is renamed into place. Ref updates
are serialised by one lock, so a single server process is the only writer of a root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.rehearsal.hub.model import (
    DEFAULT_BRANCH,
    INITIAL_COMMIT_MESSAGE,
    INITIAL_GITATTRIBUTES,
    MISSING_FILE_MESSAGE,
    STALE_PARENT_MESSAGE,
    AddFile,
    AlreadyExists,
    Commit,
    DeleteFile,
    EntryNotFound,
    FileEntry,
    HubRequestError,
    Operation,
    Refs,
    RepoNotFound,
    RepoRef,
    RevisionNotFound,
    StaleParent,
    Tree,
    now_iso,
    regular_entry,
    validate_path,
)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]{5,40}")
_READ_CHUNK = 1024 * 1024


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@lru_cache(maxsize=512)
def _load_tree(path: Path) -> Tree:
    # Trees are immutable and named by their content, so caching them by path is safe.
    entries = json.loads(path.read_bytes())
    return MappingProxyType({e["path"]: FileEntry.from_json(e) for e in entries})


class HubStorage:
    """All repositories under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # ---- blobs ----------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        if not _SHA256_RE.fullmatch(sha256):
            raise HubRequestError(f"Invalid sha256 {sha256!r}")
        return self.root / "blobs" / sha256[:2] / sha256

    def blob_size(self, sha256: str) -> int | None:
        """The stored size of a blob, or None when it was never uploaded."""
        try:
            return self.blob_path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def store_regular(self, path: str, data: bytes) -> FileEntry:
        """Store the content of a regular (non-LFS) file held in memory."""
        entry = regular_entry(path, data)
        if self.blob_size(entry.sha256) is None:
            _write_atomic(self.blob_path(entry.sha256), data)
        return entry

    def store_stream(self, chunks: Iterable[bytes], expected_sha256: str) -> int:
        """Stream a blob to disk while hashing it; keep it only if its sha256 is the expected one.

        Returns the number of bytes read.
        """
        target = self.blob_path(expected_sha256)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            if digest.hexdigest() != expected_sha256:
                raise HubRequestError(f"sha256 of the uploaded body ({digest.hexdigest()}) does not match oid {expected_sha256}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return size

    def read_blob(self, sha256: str, start: int, length: int, chunk_size: int = _READ_CHUNK) -> Iterator[bytes]:
        """Yield `length` bytes of a blob from `start`, one chunk at a time."""
        with self.blob_path(sha256).open("rb") as handle:
            handle.seek(start)
            while length > 0:
                chunk = handle.read(min(chunk_size, length))
                if not chunk:
                    return
                length -= len(chunk)
                yield chunk

    # ---- repos and refs -------------------------------------------------------------------

    def _repo_dir(self, repo: RepoRef) -> Path:
        return self.root / "repos" / repo.type / repo.namespace / repo.name

    def repo_record(self, repo: RepoRef) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads((self._repo_dir(repo) / "repo.json").read_bytes())
        except FileNotFoundError:
            raise RepoNotFound(f"Repository {repo.id} not found") from None
        return record

    def create_repo(self, repo: RepoRef, *, private: bool) -> bool:
        """Create a repo with its initial commit; False when it already existed."""
        with self._lock:
            repo_dir = self._repo_dir(repo)
            if (repo_dir / "repo.json").exists():
                return False
            entry = self.store_regular(".gitattributes", INITIAL_GITATTRIBUTES)
            commit = self._write_commit(repo, (), {entry.path: entry}, INITIAL_COMMIT_MESSAGE, "")
            self._write_refs(repo, Refs({DEFAULT_BRANCH: commit.id}, {}))
            # repo.json last: a repo exists only once its first commit and refs are in place.
            record = {"type": repo.type, "id": repo.id, "private": private, "createdAt": now_iso()}
            _write_atomic(repo_dir / "repo.json", _canonical(record))
            return True

    def set_private(self, repo: RepoRef, private: bool) -> None:
        with self._lock:
            record = {**self.repo_record(repo), "private": private}
            _write_atomic(self._repo_dir(repo) / "repo.json", _canonical(record))

    def delete_repo(self, repo: RepoRef) -> None:
        """Forget a repo (its blobs stay: other repos may share them)."""
        with self._lock:
            self.repo_record(repo)
            repo_dir = self._repo_dir(repo)
            # repo.json first: without it the repo no longer exists, whatever is left to remove.
            (repo_dir / "repo.json").unlink()
            shutil.rmtree(repo_dir, ignore_errors=True)

    def refs(self, repo: RepoRef) -> Refs:
        self.repo_record(repo)
        data = json.loads((self._repo_dir(repo) / "refs.json").read_bytes())
        return Refs(data["branches"], data["tags"])

    def _write_refs(self, repo: RepoRef, refs: Refs) -> None:
        data = {"branches": dict(sorted(refs.branches.items())), "tags": dict(sorted(refs.tags.items()))}
        _write_atomic(self._repo_dir(repo) / "refs.json", _canonical(data))

    def commit(self, repo: RepoRef, commit_id: str) -> Commit:
        try:
            data = json.loads((self._repo_dir(repo) / "commits" / f"{commit_id}.json").read_bytes())
        except FileNotFoundError:
            raise RevisionNotFound(f"Invalid rev id: {commit_id}") from None
        return Commit(data["id"], tuple(data["parents"]), data["tree"], data["summary"], data["description"], data["date"])

    def resolve(self, repo: RepoRef, revision: str) -> Commit:
        """Find the commit a revision names: a branch, then a tag, then a full or short commit id."""
        refs = self.refs(repo)
        commit_id = refs.branches.get(revision) or refs.tags.get(revision)
        if commit_id is None and _HEX_RE.fullmatch(revision.lower()):
            prefix = revision.lower()
            matches = [p.stem for p in (self._repo_dir(repo) / "commits").glob(f"{prefix}*.json")]
            if len(matches) == 1:
                commit_id = matches[0]
        if commit_id is None:
            raise RevisionNotFound(f"Invalid rev id: {revision}")
        return self.commit(repo, commit_id)

    def tree(self, commit: Commit) -> Tree:
        return _load_tree(self.root / "trees" / f"{commit.tree}.json")

    def history(self, repo: RepoRef, head: Commit) -> Iterator[Commit]:
        """Walk first parents from `head` back to the initial commit."""
        commit: Commit | None = head
        while commit is not None:
            yield commit
            commit = self.commit(repo, commit.parents[0]) if commit.parents else None

    # ---- writes ---------------------------------------------------------------------------

    def _write_commit(self, repo: RepoRef, parents: tuple[str, ...], tree: Tree, summary: str, description: str) -> Commit:
        entries = [tree[path].to_json() for path in sorted(tree)]
        tree_bytes = _canonical(entries)
        tree_id = hashlib.sha1(tree_bytes).hexdigest()
        tree_path = self.root / "trees" / f"{tree_id}.json"
        if not tree_path.exists():
            _write_atomic(tree_path, tree_bytes)
        # The id covers the repo, parents, tree and message but no clock, so a history replays
        # to the same ids; the parent link keeps two identical changes in a row distinct.
        material = {"repo": repo.url_path, "parents": list(parents), "tree": tree_id, "summary": summary, "description": description}
        commit_id = hashlib.sha1(_canonical(material)).hexdigest()
        commit_path = self._repo_dir(repo) / "commits" / f"{commit_id}.json"
        if commit_path.exists():
            return self.commit(repo, commit_id)
        commit = Commit(commit_id, parents, tree_id, summary, description, now_iso())
        record = {**material, "id": commit_id, "date": commit.date}
        _write_atomic(commit_path, _canonical(record))
        return commit

    def apply_commit(
        self, repo: RepoRef, branch: str, operations: Iterable[Operation], *, summary: str, description: str, parent_commit: str | None
    ) -> Commit:
        """Apply operations on top of a branch head and move the branch to the new commit."""
        with self._lock:
            refs = self.refs(repo)
            head_id = refs.branches.get(branch)
            if head_id is None:
                raise RevisionNotFound(f"Invalid rev id: {branch}")
            if parent_commit is not None and not head_id.startswith(parent_commit.lower()):
                raise StaleParent(STALE_PARENT_MESSAGE)
            head = self.commit(repo, head_id)
            tree = dict(self.tree(head))
            for operation in operations:
                _apply(tree, operation)
            _check_no_file_folder_clash(tree)
            commit = self._write_commit(repo, (head_id,), tree, summary, description)
            self._write_refs(repo, Refs({**refs.branches, branch: commit.id}, refs.tags))
            return commit

    def create_ref(self, repo: RepoRef, kind: str, name: str, revision: str) -> Commit:
        """Point a new branch or tag (`kind`) at the commit `revision` names; never moves one."""
        with self._lock:
            _validate_ref_name(name)
            refs = self.refs(repo)
            existing = refs.branches if kind == "branch" else refs.tags
            if name in existing:
                raise AlreadyExists(f"{kind.capitalize()} {name} already exists")
            commit = self.resolve(repo, revision)
            updated = {**existing, name: commit.id}
            new_refs = Refs(updated, refs.tags) if kind == "branch" else Refs(refs.branches, updated)
            self._write_refs(repo, new_refs)
            return commit

    def delete_ref(self, repo: RepoRef, kind: str, name: str) -> None:
        """Remove a branch or a tag; the default branch stays."""
        with self._lock:
            refs = self.refs(repo)
            existing = dict(refs.branches if kind == "branch" else refs.tags)
            if name not in existing:
                raise RevisionNotFound(f"Invalid rev id: {name}")
            if kind == "branch" and name == DEFAULT_BRANCH:
                raise HubRequestError("The default branch cannot be deleted")
            del existing[name]
            self._write_refs(repo, Refs(existing, refs.tags) if kind == "branch" else Refs(refs.branches, existing))


def _apply(tree: dict[str, FileEntry], operation: Operation) -> None:
    if isinstance(operation, AddFile):
        tree[validate_path(operation.entry.path)] = operation.entry
    elif isinstance(operation, DeleteFile):
        if tree.pop(operation.path, None) is None:
            raise EntryNotFound(f"{MISSING_FILE_MESSAGE}: {operation.path}")
    else:
        prefix = operation.path.rstrip("/") + "/"
        doomed = [path for path in tree if path.startswith(prefix)]
        if not doomed:
            raise EntryNotFound(f"A folder with this name doesn't exist: {operation.path}")
        for path in doomed:
            del tree[path]


def _check_no_file_folder_clash(tree: Tree) -> None:
    for path in tree:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in tree:
                raise HubRequestError(f"{folder} is a file, so {path} cannot be added below it")


def _validate_ref_name(name: str) -> None:
    if (
        not name
        or name.startswith(("-", "/", "."))
        or name.endswith(("/", ".lock"))
        or ".." in name
        or any(ch.isspace() or ch in "~^:?*[\\" or ord(ch) < 32 for ch in name)
    ):
        raise HubRequestError(f"Invalid reference name {name!r}")
