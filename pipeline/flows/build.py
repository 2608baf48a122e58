"""build: the build stages in order, a fresh inspect of the target, then the lock written or checked.

This is the one build sequence: the `build` command, `publish` and the demo all run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.flows.inspect import inspect_recipe
from pipeline.flows.runner import BUILD_STAGES, run_stages
from pipeline.recipe.layout import Artifacts
from pipeline.recipe.lock import write_or_check
from pipeline.stages.context import Context


@dataclass(frozen=True)
class BuildResult:
    stages: list[dict[str, Any]]
    inspect: dict[str, Any]
    lock: Path
    lock_state: str  # "reproduced", "updated" or "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {"stages": self.stages, "inspect": self.inspect, "lock": {"path": str(self.lock), "state": self.lock_state}}


def inspect_summary(report: Any) -> dict[str, Any]:
    """The part of an inspect report that the lock and the card keep."""
    return {
        "verdict": report.verdict,
        "summary": report.summary_line(),
        "reasons": list(report.reasons),
        "checked_at": report.checked_at,
        "target_commit": report.target_commit,
    }


def build(ctx: Context, today: str, *, locked: bool, artifacts: Artifacts | None = None) -> BuildResult:
    """Run the build stages, inspect the target, and write the lock (or, locked, refuse any difference).

    `artifacts` is where the lock and reviewed config are written and compared (default: the
    draft's own review folder); a proposal stages them outside the checkout.
    """
    stages = run_stages(ctx, BUILD_STAGES)
    finding = inspect_summary(inspect_recipe(ctx, today))
    review = artifacts or ctx.artifacts
    lock, changed = write_or_check(ctx.recipe, ctx.workdir, review, locked=locked, inspect=finding, source=ctx.source("source"))
    state = "reproduced" if locked else ("updated" if changed else "unchanged")
    ctx.out.info(f"inspect: {finding['verdict']}: {finding['summary']}")
    ctx.out.info(f"lock: {lock} {state}")
    return BuildResult(stages, finding, lock, state)
