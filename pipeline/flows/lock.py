"""lock: resolve a draft's lock by building it, and hand the lock, config and card over for review.

For a draft whose committed lock is missing or still lists `unresolved` entries, this runs the one
build sequence (`flows.build`) and renders the card from the lock it writes. Without a proposal
the three files land in the draft's review folder, as `build` and `card` write them. With one they
are staged under `<workdir>/lock/proposal/`, so the checkout is not touched, then committed as
exactly those files on `lock/<draft>` and described in `<workdir>/lock/pull-request.md`: the
commits, the verify summary, the inspect verdict and the card diff.

A lock that is already resolved is left alone: nothing is read from the Hub and nothing written.
The weights stay in the workdir only; a release rebuilds them and must reproduce the lock.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from pipeline.card.markdown import escape_cell
from pipeline.checkpoint.files import read_json
from pipeline.flows.build import BuildResult, build
from pipeline.flows.proposal import Proposal, ProposalResult, card_diff_section, propose, relative_path
from pipeline.flows.runner import run_stages
from pipeline.recipe.layout import Artifacts
from pipeline.recipe.lock import load_lock
from pipeline.stages import card
from pipeline.stages.context import Context

BRANCH_PREFIX = "lock/"
SHORT = 12
REVIEW_FILES = ("lock", "config", "readme")  # the Artifacts fields a proposal commits


@dataclass(frozen=True)
class LockResult:
    """What `lock` did: `resolved` (the committed lock already was; nothing done) or `built`."""

    draft: str
    state: str
    review: Artifacts  # where the lock, config and card were written (or, resolved, where they are)
    build: BuildResult | None = None
    verify: Mapping[str, Any] | None = None
    proposal: ProposalResult | None = None

    def to_json(self) -> dict[str, Any]:
        proposal = self.proposal
        return {
            "draft": self.draft,
            "state": self.state,
            "files": {"lock": str(self.review.lock), "config": str(self.review.config), "readme": str(self.review.readme)},
            "build": self.build.to_json() if self.build else None,
            "verify": verify_summary(self.verify) if self.verify else None,
            "proposal": None
            if proposal is None
            else {
                "branch": proposal.branch,
                "commit": proposal.commit,
                "files": list(proposal.changed),
                "pull_request": str(proposal.pull_request),
            },
        }


def is_resolved(lock: Mapping[str, Any] | None) -> bool:
    """A lock nothing is left to fill in: no `unresolved` entry and every Hub commit pinned."""
    if lock is None or lock.get("unresolved"):
        return False
    return all(lock[role].get("commit") for role in ("source", "target") if lock[role].get("kind") == "hub")


def lock_folder(ctx: Context) -> Path:
    """Where a proposal is staged and its pull-request text written: `<workdir>/lock/`."""
    return ctx.workdir.root / "lock"


def lock_draft(ctx: Context, today: str, repo: git.Repo | None = None) -> LockResult:
    """Build the draft and write its resolved lock, config and card; with `repo`, propose them on `lock/<draft>`."""
    committed = ctx.artifacts
    if is_resolved(load_lock(committed.lock)):
        ctx.out.info(f"lock: {committed.lock} is already resolved; nothing to do")
        return LockResult(ctx.recipe.name, "resolved", committed)
    # Where the files go in the repository, known before the build so a wrong folder stops it early.
    paths = {} if repo is None else {name: relative_path(repo, getattr(committed, name)) for name in REVIEW_FILES}
    review = committed if repo is None else _staged(committed, lock_folder(ctx) / "proposal")
    built = build(ctx, today, locked=False, artifacts=review)
    run_stages(ctx, ("bench-import",))  # the card shows the benchmarks the recipe declares
    rendered = card.run(card.CardStageInputs(ctx.recipe, ctx.family, ctx.workdir.benchmarks, review))
    ctx.out.info(f"card: {rendered.readme} {'updated' if rendered.changed else 'unchanged'}")
    verify = read_json(ctx.workdir.verify_report, "run the verify stage first")
    result = LockResult(ctx.recipe.name, "built", review, built, verify)
    if repo is None:
        return result
    files = {paths[name]: getattr(review, name).read_bytes() for name in REVIEW_FILES}
    lock = load_lock(review.lock)
    assert lock is not None
    card_path = paths["readme"]
    old_card = committed.readme.read_text(encoding="utf-8") if committed.readme.exists() else ""
    card_diff = card.unified_diff(old_card, review.readme.read_text(encoding="utf-8"), f"a/{card_path}", f"b/{card_path}")
    proposal = Proposal(
        branch=BRANCH_PREFIX + ctx.recipe.name,
        title=pull_request_title(lock),
        body=pull_request_body(lock, verify, card_diff),
        files=files,
        summary=f"Built at the commits it pins; inspect: {(lock.get('inspect') or {}).get('verdict')}.",
    )
    return LockResult(ctx.recipe.name, "built", review, built, verify, propose(repo, proposal, lock_folder(ctx)))


def _staged(committed: Artifacts, folder: Path) -> Artifacts:
    """A fresh staging folder holding copies of the committed review files, so changes are told apart."""
    staged = Artifacts(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in REVIEW_FILES:
        if getattr(committed, name).exists():
            shutil.copyfile(getattr(committed, name), getattr(staged, name))
    return staged


def verify_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The verify record in a few numbers: checks passed, advisories raised, the draft's files and bytes."""
    checks = report.get("checks", [])
    return {
        "passed": bool(report.get("passed")),
        "checks": len(checks),
        "failed": [c["id"] for c in checks if not c["passed"]],
        "advisories": [f"{a['id']}: {a['evidence']}" for a in report.get("advisories", []) if not a["passed"]],
        "files": len(report.get("files", {})),
        "bytes": sum(f["size"] for f in report.get("files", {}).values()),
    }


def pull_request_title(lock: Mapping[str, Any]) -> str:
    verdict = (lock.get("inspect") or {}).get("verdict", "not inspected")
    return f"{lock['draft']}: resolve the lock at source {_short(lock['source'])}, target {_short(lock['target'])} (inspect: {verdict})"


def _short(ref: Mapping[str, Any]) -> str:
    return str(ref["commit"])[:SHORT] if ref.get("commit") else "local folder"


def pull_request_body(lock: Mapping[str, Any], verify: Mapping[str, Any], card_diff: str) -> str:
    """Markdown: the commits, the verify summary, the inspect verdict, what merging means, and the card diff."""
    summary = verify_summary(verify)
    inspect = lock.get("inspect") or {}
    lines = [
        "A build at the commits below resolved every entry of this draft's `draft.lock.json`. This pull request holds "
        "exactly the lock, the reviewed `config.json` and the card rendered from them; the weights were not kept.",
        "",
        "| | Repository | Revision | Commit |",
        "|---|---|---|---|",
    ]
    for role in ("source", "target"):
        ref = lock[role]
        where = escape_cell(ref.get("repo", "local folder"))
        lines.append(f"| {role.capitalize()} | {where} | {escape_cell(ref.get('revision', '-'))} | `{ref.get('commit')}` |")
    lines += ["", "### Verify", ""]
    state = "passed" if summary["passed"] else "**failed**"
    lines.append(
        f"- {state}: {summary['checks']} checks; the draft is {summary['files']} files, {summary['bytes']:,} bytes, "
        f"{len(lock['tensors'])} tensors, each with its sha256."
    )
    lines += [f"- advisory: {' '.join(advisory.split())}" for advisory in summary["advisories"]]
    lines += [
        "",
        "### Inspect",
        "",
        f"- **{inspect.get('verdict', 'not inspected')}**: {' '.join(str(inspect.get('summary', '')).split())}",
    ]
    lines += [f"- {' '.join(str(reason).split())}" for reason in inspect.get("reasons", [])]
    lines += ["", "### Merging", ""]
    if inspect.get("verdict") == "needed":
        lines.append(f"- The draft becomes releasable: add its version to `card.release_notes`, merge, then tag `{lock['draft']}/vX.Y.Z`.")
    else:
        lines.append(f"- inspect says `{inspect.get('verdict')}`: a release refuses this draft unless forced.")
    lines.append(
        "- The release workflow rebuilds the weights with `build --locked` at these commits, which must reproduce this lock and every byte of the draft."
    )
    lines += card_diff_section(card_diff)
    return "\n".join(lines) + "\n"
