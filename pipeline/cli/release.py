"""Handlers of the release commands: upload, publish and drafts (the release workflow's gate).

A release publishes exactly the git tag it names (`--tag`, or the tag a GitHub Actions run was
started by), refused unless HEAD is that tag's commit; `drafts --tag` turns a pushed tag into the
one draft it may publish, or says in the job summary why not.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.card.markdown import escape_cell
from pipeline.cli.commands import context, today
from pipeline.cli.output import Output
from pipeline.errors import InputError, PipelineError
from pipeline.recipe.loader import Recipe
from pipeline.recipe.versions import ReleaseVersion, drafts_to_release, release_version, select_release, single_releasable
from pipeline.stages.context import Context

if TYPE_CHECKING:
    from pipeline.flows.publish import ReleaseReport


def release_result(args: argparse.Namespace, out: Output, ctx: Context, report: ReleaseReport) -> int:
    from pipeline.flows.publish import SUMMARY_LIMIT_BYTES, describe, summary_markdown
    from pipeline.flows.subjects import release_subjects, write_subjects

    if args.summary:
        # GitHub gives each step a fresh summary file; what an earlier command wrote counts against the limit.
        summary = Path(args.summary)
        room = SUMMARY_LIMIT_BYTES - (summary.stat().st_size if summary.exists() else 0)
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(summary_markdown(ctx.recipe.name, report, args.dry_run, room))
    if args.write_subjects:
        write_subjects(Path(args.write_subjects), release_subjects(report.plan))
    out.result(describe(report, args.dry_run), {"dry_run": args.dry_run, **report.to_json()})
    return 0


def upload_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.publish import ReleaseOptions, release

    ctx = context(args, out)
    options = ReleaseOptions(
        version_to_release(ctx.recipe, args),
        dry_run=args.dry_run,
        force=args.force,
        from_lock=args.from_lock,
        attested=attested(args),
    )
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
    options = ReleaseOptions(version_to_release(ctx.recipe, args), dry_run=args.dry_run, force=args.force, attested=attested(args))
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
    tag_option(parser)
    subject_options(parser)


def tag_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tag",
        metavar="TAG",
        help="the git release tag to publish (<draft>/vX.Y.Z, or vX.Y.Z with one releasable draft); refused unless HEAD is "
        "its commit (default: $GITHUB_REF_NAME when $GITHUB_REF_TYPE is tag, else the one release tag of the draft on HEAD)",
    )


def subject_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write-subjects",
        metavar="PATH",
        help="also write `sha256  path` for every file the release commits, the subjects to attest before the upload",
    )
    parser.add_argument(
        "--attested",
        metavar="PATH",
        help="refuse unless the files the release commits are exactly those in PATH with those sha256 (see --write-subjects)",
    )


def attested(args: argparse.Namespace) -> Path | None:
    return Path(args.attested) if args.attested else None


def requested_tag(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """`--tag`, or in a GitHub Actions run started by a tag, that tag."""
    if args.tag:
        return str(args.tag)
    if environ.get("GITHUB_REF_TYPE") == "tag" and environ.get("GITHUB_REF_NAME"):
        return environ["GITHUB_REF_NAME"]
    return None


def version_to_release(recipe: Recipe, args: argparse.Namespace) -> ReleaseVersion:
    """The version the release commands publish: exactly the requested tag's, at HEAD."""
    single = single_releasable(recipe.folder.parent) == recipe.name
    return release_version(recipe.folder, recipe.name, single_draft=single, tag=requested_tag(args, os.environ))


def _row(recipe: Recipe) -> dict[str, str | None]:
    return {"draft": recipe.name, "destination": recipe.destination.repo_id if recipe.destination else None}


def _summary(title: str, rows: list[dict[str, str | None]]) -> str:
    columns = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(c.capitalize() for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"`{escape_cell(row[c])}`" for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _refusal(error: PipelineError) -> str:
    hint = f"\n\nHint: {escape_cell(error.hint)}" if error.hint else ""
    return f"### Release refused\n\n{escape_cell(error.message)}{hint}\n"


def _append(path: str | None, text: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)


def drafts_command(args: argparse.Namespace, out: Output) -> int:
    """`drafts`: every releasable draft, or with --tag the one release a pushed tag may start."""
    artifacts = Path(args.artifacts)
    try:
        if args.tag is not None:
            selection = select_release(artifacts, args.tag, merged_into=args.merged_into)
            rows = [{**_row(selection.recipe), "tag": selection.tag.name, "commit": selection.commit}]
        elif args.merged_into is not None:
            raise InputError("--merged-into checks a release commit: it needs --tag")
        else:
            rows = [_row(recipe) for recipe in drafts_to_release(artifacts, only=args.draft)]
    except PipelineError as error:
        _append(args.summary, _refusal(error))
        raise
    _append(args.summary, _summary("Release selected" if args.tag else "Releasable drafts", rows))
    out.result("\n".join("\t".join(str(value) for value in row.values()) for row in rows), rows)
    return 0


def drafts_options(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--tag",
        metavar="TAG",
        help="a pushed release tag: the draft it names, refused unless HEAD is its commit and the draft's lock is fully resolved",
    )
    choice.add_argument("--draft", metavar="NAME", help="only this draft (refused unless it is releasable)")
    parser.add_argument(
        "--merged-into",
        metavar="REF",
        help="with --tag: refuse unless the tagged commit is on REF, the default branch (e.g. origin/main)",
    )
    parser.add_argument("--artifacts", default="artifacts", metavar="DIR", help="folder holding <draft>/draft.yaml (default: %(default)s)")
    parser.add_argument("--summary", metavar="PATH", help="also append the selection, or why it was refused, as Markdown to PATH")
