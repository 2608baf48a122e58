"""The bench-plan command: write the `vllm bench sweep serve` inputs of the recipe's benchmark plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.bench.plan import PlanInputs, plan_files
from pipeline.checkpoint.files import atomic_write_bytes
from pipeline.cli.output import Output
from pipeline.errors import InputError
from pipeline.recipe.loader import HubRef, load_recipe, recipe_path


def bench_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="folder to write serve_params.json, bench_params.json, run.sh and RUN.md into (created if needed; those four are replaced)",
    )


def bench_plan_command(args: argparse.Namespace, out: Output) -> int:
    recipe = load_recipe(recipe_path(args.draft, args.recipe))
    spec = recipe.benchmarks
    if spec is None or spec.plan is None:
        raise InputError(f"{recipe.path}: benchmarks.plan: not in the recipe", hint="add a benchmarks.plan section (README, Benchmarks)")
    plan = spec.plan
    if not isinstance(recipe.target, HubRef):
        raise InputError(
            f"{recipe.path}: target: a local folder; vLLM on the GPU host serves a Hub repo", hint="name the target's Hub repo"
        )
    draft_model = plan.draft or (recipe.destination.repo_id if recipe.destination else None)
    if draft_model is None:
        raise InputError(
            f"{recipe.path}: benchmarks.plan.draft: not given, and the recipe has no destination",
            hint="set benchmarks.plan.draft to the path or repo vLLM loads the draft from",
        )
    planned = plan_files(PlanInputs(recipe.name, plan, recipe.target.repo_id, recipe.target.revision, draft_model))
    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: not a folder", hint="give --out a folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = {name: atomic_write_bytes(folder / name, data) for name, data in planned.files.items()}
    (folder / "run.sh").chmod(0o755)
    if planned.placeholders:
        count = len(planned.placeholders)
        out.warn(
            f"bench-plan: benchmarks.plan names {count} placeholder prompt file(s) ({planned.placeholders[0]}, ...); "
            "run.sh refuses to start until the recipe names real files (RUN.md lists them)"
        )
    human = (
        f"{folder}: {', '.join(planned.files)} written\n"
        f"{len(planned.serve_names)} servers x {len(planned.cells)} cells x {plan.runs_per_cell} runs = "
        f"{planned.runs * plan.runs_per_cell} measured runs; see {folder / 'RUN.md'}"
    )
    data = {
        "draft": recipe.name,
        "out": str(folder),
        "files": written,
        "image": plan.image,
        "servers": list(planned.serve_names),
        "cells": [cell.name for cell in planned.cells],
        "runs_per_cell": plan.runs_per_cell,
        "placeholders": list(planned.placeholders),
    }
    out.result(human, data)
    return 0
