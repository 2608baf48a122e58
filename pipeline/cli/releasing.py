"""The release side of the command line: which tag a release publishes, and `drafts`, the release
workflow's gate that turns a pushed tag into the one draft it may publish."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from pipeline.card.render import escape_cell
from pipeline.cli.output import Output
from pipeline.errors import InputError, PipelineError
from pipeline.recipe.loader import Recipe
from pipeline.recipe.versions import ReleaseVersion, drafts_to_release, release_version, select_release, single_releasable


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


def drafts(args: argparse.Namespace, out: Output) -> int:
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
