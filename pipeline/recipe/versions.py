"""Release versions and release tags, read from git with GitPython and compared as MAJOR.MINOR.PATCH.

A release is tagged `<draft>/vX.Y.Z` in the project's git repo, or `vX.Y.Z` when the repo holds a
single releasable draft (one with a destination; the rehearsal draft never counts). The Hub tag is
always `vX.Y.Z`. A release names its tag explicitly and is refused unless HEAD is that tag's
commit, so two version tags on one commit can never publish the wrong one. An untagged checkout
gets a dev version, which may only dry-run. `select_release` is the release workflow's gate: the
draft a pushed tag names, on a commit of the default branch, with a fully resolved lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CheckFailed, InputError
from pipeline.recipe.layout import LOCK_FILE
from pipeline.recipe.loader import RECIPE_FILE, Recipe, load_recipe
from pipeline.recipe.lock import load_lock

if TYPE_CHECKING:
    import git

SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
TAG_FORMS = "release tags are <draft>/vX.Y.Z, or vX.Y.Z with a single releasable draft; pre-releases (v1.0.0-rc1) are not released"


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
    """What this checkout would publish, and the git tag that says so."""

    version: Version | None
    label: str
    git_commit: str
    dirty: bool
    git_tag: str | None = None

    @property
    def is_release(self) -> bool:
        return self.version is not None

    @property
    def hub_tag(self) -> str | None:
        return self.version.tag if self.version else None


@dataclass(frozen=True)
class ReleaseTag:
    """A git release tag, read: the draft it names and its version."""

    name: str
    draft: str
    version: Version


# artifacts/demo publishes only to the embedded Hub (pipeline/rehearsal/demo.py): never a release candidate.
REHEARSAL_DRAFTS = ("demo",)

DEV_OUTSIDE_GIT = ReleaseVersion(None, "0.0.0.dev0", "unknown", True)


def parse_release_tag(tag: str, single_draft: str | None) -> ReleaseTag:
    """`<draft>/vX.Y.Z`, or `vX.Y.Z` naming `single_draft` (the repo's only releasable draft)."""
    draft, _, version_text = tag.rpartition("/")
    version = Version.parse(version_text)
    if version is None:
        raise InputError(f"tag {tag!r}: not a release tag", hint=TAG_FORMS)
    if not draft:
        if single_draft is None:
            raise InputError(
                f"tag {tag!r}: a bare version names a draft only where exactly one draft is releasable",
                hint=f"tag <draft>/{version_text} instead",
            )
        draft = single_draft
    return ReleaseTag(tag, draft, version)


def _open(start: Path) -> git.Repo | None:
    import git  # here, not at the top: only the release commands read git, and it costs every command's start-up

    try:
        repo = git.Repo(start, search_parent_directories=True)
        repo.head.commit  # noqa: B018 (an empty repository has no HEAD commit)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return None
    return repo


def git_state(start: Path) -> ReleaseVersion:
    """The dev version of the checkout holding `start`: its HEAD commit and whether the tree is dirty."""
    repo = _open(start)
    if repo is None:
        return DEV_OUTSIDE_GIT
    head = repo.head.commit.hexsha
    return ReleaseVersion(None, f"0.0.0.dev0+g{head[:12]}", head, repo.is_dirty(untracked_files=True))


def _tag_commit(repo: git.Repo, tag: str) -> str:
    try:
        return str(repo.tags[tag].commit.hexsha)
    except IndexError:
        raise InputError(
            f"tag {tag!r}: no such tag in {repo.working_dir}", hint="fetch the tags (git fetch --tags) or create it: git tag <draft>/vX.Y.Z"
        ) from None


def _check_head_is(repo: git.Repo, tag: str) -> str:
    """HEAD's commit, refusing unless it is `tag`'s: a release publishes exactly the tagged tree."""
    head = repo.head.commit.hexsha
    commit = _tag_commit(repo, tag)
    if commit != head:
        raise CheckFailed(
            f"tag {tag!r} is commit {commit[:12]} but HEAD is {head[:12]}", hint=f"check out the tag first: git checkout {tag}"
        )
    return head


def head_release_tags(repo: git.Repo, draft: str, single_draft: bool) -> list[ReleaseTag]:
    """The release tags on HEAD that name `draft`, lowest version first."""
    head = repo.head.commit.hexsha
    found = []
    for tag in repo.tags:
        try:
            if tag.commit.hexsha != head:
                continue
        except ValueError:  # a tag of a tree or blob names no commit, so no release
            continue
        named, _, version_text = tag.name.rpartition("/")
        version = Version.parse(version_text)
        if version is not None and (named == draft or (not named and single_draft)):
            found.append(ReleaseTag(tag.name, draft, version))
    return sorted(found, key=lambda found_tag: found_tag.version)


def release_version(start: Path, draft: str, single_draft: bool, tag: str | None = None) -> ReleaseVersion:
    """The version `tag` releases (refused unless HEAD is its commit), or without a tag the one
    release tag of `draft` on HEAD; a dev version when HEAD carries none.

    Two release tags of one draft on HEAD are refused without `tag`: which to publish is the
    caller's choice, never the highest one's. A recipe outside any git repository can only ever
    be a dev version: releases are git tags.
    """
    repo = _open(start)
    if repo is None:
        if tag is not None:
            raise CheckFailed(
                f"tag {tag!r}: {start} is not in a git checkout, so it carries no release tag", hint="release from a clone of the project"
            )
        return DEV_OUTSIDE_GIT
    state = git_state(start)
    if tag is not None:
        release = parse_release_tag(tag, draft if single_draft else None)
        if release.draft != draft:
            raise InputError(
                f"tag {tag!r} releases the draft {release.draft!r}, not {draft!r}", hint="pass the tag of this draft with --tag"
            )
        _check_head_is(repo, tag)
        return ReleaseVersion(release.version, release.version.tag, state.git_commit, state.dirty, tag)
    tags = head_release_tags(repo, draft, single_draft)
    if len(tags) > 1:
        raise InputError(
            f"HEAD carries {len(tags)} release tags of {draft}: {', '.join(t.name for t in tags)}",
            hint="name the one to publish: --tag <tag>",
        )
    if not tags:
        return state
    return ReleaseVersion(tags[0].version, tags[0].version.tag, state.git_commit, state.dirty, tags[0].name)


def latest_release(tags: list[str]) -> Version | None:
    """The highest `vX.Y.Z` among Hub tag names."""
    versions = [v for v in (Version.parse(tag) for tag in tags) if v is not None]
    return max(versions) if versions else None


def draft_names(artifacts: Path) -> list[str]:
    """Every draft in the repo: the folders holding `artifacts/<draft>/draft.yaml` (nested examples are not drafts)."""
    return sorted(path.parent.name for path in artifacts.glob(f"*/{RECIPE_FILE}"))


def is_releasable(recipe: Recipe) -> bool:
    """A draft that publishes somewhere real: it has a destination and is not the rehearsal draft."""
    return recipe.destination is not None and recipe.name not in REHEARSAL_DRAFTS


def releasable_drafts(artifacts: Path) -> list[Recipe]:
    """The drafts a release can publish, by name."""
    return [recipe for recipe in (load_recipe(artifacts / name / RECIPE_FILE) for name in draft_names(artifacts)) if is_releasable(recipe)]


def single_releasable(artifacts: Path) -> str | None:
    """The name of the repo's only releasable draft, which a bare `vX.Y.Z` tag names; else None."""
    names = [recipe.name for recipe in releasable_drafts(artifacts)]
    return names[0] if len(names) == 1 else None


def _releasable(artifacts: Path, name: str) -> Recipe:
    names = draft_names(artifacts)
    if name not in names:
        raise InputError(f"{name!r}: no {artifacts / name / RECIPE_FILE}", hint=f"drafts here: {', '.join(names) or 'none'}")
    if name in REHEARSAL_DRAFTS:
        raise InputError(f"{name!r}: the rehearsal draft publishes only to the embedded Hub (python -m pipeline demo)")
    recipe = load_recipe(artifacts / name / RECIPE_FILE)
    if not is_releasable(recipe):
        raise InputError(f"{recipe.path}: no releasable draft", hint="a release needs destination: {repo: org/name} in draft.yaml")
    return recipe


def drafts_to_release(artifacts: Path, only: str | None = None) -> list[Recipe]:
    """Every releasable draft, or only the one named (refused unless it is releasable)."""
    if only is not None:
        return [_releasable(artifacts, only)]
    releasable = releasable_drafts(artifacts)
    if not releasable:
        raise InputError(f"{artifacts}/: no releasable draft", hint="a release needs destination: {repo: org/name} in draft.yaml")
    return releasable


@dataclass(frozen=True)
class Selection:
    """The one draft a pushed release tag publishes, at the commit the tag names."""

    recipe: Recipe
    tag: ReleaseTag
    commit: str


_LOCK_HINT = (
    "run the lock workflow for {draft} (or: python -m pipeline lock --draft {draft} --propose), "
    "then review and merge its pull request before tagging"
)


def _check_lock_resolved(recipe: Recipe) -> None:
    """A release build must reproduce the committed lock; one with unresolved entries never can."""
    path = recipe.folder / LOCK_FILE
    lock = load_lock(path)
    if lock is None:
        raise CheckFailed(f"{path}: missing; a release needs a committed lock", hint=_LOCK_HINT.format(draft=recipe.name))
    unresolved = lock.get("unresolved") or []
    if unresolved:
        raise CheckFailed(
            f"{path}: unresolved: {'; '.join(map(str, unresolved))}",
            hint=_LOCK_HINT.format(draft=recipe.name),
        )


def select_release(artifacts: Path, tag: str, merged_into: str | None = None) -> Selection:
    """The draft `tag` names, refused unless it is releasable, HEAD is the tag's commit, that
    commit is on `merged_into` (the default branch, e.g. `origin/main`) and its lock is resolved."""
    release = parse_release_tag(tag, single_releasable(artifacts))
    recipe = _releasable(artifacts, release.draft)
    repo = _open(artifacts)
    if repo is None:
        raise CheckFailed(f"tag {tag!r}: {artifacts} is not in a git checkout", hint="release from a clone of the project")
    head = _check_head_is(repo, tag)
    if merged_into is not None:
        import git

        try:
            branch = repo.commit(merged_into)
        except (git.BadName, ValueError):
            raise InputError(
                f"--merged-into {merged_into}: no such ref in {repo.working_dir}", hint="check out with the full history (fetch-depth: 0)"
            ) from None
        on_branch = repo.is_ancestor(repo.commit(head), branch)
        if not on_branch:
            raise CheckFailed(
                f"tag {tag!r}: commit {head[:12]} is not on {merged_into}",
                hint=f"release only reviewed commits: merge into {merged_into.rpartition('/')[2]}, then tag the merge commit",
            )
    _check_lock_resolved(recipe)
    return Selection(recipe, release, head)
