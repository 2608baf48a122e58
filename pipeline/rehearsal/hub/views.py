"""How the Hub describes repo contents in JSON: files, folders, siblings, commits, card data.

The shapes are the ones huggingface_hub 2.4 parses (`RepoFile`, `RepoFolder`, `RepoSibling`,
`GitCommitInfo`, `ModelInfo.card_data`); see facts/hub-api.md §6.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import yaml

from pipeline.rehearsal.hub.model import Commit, FileEntry, RepoRef, Tree, directory_oid
from pipeline.rehearsal.hub.storage import HubStorage

# README front matter is parsed for `cardData`; a bigger README is not worth reading.
_MAX_CARD_BYTES = 1024 * 1024
_FRONT_MATTER_RE = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class InvalidMetadata(ValueError):
    """README front matter that does not parse as a YAML mapping."""


def front_matter(readme: str) -> dict[str, Any] | None:
    """The README's YAML metadata block as a mapping; None when it has none."""
    match = _FRONT_MATTER_RE.match(readme)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise InvalidMetadata(f"Invalid YAML in README.md metadata: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidMetadata("README.md metadata must be a YAML mapping")
    return data


def card_data(storage: HubStorage, tree: Tree) -> dict[str, Any] | None:
    """The README metadata of a tree, as the Hub shows it in `cardData`."""
    readme = tree.get("README.md")
    if readme is None or readme.size > _MAX_CARD_BYTES:
        return None
    text = b"".join(storage.read_blob(readme.sha256, 0, readme.size)).decode("utf-8", "replace")
    try:
        return front_matter(text)
    except InvalidMetadata:
        return None


def file_json(entry: FileEntry) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "file", "path": entry.path, "size": entry.size, "oid": entry.git_oid}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def sibling_json(entry: FileEntry, with_blobs: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"rfilename": entry.path}
    if with_blobs:
        data.update(size=entry.size, blobId=entry.git_oid)
        if entry.lfs:
            data["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def commit_json(commit: Commit) -> dict[str, Any]:
    return {"id": commit.id, "title": commit.summary, "message": commit.description, "authors": [], "date": commit.date}


def describe(storage: HubStorage, repo: RepoRef, head: Commit, path: str, *, folder: bool, expand: bool) -> dict[str, Any]:
    """A paths-info / tree entry for a file or a folder of `head`'s tree."""
    tree = storage.tree(head)
    if folder:
        data: dict[str, Any] = {"type": "directory", "path": path, "oid": directory_oid(tree, path), "size": 0}
    else:
        data = file_json(tree[path])
    if expand:
        data["lastCommit"] = _last_commit(storage, repo, head, path)
    return data


def _last_commit(storage: HubStorage, repo: RepoRef, head: Commit, path: str) -> dict[str, str]:
    """The oldest commit, going back from `head`, since which `path` has not changed."""

    def fingerprint(commit: Commit) -> str:
        tree = storage.tree(commit)
        entry = tree.get(path)
        return entry.git_oid if entry else directory_oid(tree, path)

    target, last = fingerprint(head), head
    for commit in itertools.islice(storage.history(repo, head), 1, None):
        if fingerprint(commit) != target:
            break
        last = commit
    return {"id": last.id, "title": last.summary, "date": last.date}
