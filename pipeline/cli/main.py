"""Command line: `python -m pipeline <command>`; `main(argv)` is the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline import __version__
from pipeline.cli import bench_plan, commands, rehearse, release
from pipeline.cli import lock as lock_command
from pipeline.cli import watch as watch_command
from pipeline.cli.output import Output
from pipeline.errors import PipelineError
from pipeline.flows.runner import STAGE_NAMES, STAGES

DEBUG_ENV = "PIPELINE_DEBUG"  # set to 1 to see tracebacks of our own errors
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


# The commands that run stages through the runner, and so can be told to rerun unchanged ones.
STAGE_RUNNING_COMMANDS = frozenset({*STAGE_NAMES, "build", "publish", "lock"}) - {"card"}


def _draft_options(parser: argparse.ArgumentParser, *, runs_stages: bool) -> None:
    group = parser.add_argument_group("draft selection")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--draft", metavar="NAME", help="draft under artifacts/NAME/draft.yaml")
    which.add_argument("--recipe", metavar="PATH", help="a recipe file anywhere (instead of --draft)")
    group.add_argument("--workdir", metavar="DIR", help="heavy outputs and stage records (default: build/<draft>/)")
    if runs_stages:
        group.add_argument("--rerun", action="store_true", help="run stages even if their inputs and outputs are unchanged")
    parser.set_defaults(rerun=False)


def _output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    group.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")
    group.add_argument("-q", "--quiet", action="store_true", help="only errors and the result")


COMMANDS: tuple[Command, ...] = (
    *(
        Command(stage.name, stage.summary, f"python -m pipeline {stage.name} --draft demo", commands.run_named_stages)
        for stage in STAGES
        if stage.name != "card"  # the card command below also checks and diffs
    ),
    Command(
        "bench-plan",
        "write the inputs of `vllm bench sweep serve` for the recipe's benchmarks.plan: params files, run.sh and RUN.md",
        "python -m pipeline bench-plan --draft step-3.7-flash-mtp-draft --out build/bench-plan",
        bench_plan.bench_plan_command,
        bench_plan.bench_plan_options,
    ),
    Command(
        "build",
        "run fetch, extract, config-fix and verify in order, then write (or with --locked, check) the lock",
        "python -m pipeline build --draft demo\npython -m pipeline build --draft demo --locked\npython -m pipeline build --draft demo --preflight",
        commands.build_command,
        commands.build_options,
    ),
    Command(
        "status",
        "show which stages would run and why, from the stage records (asks the Hub only where the source and target are now)",
        "python -m pipeline status --draft demo --json",
        commands.status_command,
    ),
    Command(
        "card",
        "render the model card README.md from the lock, config and benchmarks (no weights needed)",
        "python -m pipeline card --draft demo\npython -m pipeline card --draft demo --check\npython -m pipeline card --draft demo --diff hub",
        commands.card_command,
        commands.card_options,
    ),
    Command(
        "upload",
        "release the built, verified draft: one Hub commit and one tag (no stage is rerun)",
        "python -m pipeline upload --draft demo --dry-run --json\npython -m pipeline upload --draft demo --dry-run --from-lock\n"
        'python -m pipeline upload --draft demo --summary "$GITHUB_STEP_SUMMARY"',
        release.upload_command,
        release.upload_options,
    ),
    Command(
        "publish",
        "run every stage in order, then release: one commit and tag v<version> from the git tag",
        "python -m pipeline publish --draft demo --dry-run\ngit tag D/v1.0.0 && python -m pipeline publish --draft D --tag D/v1.0.0",
        release.publish_command,
        release.release_options,
    ),
    Command(
        "drafts",
        "list the releasable drafts, or check the one a pushed release tag names: on the default branch, lock resolved",
        "python -m pipeline drafts --json\n"
        "python -m pipeline drafts --tag step-3.7-flash-mtp-draft/v1.0.0 --merged-into origin/main --json",
        release.drafts_command,
        release.drafts_options,
        uses_recipe=False,
    ),
    Command(
        "demo",
        "rehearse a whole release offline: embedded Hub, synthetic weights, publish, then a no-op second run",
        "python -m pipeline demo",
        rehearse.demo_command,
        rehearse.demo_options,
        uses_recipe=False,
    ),
    Command(
        "hub",
        "serve the embedded Hub-compatible server, to rehearse releases with HF_ENDPOINT and the hf CLI",
        "python -m pipeline hub serve --root build/hub --port 8765",
        rehearse.hub_command,
        rehearse.hub_options,
        uses_recipe=False,
    ),
    Command(
        "inspect",
        "say whether the target revision still needs the draft: needed, redundant or incompatible (reads headers only)",
        "python -m pipeline inspect --draft demo\npython -m pipeline inspect --recipe path/to/draft.yaml --json",
        commands.inspect_command,
    ),
    Command("lock", lock_command.SUMMARY, lock_command.EXAMPLE, lock_command.lock_command, lock_command.lock_options),
    Command("watch", watch_command.SUMMARY, watch_command.EXAMPLE, watch_command.watch, watch_command.watch_options),
    Command(
        "synth",
        "write a synthetic BF16 source (with MTP layers) and a quantized-like target for any family",
        "python -m pipeline synth --out /tmp/synthetic --target-variant mtp-shard",
        rehearse.synth_command,
        rehearse.synth_options,
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
            _draft_options(sub, runs_stages=command.name in STAGE_RUNNING_COMMANDS)
        _output_options(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _hub_failure(exc: Exception, command: str) -> PipelineError | None:
    if isinstance(exc, PipelineError) or "huggingface_hub" not in sys.modules:
        return None
    from pipeline.remote.errors import hub_error

    return hub_error(exc, action=command)


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
        try:
            return int(args.handler(args, out))
        except Exception as raised:
            # A Hub failure no call site translated still ends as one line (pipeline.remote.errors).
            translated = _hub_failure(raised, args.command)
            if translated is None:
                raise
            raise translated from raised
    except PipelineError as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc(file=out.stderr)  # the traceback is extra; the exit code stays the error's
        print(f"error: {exc.message}", file=out.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=out.stderr)
        if out.json_mode:  # a machine reading stdout learns why there is no result
            out.result("", {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=out.stderr)
        return 130


def entrypoint() -> int:
    return main(sys.argv[1:])
