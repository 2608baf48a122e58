"""Handlers of the release commands: upload, publish and drafts (the release workflow's matrix)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli.commands import context, today
from pipeline.cli.output import Output
from pipeline.recipe.versions import ReleaseVersion, draft_names, drafts_to_release, release_version
from pipeline.stages.context import Context

if TYPE_CHECKING:
    from pipeline.flows.publish import ReleaseReport


def release_version_of(ctx: Context) -> ReleaseVersion:
    """The version the git tag on HEAD names for this draft (a dev version when untagged)."""
    drafts = draft_names(ctx.recipe.folder.parent)
    return release_version(ctx.recipe.folder, ctx.recipe.name, single_draft=len(drafts) == 1)


def release_result(args: argparse.Namespace, out: Output, ctx: Context, report: ReleaseReport) -> int:
    from pipeline.flows.publish import SUMMARY_LIMIT_BYTES, describe, summary_markdown

    if args.summary:
        # GitHub gives each step a fresh summary file; what an earlier command wrote counts against the limit.
        summary = Path(args.summary)
        room = SUMMARY_LIMIT_BYTES - (summary.stat().st_size if summary.exists() else 0)
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(summary_markdown(ctx.recipe.name, report, args.dry_run, room))
    out.result(describe(report, args.dry_run), {"dry_run": args.dry_run, **report.to_json()})
    return 0


def upload_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.publish import ReleaseOptions, release

    ctx = context(args, out)
    options = ReleaseOptions(release_version_of(ctx), dry_run=args.dry_run, force=args.force, from_lock=args.from_lock)
    return release_result(args, out, ctx, release(ctx, options))


def upload_options(parser: argparse.ArgumentParser) -> None:
    release_options(parser)
    parser.add_argument(
        "--from-lock",
        action="store_true",
        help="with --dry-run: plan the draft's files from the committed lock, so no built draft (no weights) is needed",
    )


def publish_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.publish import ReleaseOptions, publish

    ctx = context(args, out, pin=True)
    options = ReleaseOptions(release_version_of(ctx), dry_run=args.dry_run, force=args.force)
    return release_result(args, out, ctx, publish(ctx, options, today()))


def release_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="plan only: compare with the destination and print the plan, write nothing to the Hub"
    )
    parser.add_argument(
        "--force", action="store_true", help="publish even if inspection found the draft redundant or incompatible (the card says so)"
    )
    parser.add_argument(
        "--summary",
        metavar="PATH",
        help="also append the plan, outcome and card diff as Markdown to PATH, cut to GitHub's 1 MiB limit (e.g. $GITHUB_STEP_SUMMARY)",
    )


def drafts_command(args: argparse.Namespace, out: Output) -> int:
    recipes = drafts_to_release(Path(args.artifacts), tag=args.tag, only=args.draft)
    rows = [{"draft": r.name, "destination": r.destination.repo_id if r.destination else None} for r in recipes]
    out.result("\n".join(f"{row['draft']}\t{row['destination']}" for row in rows), rows)
    return 0


def drafts_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", metavar="TAG", help="a release tag: <draft>/vX.Y.Z names that draft, vX.Y.Z the only draft")
    parser.add_argument("--draft", metavar="NAME", help="only this draft (refused unless it is releasable)")
    parser.add_argument("--artifacts", default="artifacts", metavar="DIR", help="folder holding <draft>/draft.yaml (default: %(default)s)")
