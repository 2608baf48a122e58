"""Command line: `python -m pipeline <command>`; `main(argv)` is the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import __version__
from pipeline.cli import releasing
from pipeline.cli.output import Output
from pipeline.errors import CheckFailed, InputError, PipelineError
from pipeline.flows.runner import STAGE_NAMES, STAGES, Context, run_stages, status
from pipeline.recipe.loader import HubRef, load_recipe, recipe_path
from pipeline.recipe.lock import LOCK_FILE, load_lock, pinned, write_or_check

if TYPE_CHECKING:
    from pipeline.flows.publish import ReleaseReport
from pipeline.recipe.layout import Workdir

DEBUG_ENV = "PIPELINE_DEBUG"  # set to 1 to see tracebacks of our own errors
BUILD_STAGES = ("fetch", "extract", "config-fix", "verify")
Handler = Callable[[argparse.Namespace, Output], int]
Options = Callable[[argparse.ArgumentParser], None]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors through our error path (exit 2, one line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, a real example, its handler and any options of its own."""

    name: str
    summary: str
    example: str
    handler: Handler
    options: Options | None = None
    uses_recipe: bool = True


def _draft_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("draft selection")
    group.add_argument("--draft", metavar="NAME", help="draft under artifacts/NAME/draft.yaml")
    group.add_argument("--recipe", metavar="PATH", help="a recipe file anywhere (instead of --draft)")
    group.add_argument("--workdir", metavar="DIR", help="heavy outputs and stage records (default: build/<draft>/)")
    group.add_argument("--rerun", action="store_true", help="run stages even if their inputs and outputs are unchanged")


def _output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    group.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")
    group.add_argument("-q", "--quiet", action="store_true", help="only errors and the result")


def _context(args: argparse.Namespace, out: Output, *, pin: bool = False) -> Context:
    """The run's context; with `pin` (or --locked) sources are read at the commits the committed lock records."""
    path = recipe_path(args.draft, args.recipe)
    recipe = load_recipe(path)
    workdir = Path(args.workdir) if args.workdir else Path("build") / recipe.name
    ctx = Context(recipe=recipe, workdir=Workdir(workdir), out=out, force=args.rerun)
    if pin or getattr(args, "locked", False):
        committed = load_lock(recipe.folder / LOCK_FILE)
        if committed is not None:
            for role, ref in (("source", recipe.source), ("target", recipe.target)):
                locked = pinned(ref, committed[role])
                if isinstance(locked, HubRef) and locked != ref:
                    ctx.pins[role] = locked
    return ctx


def _stage_lines(results: list[dict]) -> str:
    return "\n".join(f"{r['stage']}: {'skipped (unchanged)' if r['skipped'] else 'done'}" for r in results)


def _run_named_stages(names: tuple[str, ...]) -> Handler:
    def handler(args: argparse.Namespace, out: Output) -> int:
        ctx = _context(args, out)
        results = run_stages(ctx, names)
        out.result(_stage_lines(results), {"draft": ctx.recipe.name, "workdir": str(ctx.workdir.root), "stages": results})
        return 0

    return handler


def _today() -> str:
    """The clock is read here, at the edge; stages receive the date as data."""
    return datetime.now(timezone.utc).date().isoformat()


def _build(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.inspect import inspect_recipe
    from pipeline.flows.publish import inspect_summary

    ctx = _context(args, out)
    results = run_stages(ctx, BUILD_STAGES)
    finding = inspect_summary(inspect_recipe(ctx, _today()))
    lock_path, changed = write_or_check(ctx.recipe, ctx.workdir, locked=args.locked, inspect=finding)
    state = "reproduced" if args.locked else ("updated" if changed else "unchanged")
    out.info(f"inspect: {finding['verdict']}: {finding['summary']}")
    out.info(f"lock: {lock_path} {state}")
    data = {
        "draft": ctx.recipe.name,
        "workdir": str(ctx.workdir.root),
        "stages": results,
        "inspect": finding,
        "lock": {"path": str(lock_path), "state": state},
    }
    out.result(_stage_lines(results) + f"\nlock: {state}", data)
    return 0


def _build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--locked", action="store_true", help="fetch the locked commits and refuse any difference from the committed lock")


def _status(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(args, out)
    rows = status(ctx)
    human = "\n".join(f"{row['stage']:<12} {'current' if row['current'] else 'would run'}: {row['reason']}" for row in rows)
    out.result(human, {"draft": ctx.recipe.name, "stages": rows})
    return 0


def _card(args: argparse.Namespace, out: Output) -> int:
    from pipeline.stages import card

    ctx = _context(args, out)
    inputs = card.CardStageInputs(ctx.recipe, ctx.family, ctx.workdir.benchmarks)
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
    result = card.run(inputs)
    out.result(
        f"{result.readme}: {'updated' if result.changed else 'unchanged'}",
        {"readme": str(result.readme), "sha256": result.sha256, "changed": result.changed},
    )
    return 0


def _card_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff if the committed README.md or config.json differs from a fresh render"
    )
    parser.add_argument(
        "--diff", choices=["hub"], help="print the diff between a fresh render and the card of the destination's latest release tag"
    )


def _inspect(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.inspect import inspect_recipe

    report = inspect_recipe(_context(args, out), today=_today())
    out.result(report.render(), report.to_json())
    return 0


def _release_result(args: argparse.Namespace, out: Output, ctx: Context, report: ReleaseReport) -> int:
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


def _upload(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.publish import ReleaseOptions, release

    ctx = _context(args, out)
    options = ReleaseOptions(
        releasing.version_to_release(ctx.recipe, args),
        dry_run=args.dry_run,
        force=args.force,
        from_lock=args.from_lock,
        attested=releasing.attested(args),
    )
    return _release_result(args, out, ctx, release(ctx, options))


def _upload_options(parser: argparse.ArgumentParser) -> None:
    _release_options(parser)
    parser.add_argument(
        "--from-lock",
        action="store_true",
        help="with --dry-run: plan the draft's files from the committed lock, so no built draft (no weights) is needed",
    )


def _publish(args: argparse.Namespace, out: Output) -> int:
    from pipeline.flows.publish import ReleaseOptions, publish

    ctx = _context(args, out, pin=True)
    options = ReleaseOptions(
        releasing.version_to_release(ctx.recipe, args), dry_run=args.dry_run, force=args.force, attested=releasing.attested(args)
    )
    return _release_result(args, out, ctx, publish(ctx, options, _today()))


def _release_options(parser: argparse.ArgumentParser) -> None:
    releasing.tag_option(parser)
    releasing.subject_options(parser)
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


def _demo(args: argparse.Namespace, out: Output) -> int:
    from pipeline.rehearsal.demo import run_demo

    return run_demo(Path(args.root), out, refresh=args.refresh_artifacts)


def _demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default="build/demo",
        metavar="DIR",
        help="where the demo keeps its Hub, synthetic weights and workdir (default: %(default)s)",
    )
    parser.add_argument(
        "--refresh-artifacts", action="store_true", help="rewrite artifacts/demo's lock, config and card from this run before publishing"
    )


def _hub(args: argparse.Namespace, out: Output) -> int:
    from pipeline.rehearsal.hub import serve

    if args.hub_command != "serve":
        raise InputError("hub: the only action is 'serve'")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.public:
        raise InputError(f"--host {args.host}: the embedded Hub listens on loopback unless --public is given")

    def ready(url: str) -> None:
        out.info(f"embedded Hub serving {Path(args.root).resolve()} at {url}")
        out.info(f"use it with: HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1 hf upload ... (Ctrl-C stops it)")

    serve(Path(args.root), args.host, args.port, on_ready=ready)
    return 0


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hub_command", metavar="serve", choices=["serve"], help="run the embedded Hub until interrupted")
    parser.add_argument("--root", required=True, metavar="DIR", help="folder holding the repos (created if missing; kept between runs)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed on start)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--public", action="store_true", help="allow a non-loopback --host")


def _synth(args: argparse.Namespace, out: Output) -> int:
    from pipeline.families import FAMILIES
    from pipeline.rehearsal.synthetic import TARGET_VARIANTS, SyntheticSpec, write_source, write_target
    from pipeline.rehearsal.synthetic_families import FamilySpec, write_family_source, write_family_target

    if args.family not in FAMILIES:
        raise InputError(f"--family: must be one of {', '.join(FAMILIES)}")
    if args.target_variant not in TARGET_VARIANTS:
        raise InputError(f"--target-variant: must be one of {', '.join(TARGET_VARIANTS)}")
    root = Path(args.out)
    if args.family == "step3p7":
        spec = SyntheticSpec.real_shapes if args.real_shapes else SyntheticSpec
        write_source(root / "source", spec(seed=args.seed, shards=args.shards))
        write_target(root / "target", spec(seed=args.seed, shards=args.shards), args.target_variant)
    else:
        if args.real_shapes:
            raise InputError("--real-shapes: only the step3p7 generator knows real tensor sizes")
        family_spec = FamilySpec(seed=args.seed, shards=args.shards)
        write_family_source(root / "source", args.family, family_spec)
        write_family_target(root / "target", args.family, family_spec, args.target_variant)
    out.result(f"wrote {root / 'source'} and {root / 'target'}", {"source": str(root / "source"), "target": str(root / "target")})
    return 0


def _synth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write source/ and target/ into")
    parser.add_argument(
        "--family", default="step3p7", metavar="NAME", help="model family of the synthetic checkpoint (default: %(default)s)"
    )
    parser.add_argument(
        "--target-variant",
        default="no-mtp",
        metavar="KIND",
        help="no-mtp, mtp-shard, incomplete-mtp, other-vocab or other-hidden (default: %(default)s)",
    )
    parser.add_argument("--real-shapes", action="store_true", help="the released tensor sizes (about 6 GB of MTP tensors)")
    parser.add_argument("--shards", type=int, default=4, help="number of source shards (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for bytes and shard layout (default: %(default)s)")


COMMANDS: tuple[Command, ...] = (
    *(
        Command(stage.name, stage.summary, f"python -m pipeline {stage.name} --draft demo", _run_named_stages((stage.name,)))
        for stage in STAGES
    ),
    Command(
        "build",
        "run fetch, extract, config-fix and verify in order, then write (or with --locked, check) the lock",
        "python -m pipeline build --draft demo\npython -m pipeline build --draft demo --locked",
        _build,
        _build_options,
    ),
    Command("status", "show which stages would run and why (reads records only)", "python -m pipeline status --draft demo --json", _status),
    Command(
        "card",
        "render the model card README.md from the lock, config and benchmarks (no weights needed)",
        "python -m pipeline card --draft demo\npython -m pipeline card --draft demo --check\npython -m pipeline card --draft demo --diff hub",
        _card,
        _card_options,
    ),
    Command(
        "upload",
        "release the built, verified draft: one Hub commit and one tag (no stage is rerun)",
        "python -m pipeline upload --draft demo --dry-run --json\npython -m pipeline upload --draft demo --dry-run --from-lock\n"
        'python -m pipeline upload --draft demo --summary "$GITHUB_STEP_SUMMARY"',
        _upload,
        _upload_options,
    ),
    Command(
        "publish",
        "run every stage in order, then release: one commit and tag v<version> from the git tag",
        "python -m pipeline publish --draft demo --dry-run\ngit tag D/v1.0.0 && python -m pipeline publish --draft D --tag D/v1.0.0",
        _publish,
        _release_options,
    ),
    Command(
        "drafts",
        "list the releasable drafts, or check the one a pushed release tag names: on the default branch, lock resolved",
        "python -m pipeline drafts --json\n"
        "python -m pipeline drafts --tag step-3.7-flash-mtp-draft/v1.0.0 --merged-into origin/main --json",
        releasing.drafts,
        releasing.drafts_options,
        uses_recipe=False,
    ),
    Command(
        "demo",
        "rehearse a whole release offline: embedded Hub, synthetic weights, publish, then a no-op second run",
        "python -m pipeline demo",
        _demo,
        _demo_options,
        uses_recipe=False,
    ),
    Command(
        "hub",
        "serve the embedded Hub-compatible server, to rehearse releases with HF_ENDPOINT and the hf CLI",
        "python -m pipeline hub serve --root build/hub --port 8765",
        _hub,
        _hub_options,
        uses_recipe=False,
    ),
    Command(
        "inspect",
        "say whether the target revision still needs the draft: needed, redundant or incompatible (reads headers only)",
        "python -m pipeline inspect --draft demo\npython -m pipeline inspect --recipe path/to/draft.yaml --json",
        _inspect,
    ),
    Command(
        "synth",
        "write a synthetic BF16 source (with MTP layers) and a quantized-like target for any family",
        "python -m pipeline synth --out /tmp/synthetic --target-variant mtp-shard",
        _synth,
        _synth_options,
        uses_recipe=False,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m pipeline",
        description="Build, verify and publish speculative-decoding MTP draft models to the Hugging Face Hub.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stages in order: "
        + " -> ".join(STAGE_NAMES)
        + f"\nExit codes: 0 ok, 1 refused, 2 bad input, 3 remote failed.\nSet {DEBUG_ENV}=1 to see tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.summary,
            description=command.summary[0].upper() + command.summary[1:] + ".",
            epilog="Example:\n  " + command.example.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command.options:
            command.options(sub)
        if command.uses_recipe:
            _draft_options(sub)
        _output_options(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None, out: Output | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 refused, 2 bad input, 3 remote failed)."""
    parser = build_parser()
    out = out or Output()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=out.stderr)
        return 2
    if args.command is None:
        parser.print_help(out.stderr)
        return 2
    out.json_mode = args.json
    out.verbosity = 1 if args.verbose else -1 if args.quiet else 0
    try:
        return int(args.handler(args, out))
    except PipelineError as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(f"error: {exc.message}", file=out.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=out.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=out.stderr)
        return 130


def entrypoint() -> int:
    return main(sys.argv[1:])
