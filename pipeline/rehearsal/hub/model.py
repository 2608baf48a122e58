"""The embedded Hub's data model: repo references, file entries, commits, refs, commit operations
and the rules that decide how a file is stored (regular or LFS). Pure values; storage.py persists them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
# The Hub's answer to a stale `parentCommit` (facts/hub-api.md §3); the client shows it as is.
STALE_PARENT_MESSAGE = "The branch was updated since you opened this page. Please refresh and try again."
# The client appends a hint when a delete fails with this phrase (huggingface_hub create_commit).
MISSING_FILE_MESSAGE = "A file with this name doesn't exist"
INITIAL_COMMIT_MESSAGE = "initial commit"
# Which files go through LFS, as on the Hub: big ones, those the branch's .gitattributes routes to
# LFS, and binary content (the client sends each file's first 512 bytes for this). A new repo
# starts with a .gitattributes routing weight and image suffixes to LFS; the Hub's own default
# list is longer, but no copy of it could be checked offline, so only these are assumed.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
LFS_SUFFIXES = (".bin", ".png", ".safetensors")
INITIAL_GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


class HubRequestError(Exception):
    """A request the Hub refuses; `status` and `code` follow the Hub's HTTP answers."""

    status = 400
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RepoNotFound(HubRequestError):
    status, code = 404, "RepoNotFound"


class RevisionNotFound(HubRequestError):
    status, code = 404, "RevisionNotFound"


class EntryNotFound(HubRequestError):
    status, code = 404, "EntryNotFound"


class AlreadyExists(HubRequestError):
    status = 409


class StaleParent(HubRequestError):
    status = 412


@dataclass(frozen=True)
class RepoRef:
    """One repository: its type (model, dataset, space) and its `namespace/name` id."""

    type: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        if self.type not in REPO_TYPES:
            raise HubRequestError(f"Unknown repo type {self.type!r}")
        for part in (self.namespace, self.name):
            if not _NAME_RE.fullmatch(part) or ".." in part or "--" in part or part.endswith(".git"):
                raise HubRequestError(f"Invalid repo id {self.namespace + '/' + self.name!r}")

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def url_path(self) -> str:
        """The repo's path on the web site: `org/name`, or `datasets/org/name`."""
        return self.id if self.type == "model" else f"{self.type}s/{self.id}"


@dataclass(frozen=True)
class FileEntry:
    """One file in a tree: where its bytes are and how the Hub describes it."""

    path: str
    size: int
    sha256: str
    # The git blob sha1 the Hub shows: of the content, or of the LFS pointer for LFS files.
    git_oid: str
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "oid": self.git_oid, "lfs": self.lfs}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileEntry:
        return cls(data["path"], data["size"], data["sha256"], data["oid"], data["lfs"])


@dataclass(frozen=True)
class Commit:
    """One commit record; `date` is kept for display and is not part of the id."""

    id: str
    parents: tuple[str, ...]
    tree: str
    summary: str
    description: str
    date: str


@dataclass(frozen=True)
class Refs:
    """Branch and tag names mapped to commit ids."""

    branches: Mapping[str, str]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class AddFile:
    entry: FileEntry


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


Operation = AddFile | DeleteFile | DeleteFolder
Tree = Mapping[str, FileEntry]


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in the git tree for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_patterns(gitattributes: bytes) -> tuple[str, ...]:
    """The path patterns a .gitattributes file sends through LFS (`filter=lfs`)."""
    patterns = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) > 1 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return tuple(patterns)


def wants_lfs(path: str, size: int, sample: bytes = b"", patterns: tuple[str, ...] = ()) -> bool:
    """Whether a file of this name, size and first bytes should be uploaded through LFS."""
    if size > LFS_SIZE_THRESHOLD or b"\0" in sample:
        return True
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in pattern else name, pattern) for pattern in patterns)


def regular_entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data), lfs=False)


def lfs_entry(path: str, sha256: str, size: int) -> FileEntry:
    return FileEntry(path, size, sha256, git_blob_sha1(lfs_pointer(sha256, size)), lfs=True)


def validate_path(path: str) -> str:
    """Refuse paths git cannot hold: empty, absolute, or with empty, `.` or `..` segments."""
    parts = path.split("/")
    if not path or len(path) > 1024 or "\0" in path or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise HubRequestError(f"Invalid path in repo: {path!r}")
    return path


def directory_oid(tree: Tree, directory: str) -> str:
    """A stable id for a directory, derived from the files below it."""
    prefix = directory + "/"
    digest = hashlib.sha1(b"tree\0")
    for path in sorted(p for p in tree if p.startswith(prefix)):
        digest.update(f"{path}\0{tree[path].git_oid}\n".encode())
    return digest.hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
