"""bench-import: raw benchmark results in, the card's benchmark figures out.

Reads the files that the recipe's `benchmarks:` section names under `artifacts/<draft>/benchmarks/`:
`vllm bench serve --save-result` JSON (current and legacy layouts, `--append-result` files),
`vllm bench sweep serve` trees (`run=N.json`, `summary.json`, `summary.csv`), SGLang `bench_serving`
JSONL, and Prometheus `/metrics` snapshots taken around a run.
With only a `benchmarks.plan` (no `runs:`), it reads the `run=N.json` files of the sweep that
`bench-plan` planned, each cell's runs found by the overrides the sweep wrote into them.

Writes `<out_dir>/benchmarks.json` (schema mtp-bench/v1: summary rows, the context x concurrency
matrix, provenance, warnings, and every normalized run with its source file's sha256) and
`<out_dir>/speedup.png`, each atomically. Every path in them is relative to the benchmarks folder,
so the same inputs give the same bytes from any checkout.

Labels come from the recipe or from the keys the tools wrote; a K of 0 means no speculation, and
mode, K and context are read off `speculative_config`, `_benchmark_name`, the acceptance keys and
the input length when no label names them. A workload measured without any speculative run makes
a baseline row.

Refuses with InputError (exit 2) a file it cannot parse, a figure that is missing or not finite,
a speculative run without acceptance data, and a label that is missing or contradicts the recipe.
Refuses with CheckFailed (exit 1) to compare runs whose model, hardware, prompt count,
input/output lengths, concurrency, engine build or other pairing field differ, naming both files
and the field. Warns when fewer than 3 runs back a figure and when a run is left out for failed
requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bench.aggregate import build_report
from pipeline.bench.collect import collect
from pipeline.bench.document import build_document, dumps
from pipeline.bench.plot import render_plot
from pipeline.bench.spec import BenchmarkSpec
from pipeline.checkpoint.files import atomic_write_bytes, sha256_file
from pipeline.stages.context import Context, Stage, StageOutcome

BENCHMARKS_JSON = "benchmarks.json"
SPEEDUP_PNG = "speedup.png"


@dataclass(frozen=True)
class BenchImportInputs:
    bench_dir: Path
    spec: BenchmarkSpec
    out_dir: Path


@dataclass(frozen=True)
class BenchImportResult:
    benchmarks_json: Path
    plot_png: Path | None
    sha256: dict[str, str]  # output file name -> sha256
    warnings: tuple[str, ...]


def run(inputs: BenchImportInputs) -> BenchImportResult:
    """Normalize, check and aggregate the results, then write the document and the plot."""
    collected = collect(inputs.bench_dir, inputs.spec)
    report = build_report(collected.runs, inputs.spec, inputs.bench_dir)
    document = dumps(build_document(collected, report))
    png = render_plot(report)

    sha256 = {}
    plot_path = inputs.out_dir / SPEEDUP_PNG
    if png is None:
        plot_path.unlink(missing_ok=True)  # a stale plot would not match the new document
    else:
        sha256[SPEEDUP_PNG] = atomic_write_bytes(plot_path, png)
    json_path = inputs.out_dir / BENCHMARKS_JSON
    sha256[BENCHMARKS_JSON] = atomic_write_bytes(json_path, document)
    return BenchImportResult(
        benchmarks_json=json_path,
        plot_png=None if png is None else plot_path,
        sha256=sha256,
        warnings=report.warnings,
    )


def _bench_dir(ctx: Context) -> Path:
    return ctx.recipe.benchmarks_folder


def _inputs(ctx: Context) -> dict[str, Any]:
    folder = _bench_dir(ctx)
    files = sorted((p.relative_to(folder).as_posix(), sha256_file(p)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return {"spec": repr(ctx.recipe.benchmarks), "files": files}


def _run(ctx: Context) -> StageOutcome:
    if ctx.recipe.benchmarks is None:
        ctx.out.info("bench-import: the recipe declares no benchmarks")
        return [], {"declared": False}
    result = run(BenchImportInputs(_bench_dir(ctx), ctx.recipe.benchmarks, ctx.workdir.benchmarks))
    for warning in result.warnings:
        ctx.out.warn(f"bench-import: {warning}")
    ctx.out.info(f"bench-import: {result.benchmarks_json.name} written" + (" with the speedup plot" if result.plot_png else ""))
    outputs = [result.benchmarks_json] + ([result.plot_png] if result.plot_png else [])
    return outputs, {"declared": True, "files": result.sha256, "warnings": list(result.warnings)}


STAGE = Stage(
    "bench-import",
    "read the result files in the benchmarks/ folder beside the recipe (artifacts/<draft>/benchmarks/) that its "
    "`benchmarks:` section names, or the sweep its `plan` planned (README, Benchmarks); write <workdir>/benchmarks/benchmarks.json and speedup.png",
    _inputs,
    _run,
)
