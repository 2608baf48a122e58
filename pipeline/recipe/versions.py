"""Release versions: read from git tags with GitPython, compared as MAJOR.MINOR.PATCH.

A release is tagged `<draft>/vX.Y.Z` in the project's git repo, or `vX.Y.Z` when the repo holds a
single draft. The Hub tag is always `vX.Y.Z`. An untagged checkout gets a dev version, which may
only dry-run. `drafts_to_release` reads the same rules the other way round: which drafts a pushed
tag names, for the release workflow's matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import git

from pipeline.errors import InputError
from pipeline.recipe.loader import RECIPE_FILE, Recipe, load_recipe

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


# artifacts/demo publishes only to the embedded Hub (pipeline/demo.py): never a release candidate.
REHEARSAL_DRAFTS = ("demo",)

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


def draft_names(artifacts: Path) -> list[str]:
    """Every draft in the repo: the folders holding `artifacts/<draft>/draft.yaml` (nested examples are not drafts)."""
    return sorted(path.parent.name for path in artifacts.glob(f"*/{RECIPE_FILE}"))


def drafts_to_release(artifacts: Path, tag: str | None = None, only: str | None = None) -> list[Recipe]:
    """The drafts a release tag names, or every releasable draft (one with a destination).

    `<draft>/vX.Y.Z` names that draft; `vX.Y.Z` names the repo's single draft and is refused
    when there are several, exactly as `release_version` reads tags.
    """
    names = draft_names(artifacts)
    if tag is not None:
        draft, _, version = tag.rpartition("/")
        if Version.parse(version) is None:
            raise InputError(f"tag {tag!r}: not a release tag", hint="release tags are <draft>/vX.Y.Z, or vX.Y.Z with a single draft")
        if not draft:
            if len(names) != 1:
                raise InputError(
                    f"tag {tag!r}: {len(names)} drafts are under {artifacts}/, so a bare version names none of them",
                    hint=f"tag <draft>/{version} instead",
                )
            draft = names[0]
        only = draft
    if only is not None and only not in names:
        raise InputError(f"{only!r}: no {artifacts / only / RECIPE_FILE}", hint=f"drafts here: {', '.join(names) or 'none'}")
    chosen = [load_recipe(artifacts / name / RECIPE_FILE) for name in names if only in (None, name)]
    if only is not None and only in REHEARSAL_DRAFTS:
        raise InputError(f"{only!r}: the rehearsal draft publishes only to the embedded Hub (python -m pipeline demo)")
    releasable = [recipe for recipe in chosen if recipe.destination is not None and recipe.name not in REHEARSAL_DRAFTS]
    if not releasable:
        where = chosen[0].path if only is not None else f"{artifacts}/"
        raise InputError(f"{where}: no releasable draft", hint="a release needs destination: {repo: org/name} in draft.yaml")
    return releasable
