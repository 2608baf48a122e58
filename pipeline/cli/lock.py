"""`python -m pipeline lock`: a draft's first resolved lock, config and card, and with --propose its pull request."""

from __future__ import annotations

import argparse

from pipeline.cli.commands import context, today
from pipeline.cli.output import Output

SUMMARY = (
    "build a draft whose lock is missing or unresolved and write the resolved lock, config and card; "
    "--propose commits exactly those on lock/<draft> and writes the pull-request text"
)
EXAMPLE = (
    "python -m pipeline lock --draft step-3.7-flash-mtp-draft\npython -m pipeline lock --draft step-3.7-flash-mtp-draft --propose --json"
)


def lock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--propose",
        action="store_true",
        help="leave the checkout as it is: commit the lock, config.json and README.md on branch lock/<draft> "
        "and write <workdir>/lock/pull-request.md",
    )


def lock_command(args: argparse.Namespace, out: Output) -> int:
    """Exit 0 when the lock is resolved (now, or already); a refused build exits as `build` does."""
    from pipeline.flows.lock import lock_draft
    from pipeline.flows.proposal import open_repository

    # Commits a lock already pins (a rebuild the watcher asked for) are kept; null ones are resolved.
    ctx = context(args, out, pin=True)
    repo = open_repository(ctx.recipe.path.parent) if args.propose else None  # before any download
    result = lock_draft(ctx, today(), repo)
    lines = [f"{result.draft}: lock {result.state} ({result.review.lock})"]
    if result.build is not None:
        lines.append(f"inspect: {result.build.inspect['verdict']}: {result.build.inspect['summary']}")
    if result.proposal is not None:
        lines.append(
            f"proposed: {result.proposal.branch} at {result.proposal.commit or 'HEAD (nothing to commit)'}; {result.proposal.pull_request}"
        )
    out.result("\n".join(lines), result.to_json())
    return 0
