"""The ordered stage table and the runner that skips current stages and records the rest.

Each stage module exports its `STAGE`; this tuple orders them and nothing registers itself on
import. A stage is skipped when its input fingerprint and recorded outputs are unchanged.
Upload is not in the table: it always compares with the destination, so it is never skipped
(see `flows.publish`).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import InputError, PipelineError
from pipeline.flows.ledger import Ledger, fingerprint
from pipeline.stages import bench_import, card, config_fix, extract, fetch, verify
from pipeline.stages.context import Context, Stage

STAGES: tuple[Stage, ...] = (fetch.STAGE, extract.STAGE, config_fix.STAGE, verify.STAGE, bench_import.STAGE, card.STAGE)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
BUILD_STAGES = ("fetch", "extract", "config-fix", "verify")  # what a build runs before it writes the lock


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise InputError(f"unknown stage {name!r}")


def run_stage(ctx: Context, stage: Stage) -> dict[str, Any]:
    """Run one stage unless its inputs and outputs are unchanged; returns its summary."""
    ledger = Ledger(ctx.workdir.stages)
    digest = fingerprint(stage.inputs(ctx))
    reason = "forced" if ctx.force else ledger.why_stale(stage.name, digest, ctx.workdir.root)
    if reason is None:
        record = ledger.load(stage.name) or {}
        ctx.out.info(f"{stage.name}: unchanged, skipped")
        ctx.out.detail(f"{stage.name}: record {ledger.path(stage.name)}, fingerprint {digest[:16]}")
        return {"stage": stage.name, "skipped": True, **record.get("summary", {})}
    ctx.out.detail(f"{stage.name}: running ({reason}), fingerprint {digest[:16]}")
    ledger.forget(stage.name)
    outputs, summary = stage.run(ctx)
    # The fingerprint is taken again: a stage may legitimately change what later stages read.
    ledger.record(stage.name, fingerprint(stage.inputs(ctx)), ctx.workdir.root, outputs, summary)
    return {"stage": stage.name, "skipped": False, **summary}


def run_stages(ctx: Context, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [run_stage(ctx, stage_named(name)) for name in names]


def status(ctx: Context) -> list[dict[str, Any]]:
    """What would run and why, reading nothing heavy and writing nothing."""
    ledger = Ledger(ctx.workdir.stages)
    rows = []
    for stage in STAGES:
        try:
            reason = ledger.why_stale(stage.name, fingerprint(stage.inputs(ctx)), ctx.workdir.root)
        except PipelineError as exc:  # e.g. the Hub could not say where the source is now
            reason = f"cannot tell: {exc.message}"
        rows.append({"stage": stage.name, "current": reason is None, "reason": reason or "up to date"})
    return rows
