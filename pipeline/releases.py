"""Release versions: read from git tags with GitPython, compared as MAJOR.MINOR.PATCH.

A release is tagged `<draft>/vX.Y.Z` in the project's git repo, or `vX.Y.Z` when the repo holds a
single draft. The Hub tag is always `vX.Y.Z`. An untagged checkout gets a dev version, which may
only dry-run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import git

SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version | None:
        """`vX.Y.Z` to a Version, or None for anything else."""
        match = SEMVER.match(text)
        return cls(*(int(part) for part in match.groups())) if match else None

    @property
    def tag(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class ReleaseVersion:
    """What this checkout would publish."""

    version: Version | None
    label: str
    git_commit: str
    dirty: bool

    @property
    def is_release(self) -> bool:
        return self.version is not None

    @property
    def hub_tag(self) -> str | None:
        return self.version.tag if self.version else None


DEV_OUTSIDE_GIT = ReleaseVersion(None, "0.0.0.dev0", "unknown", True)


def release_version(start: Path, draft: str, single_draft: bool) -> ReleaseVersion:
    """The version tagged on HEAD for this draft, or a dev version when HEAD carries no such tag.

    A recipe outside any git repository can only ever be a dev version: releases are git tags.
    """
    try:
        repo = git.Repo(start, search_parent_directories=True)
        head = repo.head.commit.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return DEV_OUTSIDE_GIT
    versions = []
    for tag in repo.tags:
        if tag.commit.hexsha != head:
            continue
        name = tag.name
        if name.startswith(f"{draft}/"):
            name = name[len(draft) + 1 :]
        elif not single_draft or "/" in name:
            continue
        version = Version.parse(name)
        if version is not None:
            versions.append(version)
    dirty = repo.is_dirty(untracked_files=True)
    if not versions:
        return ReleaseVersion(None, f"0.0.0.dev0+g{head[:12]}", head, dirty)
    best = max(versions)
    return ReleaseVersion(best, best.tag, head, dirty)


def latest_release(tags: list[str]) -> Version | None:
    """The highest `vX.Y.Z` among Hub tag names."""
    versions = [v for v in (Version.parse(tag) for tag in tags) if v is not None]
    return max(versions) if versions else None
