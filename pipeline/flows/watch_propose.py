"""The watcher's proposal for one draft: the re-pinned lock, the card rendered from it, and the
pull-request text saying what moved, from which commit to which, the verdict and the card diff.

The card is rendered from a staging folder (`<workdir>/watch/<draft>/proposal/`, holding the
proposed lock and the committed config), so the checkout is not touched; the branch commit then
holds exactly the lock and card changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import git

from pipeline.card.markdown import escape_cell
from pipeline.checkpoint.files import atomic_write_bytes, dump_json
from pipeline.flows.proposal import Proposal, ProposalResult, card_diff_section, propose, proposed_before, proposed_file, relative_path
from pipeline.flows.runner import run_stages
from pipeline.flows.watch import WatchResult
from pipeline.flows.watch_report import SHORT, DraftWatch
from pipeline.recipe.layout import Artifacts
from pipeline.recipe.lock import same_finding
from pipeline.stages import card
from pipeline.stages.context import Context

BRANCH_PREFIX = "watch/"


def watch_folder(ctx: Context) -> Path:
    """Where the proposal for this draft is staged: `<workdir>/watch/<draft>/`."""
    return ctx.workdir.root / "watch" / ctx.recipe.name


def propose_change(ctx: Context, result: WatchResult, repo: git.Repo) -> ProposalResult:
    """Stage the new lock and card, commit them on `watch/<draft>` and write pull-request.md."""
    assert result.lock is not None
    committed, staged = ctx.artifacts, Artifacts(watch_folder(ctx) / "proposal")
    shutil.rmtree(staged.folder, ignore_errors=True)
    staged.folder.mkdir(parents=True)
    if committed.config.exists():
        shutil.copyfile(committed.config, staged.config)
    branch = BRANCH_PREFIX + ctx.recipe.name
    lock_path, card_path = relative_path(repo, committed.lock), relative_path(repo, committed.readme)
    lock_bytes = dump_json(_first_checked(result.lock, proposed_file(proposed_before(repo, branch), lock_path)))
    atomic_write_bytes(staged.lock, lock_bytes)
    run_stages(ctx, ("bench-import",))  # the card shows the benchmarks the recipe declares
    text = card.render_card(card.CardStageInputs(ctx.recipe, ctx.family, ctx.workdir.benchmarks, staged))
    atomic_write_bytes(staged.readme, text.encode("utf-8"))

    old_card = committed.readme.read_text(encoding="utf-8") if committed.readme.exists() else ""
    card_diff = card.unified_diff(old_card, text, f"a/{card_path}", f"b/{card_path}")
    report = result.report
    proposal = Proposal(
        branch=branch,
        title=pull_request_title(report),
        body=pull_request_body(report, card_diff),
        files={lock_path: lock_bytes, card_path: text.encode("utf-8")},
        summary="\n".join(report.details()),
    )
    return propose(repo, proposal, watch_folder(ctx))


def _first_checked(lock: dict[str, Any], proposed_lock: bytes | None) -> dict[str, Any]:
    """The lock with its inspection dated as when it was first proposed, if the finding is the same:
    a daily run that learns nothing new then proposes the same bytes."""
    try:
        earlier = (json.loads(proposed_lock) if proposed_lock else {}).get("inspect")
    except (ValueError, AttributeError):
        return lock
    finding = lock.get("inspect")
    if not finding or not isinstance(earlier, dict) or not same_finding(earlier, finding) or "checked_at" not in earlier:
        return lock
    return {**lock, "inspect": {**finding, "checked_at": earlier["checked_at"]}}


def pull_request_title(report: DraftWatch) -> str:
    parts = []
    source, target = report.source, report.target
    if source is not None and source.state == "bytes-unchanged":
        parts.append(f"re-pin the source at {source.new_commit[:SHORT]} (draft bytes unchanged)")
    elif source is not None and source.state == "rebuild-needed":
        parts.append(f"rebuild needed: the source moved to {source.new_commit[:SHORT]}")
    if target is not None and (target.moved or target.old_verdict != target.new_verdict):
        parts.append(f"target at {target.new_commit[:SHORT]}: {target.phrase}")
    return f"{report.draft}: " + "; ".join(parts)


def pull_request_body(report: DraftWatch, card_diff: str) -> str:
    """Markdown: the commits table, the evidence, what merging means, and the card diff."""
    lines = [
        "Upstream moved since this draft's `draft.lock.json` was written.",
        "",
        "| | Repository | Locked commit | New commit | Finding |",
        "|---|---|---|---|---|",
    ]
    if report.source is not None:
        s = report.source
        lines.append(f"| Source | {escape_cell(report.source_repo)} | `{s.old_commit}` | `{s.new_commit}` | {s.phrase} |")
    if report.target is not None:
        t = report.target
        lines.append(f"| Target | {escape_cell(report.target_repo)} | `{t.old_commit}` | `{t.new_commit}` | {t.phrase} |")
    lines += ["", "### Evidence", "", *(f"- {' '.join(line.split())}" for line in report.details()), "", "### Merging", ""]
    lines += _merging(report)
    lines += card_diff_section(card_diff)
    return "\n".join(lines) + "\n"


def _merging(report: DraftWatch) -> list[str]:
    lines = []
    source, target = report.source, report.target
    if source is not None and source.state == "bytes-unchanged":
        lines.append(
            "- The draft's tensor bytes are proven unchanged (every source shard holding one has the same LFS sha256); "
            "`python -m pipeline build --locked` at the new commits reproduces the same draft."
        )
    if source is not None and source.state == "rebuild-needed":
        lines.append(
            "- The draft must be rebuilt: the lock lists what changed under `unresolved`, and a release refuses it "
            "until a build at the new source commit fills in the tensor and file hashes."
        )
    if target is not None and target.new_verdict == "redundant":
        lines.append(
            f"- The target at `{target.new_commit}` ships its own MTP layers, so this draft is redundant for that revision; "
            "the card says so. Releasing that notice goes through `publish --force`, whose card says it was forced."
        )
    elif target is not None and target.new_verdict == "incompatible":
        lines.append("- The target no longer matches this draft; a release refuses it unless forced.")
    lines.append("- Merging and tagging is the normal release path.")
    return lines
