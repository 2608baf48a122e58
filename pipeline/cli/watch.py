"""`python -m pipeline watch`: compare drafts with upstream and, with --propose, hand over the change."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.cli.commands import today
from pipeline.cli.output import Output
from pipeline.errors import InputError
from pipeline.recipe.layout import Workdir
from pipeline.recipe.loader import RECIPE_FILE, Recipe, load_recipe, recipe_path
from pipeline.recipe.versions import draft_names
from pipeline.stages.context import Context

SUMMARY = (
    "compare each draft's locked source and target commits with the Hub (no weights read); --propose writes a branch and pull-request text"
)
EXAMPLE = "python -m pipeline watch --draft demo\npython -m pipeline watch --all --propose --json"


def watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all",
        action="store_true",
        help="every draft under --artifacts (the offline demo's draft is left out); --workdir DIR then holds DIR/<draft>/",
    )
    parser.add_argument(
        "--propose",
        action="store_true",
        help="for each draft that moved: commit the re-pinned lock and re-rendered card on branch watch/<draft> "
        "and write <workdir>/watch/<draft>/pull-request.md",
    )
    parser.add_argument("--artifacts", default="artifacts", metavar="DIR", help="folder holding <draft>/draft.yaml (default: %(default)s)")
    parser.add_argument("--summary", metavar="PATH", help="also append the findings as Markdown to PATH (e.g. $GITHUB_STEP_SUMMARY)")


def _recipes(args: argparse.Namespace) -> list[Recipe]:
    if args.all and (args.draft or args.recipe):
        raise InputError("--all: give either --all or one draft (--draft/--recipe), not both")
    if args.all:
        from pipeline.rehearsal.demo import DEMO_RECIPE

        paths = [Path(args.artifacts) / name / RECIPE_FILE for name in draft_names(Path(args.artifacts))]
        return [load_recipe(path) for path in paths if path.resolve() != DEMO_RECIPE.resolve()]
    if not (args.draft or args.recipe):
        raise InputError("watch: name a draft with --draft NAME (or --recipe PATH), or give --all")
    return [load_recipe(recipe_path(args.draft, args.recipe, Path(args.artifacts)))]


def _workdir(args: argparse.Namespace, recipe: Recipe) -> Workdir:
    """--workdir is the draft's workdir, or with --all the folder holding one per draft (default build/)."""
    if args.all:
        return Workdir(Path(args.workdir or "build") / recipe.name)
    return Workdir(Path(args.workdir) if args.workdir else Path("build") / recipe.name)


def watch(args: argparse.Namespace, out: Output) -> int:
    """Exit 0 when nothing moved, 1 when something did (after writing any proposals)."""
    from pipeline.flows.watch import watch_draft
    from pipeline.flows.watch_report import report_json, summary_markdown

    checked_on = today()
    contexts = [Context(recipe=recipe, workdir=_workdir(args, recipe), out=out) for recipe in _recipes(args)]
    results = []
    for ctx in contexts:
        out.info(f"watch: {ctx.recipe.name}")
        results.append(watch_draft(ctx, checked_on))
    proposals: list[dict[str, Any]] = []
    if args.propose:
        from pipeline.flows.proposal import open_repository
        from pipeline.flows.watch_propose import propose_change

        for ctx, result in zip(contexts, results, strict=True):
            if result.lock is None:
                continue
            outcome = propose_change(ctx, result, open_repository(ctx.artifacts.folder))
            proposals.append(
                {
                    "draft": ctx.recipe.name,
                    "branch": outcome.branch,
                    "commit": outcome.commit,
                    "already_proposed": outcome.already_proposed,
                    "files": list(outcome.changed),
                    "pull_request": str(outcome.pull_request),
                }
            )
    reports = [result.report for result in results]
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as handle:
            handle.write(summary_markdown(reports, {p["draft"]: p["branch"] for p in proposals}))
    lines = [report.render() for report in reports]
    lines += [
        f"proposed: {p['branch']} at {p['commit'] or 'HEAD (nothing to commit)'}{' (as before, kept)' if p['already_proposed'] else ''};"
        f" {p['pull_request']}"
        for p in proposals
    ]
    out.result("\n".join(lines), {**report_json(reports), "proposals": proposals})
    return 1 if any(report.changed for report in reports) else 0
