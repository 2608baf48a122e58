"""A proposed change to committed files, as a branch commit and a pull-request text for review.

The commit is built from a temporary index on top of HEAD, so the checkout, its index and the
current branch are left as they were; the branch holds exactly the given files' new contents.
The pull-request text (`# title`, blank line, body) is written beside the other outputs, for a
workflow to open or update the pull request with.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import git
from git.index.typ import BaseIndexEntry
from gitdb import IStream

from pipeline.card.markdown import fenced
from pipeline.checkpoint.files import atomic_write_bytes
from pipeline.errors import InputError

PULL_REQUEST_FILE = "pull-request.md"
FILE_MODE = 0o100644
REMOTE = "origin"


@dataclass(frozen=True)
class Proposal:
    """Files to change (paths relative to the repository root), and the pull request describing it."""

    branch: str
    title: str
    body: str
    files: Mapping[str, bytes]
    summary: str = ""  # the commit message's body; the pull request carries the details

    @property
    def message(self) -> str:
        return f"{self.title}\n\n{self.summary}".rstrip() + "\n"

    def markdown(self) -> str:
        return f"# {self.title}\n\n{self.body.rstrip()}\n"


@dataclass(frozen=True)
class ProposalResult:
    branch: str
    commit: str | None  # None when HEAD already holds every file as proposed
    changed: tuple[str, ...]
    pull_request: Path
    already_proposed: bool = False  # the branch held this very commit's content on this HEAD: it is kept, not rewritten


def open_repository(start: Path) -> git.Repo:
    """The git repository holding `start`; bad input when there is none."""
    try:
        return git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError(
            f"{start}: not inside a git repository", hint="a proposal is a branch commit; run it in the project checkout"
        ) from None


def relative_path(repo: git.Repo, path: Path) -> str:
    """`path` as git names it inside `repo`."""
    root = Path(repo.working_tree_dir or ".").resolve()
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise InputError(f"{path}: outside the repository at {root}") from None


def proposed_before(repo: git.Repo, branch: str) -> git.Commit | None:
    """The proposal already on `branch`: the remote's copy (what reviewers see) first, then the local one."""
    for ref in (f"refs/remotes/{REMOTE}/{branch}", f"refs/heads/{branch}"):
        try:
            return repo.commit(ref)
        except (git.BadName, ValueError):
            continue
    return None


def proposed_file(commit: git.Commit | None, path: str) -> bytes | None:
    """A file as an earlier proposal holds it, or None."""
    return None if commit is None else _blob_bytes(commit, path)


def propose(repo: git.Repo, proposal: Proposal, folder: Path) -> ProposalResult:
    """Commit the proposal on its branch (reset to HEAD first) and write `folder/pull-request.md`.

    An earlier proposal on the same HEAD with the same files is kept as it is, so a scheduled run
    that learns nothing new rewrites no branch and pushes nothing new.
    """
    head = repo.head.commit
    changed = tuple(sorted(path for path, data in proposal.files.items() if _blob_bytes(head, path) != data))
    pull_request = folder / PULL_REQUEST_FILE
    atomic_write_bytes(pull_request, proposal.markdown().encode("utf-8"))
    if not changed:
        return ProposalResult(proposal.branch, None, (), pull_request)
    if not repo.head.is_detached and repo.active_branch.name == proposal.branch:
        raise InputError(f"{proposal.branch}: is the checked-out branch", hint="check out the base branch, then propose again")
    index = git.IndexFile.new(repo, head.tree)  # in memory: the checkout's own index is never read or written
    entries = []
    for path in changed:
        stored = repo.odb.store(IStream(git.Blob.type, len(proposal.files[path]), io.BytesIO(proposal.files[path])))
        entries.append(BaseIndexEntry((FILE_MODE, stored.binsha, 0, path)))
    index.add(entries, write=False)
    tree = index.write_tree()
    previous = proposed_before(repo, proposal.branch)
    if previous is not None and previous.parents == (head,) and previous.tree.binsha == tree.binsha:
        repo.create_head(proposal.branch, previous, force=True)
        return ProposalResult(proposal.branch, previous.hexsha, changed, pull_request, already_proposed=True)
    try:
        commit = git.Commit.create_from_tree(repo, tree, proposal.message, parent_commits=[head], head=False)
    except ValueError as exc:  # no committer identity configured
        raise InputError(f"git: {exc}", hint="set git config user.name and user.email") from None
    repo.create_head(proposal.branch, commit, force=True)
    return ProposalResult(proposal.branch, commit.hexsha, changed, pull_request)


def card_diff_section(card_diff: str) -> list[str]:
    """A pull-request body's `### Card diff` lines: the diff folded under a summary, or a line saying it is unchanged."""
    if not card_diff:
        return ["", "### Card diff", "", "The card does not change."]
    summary = "<details><summary>README.md as this pull request changes it</summary>"
    return ["", "### Card diff", "", summary, "", fenced(card_diff, "diff").rstrip(), "", "</details>"]


def _blob_bytes(commit: git.Commit, path: str) -> bytes | None:
    try:
        blob = commit.tree / path
    except KeyError:
        return None
    return bytes(blob.data_stream.read())
