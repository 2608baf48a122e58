"""Handlers of the commands that work on one draft: its stages, build, status, card and inspect."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime, timezone
from pathlib import Path

from pipeline.cli.output import Output
from pipeline.errors import CheckFailed
from pipeline.flows.build import build
from pipeline.flows.runner import run_stages, status
from pipeline.recipe.layout import Workdir
from pipeline.recipe.loader import HubRef, load_recipe, recipe_path
from pipeline.recipe.lock import load_lock, pinned
from pipeline.remote.transport import RetryPolicy
from pipeline.stages import card
from pipeline.stages.context import Context


def context(args: argparse.Namespace, out: Output, *, pin: bool = False) -> Context:
    """The run's context; with `pin` (or --locked) sources are read at the commits the committed lock records."""
    recipe = load_recipe(recipe_path(args.draft, args.recipe))
    workdir = Workdir(Path(args.workdir) if args.workdir else Path("build") / recipe.name)
    ctx = Context(recipe=recipe, workdir=workdir, out=out, force=args.rerun)
    if not (pin or getattr(args, "locked", False)):
        return ctx
    committed = load_lock(ctx.artifacts.lock)
    pins: dict[str, HubRef] = {}
    if committed is not None:
        for role in ("source", "target"):
            locked = pinned(ctx.ref(role), committed[role])
            if isinstance(locked, HubRef) and locked != ctx.ref(role):
                pins[role] = locked
    return Context(recipe=recipe, workdir=workdir, out=out, force=args.rerun, pins=pins)


def today() -> str:
    """The clock is read here, at the edge; stages receive the date as data."""
    return datetime.now(timezone.utc).date().isoformat()


def _stage_lines(results: list[dict]) -> str:
    return "\n".join(f"{r['stage']}: {'skipped (unchanged)' if r['skipped'] else 'done'}" for r in results)


def run_named_stages(args: argparse.Namespace, out: Output) -> int:
    ctx = context(args, out)
    results = run_stages(ctx, (args.command,))
    out.result(_stage_lines(results), {"draft": ctx.recipe.name, "workdir": str(ctx.workdir.root), "stages": results})
    return 0


def build_command(args: argparse.Namespace, out: Output) -> int:
    ctx = context(args, out)
    if args.preflight:
        from pipeline.cli.preflight import preflight

        return preflight(ctx, out)
    result = build(ctx, today(), locked=args.locked)
    out.result(
        _stage_lines(result.stages) + f"\nlock: {result.lock_state}",
        {"draft": ctx.recipe.name, "workdir": str(ctx.workdir.root), **result.to_json()},
    )
    return 0


def build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--locked", action="store_true", help="fetch the locked commits and refuse any difference from the committed lock")
    parser.add_argument(
        "--preflight",
        action="store_true",
        help="only check that the workdir's filesystem can hold what the build will write (reads headers, writes nothing); exit 1 if not",
    )


def status_command(args: argparse.Namespace, out: Output) -> int:
    ctx = context(args, out)
    # One try per Hub question: status reports, it does not wait out an outage.
    ctx = dataclasses.replace(ctx, recipe=dataclasses.replace(ctx.recipe, retries=RetryPolicy(attempts=1, backoff_seconds=0)))
    rows = status(ctx)
    human = "\n".join(f"{row['stage']:<12} {'current' if row['current'] else 'would run'}: {row['reason']}" for row in rows)
    out.result(human, {"draft": ctx.recipe.name, "stages": rows})
    return 0


def card_command(args: argparse.Namespace, out: Output) -> int:
    ctx = context(args, out)
    inputs = card.inputs_for(ctx)
    if args.check:
        built = ctx.workdir.draft / "config.json"
        if not built.exists():
            out.info("card --check: no built draft in the workdir, so config.json is not compared")
        diff = card.check(inputs, built)
        if diff:
            out.stdout.write(diff)
            raise CheckFailed(
                f"{inputs.readme}: differs from a fresh render", hint=f"run: python -m pipeline card --draft {ctx.recipe.name}, then commit"
            )
        out.result(f"{inputs.readme}: matches a fresh render", {"readme": str(inputs.readme), "matches": True})
        return 0
    if args.diff == "hub":
        tag, diff = card.diff_against_release(inputs, ctx.api, ctx.recipe.retries)
        out.result(diff or f"no difference from the card of {tag or 'the destination (no release yet)'}", {"release": tag, "diff": diff})
        return 0
    # Through the runner, so `status` knows the card was rendered; forced, since a render is cheap.
    [result] = run_stages(dataclasses.replace(ctx, force=True), ("card",))
    out.result(
        f"{result['readme']}: {'updated' if result['changed'] else 'unchanged'}",
        {"readme": result["readme"], "sha256": result["sha256"], "changed": result["changed"]},
    )
    return 0


def card_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff if the committed README.md or config.json differs from a fresh render"
    )
    parser.add_argument(
        "--diff", choices=["hub"], help="print the diff between a fresh render and the card of the destination's latest release tag"
    )


def inspect_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.inspect import inspect_recipe

    report = inspect_recipe(context(args, out), today=today())
    out.result(report.render(), report.to_json())
    return 0
