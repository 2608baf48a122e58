"""The ordered stage table and the runner that skips current stages and records the rest.

Each entry binds one stage module's `run` to the recipe: which named inputs it reads (hashed into
a fingerprint) and which outputs it leaves. The table is explicit and ordered; nothing registers
itself on import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from pipeline.checkpoint.files import sha256_file
from pipeline.checkpoint.sources import LocalSource, ModelSource
from pipeline.cli.output import Output
from pipeline.errors import InputError
from pipeline.families import FAMILIES, Family
from pipeline.flows.ledger import Ledger, fingerprint
from pipeline.recipe.layout import Workdir
from pipeline.recipe.loader import HubRef, LocalRef, ModelRef, Recipe
from pipeline.remote.calls import RetryPolicy, default_api
from pipeline.stages import bench_import, config_fix, extract, fetch, verify

SourceOpener = Callable[[ModelRef, str, HfApi, RetryPolicy], ModelSource]


def open_local_or_hub(ref: ModelRef, role: str, api: HfApi, retries: RetryPolicy) -> ModelSource:
    """The default opener: folders directly, Hub repos through the huggingface_hub client."""
    if isinstance(ref, LocalRef):
        return LocalSource(ref.path, f"{role} folder {ref.path.name}")
    from pipeline.remote.source import HubSource

    return HubSource(ref, role, api=api, attempts=retries.attempts, backoff_seconds=retries.backoff_seconds)


@dataclass
class Context:
    """What every stage may use: the recipe, the workdir, the output and the way to reach sources."""

    recipe: Recipe
    workdir: Workdir
    out: Output
    api: HfApi = field(default_factory=default_api)
    open_source: SourceOpener = open_local_or_hub
    force: bool = False
    pins: dict[str, HubRef] = field(default_factory=dict)  # role -> the locked commit to read instead
    _sources: dict[str, ModelSource] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        return FAMILIES[self.recipe.family]

    def source(self, role: str) -> ModelSource:
        """The opened source or target, once per run (its resolved commit is reused)."""
        if role not in self._sources:
            ref = self.pins.get(role) or (self.recipe.source if role == "source" else self.recipe.target)
            self._sources[role] = self.open_source(ref, role, self.api, self.recipe.retries)
        return self._sources[role]

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.workdir.stages)


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    inputs: Callable[[Context], dict[str, Any]]
    execute: Callable[[Context], tuple[list[Path], dict[str, Any]]]


def _file_digest(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def _source_identity(ctx: Context, role: str) -> dict[str, Any]:
    source = ctx.source(role)
    ref = ctx.recipe.source if role == "source" else ctx.recipe.target
    if isinstance(ref, HubRef):
        return {"repo": ref.repo_id, "commit": source.resolve()}
    folder = ref.path
    return {"folder_files": sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())}


def _fetch_inputs(ctx: Context) -> dict[str, Any]:
    return {
        "source": _source_identity(ctx, "source"),
        "target": _source_identity(ctx, "target"),
        "family": ctx.recipe.family,
        "license": ctx.recipe.license,
        "mode": ctx.recipe.fetch.mode,
    }


def _fetch(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    result = fetch.run(
        fetch.FetchInputs(
            source=ctx.source("source"),
            target=ctx.source("target"),
            family=ctx.family,
            expected_license=ctx.recipe.license,
            connections=ctx.recipe.fetch.connections,
            workdir=ctx.workdir,
            mode=ctx.recipe.fetch.mode,
        ),
        show_progress=ctx.out.show_progress,
    )
    ctx.out.info(
        f"fetch: {result.tensors} tensors, {result.bytes_fetched} bytes fetched for {result.bytes_needed} needed ({result.bytes_fetched / max(result.bytes_needed, 1):.4f}x)"
    )
    summary = {
        "source_commit": result.source_commit,
        "target_commit": result.target_commit,
        "tensors": result.tensors,
        "bytes_needed": result.bytes_needed,
        "bytes_fetched": result.bytes_fetched,
    }
    return [result.manifest], summary


def _extract_inputs(ctx: Context) -> dict[str, Any]:
    return {"fetch": _file_digest(ctx.workdir.fetch_manifest), "max_shard_bytes": ctx.recipe.max_shard_bytes}


def _extract(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    manifest = fetch.load_manifest(ctx.workdir)
    result = extract.run(extract.ExtractInputs(manifest, ctx.workdir, ctx.recipe.max_shard_bytes), show_progress=ctx.out.show_progress)
    ctx.out.info(f"extract: {len(result.shards)} shard(s), {result.total_bytes} tensor bytes")
    outputs = [ctx.workdir.draft / name for name in result.shards] + [ctx.workdir.draft / "model.safetensors.index.json", result.report]
    return outputs, {"shards": list(result.shards), "total_bytes": result.total_bytes}


def _config_fix_inputs(ctx: Context) -> dict[str, Any]:
    return {"fetch": _file_digest(ctx.workdir.fetch_manifest), "family": ctx.recipe.family}


def _config_fix(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    result = config_fix.run(config_fix.ConfigFixInputs(ctx.workdir, ctx.family))
    removed = ", ".join(result.removed) or "nothing"
    ctx.out.info(f"config-fix: config.json written, removed {removed}; carried {len(result.sha256) - 1} file(s)")
    return [ctx.workdir.draft / name for name in result.sha256], {"files": result.sha256, "removed": list(result.removed)}


def _verify_inputs(ctx: Context) -> dict[str, Any]:
    draft = ctx.workdir.draft
    files = (
        sorted((p.relative_to(draft).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in draft.rglob("*") if p.is_file())
        if draft.is_dir()
        else []
    )
    return {"fetch": _file_digest(ctx.workdir.fetch_manifest), "draft": files, "license": ctx.recipe.license, "family": ctx.recipe.family}


def _verify(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    result = verify.run(verify.VerifyInputs(ctx.workdir, ctx.family, ctx.recipe.license))
    ctx.out.info(f"verify: {len(result.checks)} checks passed")
    return [result.report], {"passed": result.passed, "checks": len(result.checks)}


def _bench_dir(ctx: Context) -> Path:
    return ctx.recipe.folder / "benchmarks"


def _bench_inputs(ctx: Context) -> dict[str, Any]:
    folder = _bench_dir(ctx)
    files = sorted((p.relative_to(folder).as_posix(), sha256_file(p)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return {"spec": repr(ctx.recipe.benchmarks), "files": files}


def _bench_import(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    if ctx.recipe.benchmarks is None:
        ctx.out.info("bench-import: the recipe declares no benchmarks")
        return [], {"declared": False}
    result = bench_import.run(bench_import.BenchImportInputs(_bench_dir(ctx), ctx.recipe.benchmarks, ctx.workdir.benchmarks))
    for warning in result.warnings:
        ctx.out.warn(f"bench-import: {warning}")
    ctx.out.info(f"bench-import: {result.benchmarks_json.name} written" + (" with the speedup plot" if result.plot_png else ""))
    outputs = [result.benchmarks_json] + ([result.plot_png] if result.plot_png else [])
    return outputs, {"declared": True, "files": result.sha256, "warnings": list(result.warnings)}


STAGES: tuple[Stage, ...] = (
    Stage("fetch", "resolve source and target, copy only the draft's tensor bytes", _fetch_inputs, _fetch),
    Stage("extract", "write the draft's safetensors shards and index", _extract_inputs, _extract),
    Stage("config-fix", "write the draft config.json and carry licence and auto_map files", _config_fix_inputs, _config_fix),
    Stage("verify", "check the draft folder byte for byte and write verify.json", _verify_inputs, _verify),
    Stage(
        "bench-import",
        "read the result files in the benchmarks/ folder beside the recipe (artifacts/<draft>/benchmarks/) that its "
        "`benchmarks:` section names (README, Benchmarks); write <workdir>/benchmarks/benchmarks.json and speedup.png",
        _bench_inputs,
        _bench_import,
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


@functools.cache
def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise InputError(f"unknown stage {name!r}")


def run_stage(ctx: Context, stage: Stage) -> dict[str, Any]:
    """Run one stage unless its inputs and outputs are unchanged; returns its summary."""
    digest = fingerprint(stage.inputs(ctx))
    reason = "forced" if ctx.force else ctx.ledger.why_stale(stage.name, digest, ctx.workdir.root)
    if reason is None:
        record = ctx.ledger.load(stage.name) or {}
        ctx.out.info(f"{stage.name}: unchanged, skipped")
        return {"stage": stage.name, "skipped": True, **record.get("summary", {})}
    ctx.ledger.forget(stage.name)
    outputs, summary = stage.execute(ctx)
    # The fingerprint is taken again: a stage may legitimately change what later stages read.
    ctx.ledger.record(stage.name, fingerprint(stage.inputs(ctx)), ctx.workdir.root, outputs, summary)
    return {"stage": stage.name, "skipped": False, **summary}


def run_stages(ctx: Context, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [run_stage(ctx, stage_named(name)) for name in names]


def status(ctx: Context) -> list[dict[str, Any]]:
    """What would run and why, reading nothing heavy and writing nothing."""
    rows = []
    for stage in STAGES:
        try:
            reason = ctx.ledger.why_stale(stage.name, fingerprint(stage.inputs(ctx)), ctx.workdir.root)
        except InputError as exc:
            reason = exc.message
        rows.append({"stage": stage.name, "current": reason is None, "reason": reason or "up to date"})
    return rows
