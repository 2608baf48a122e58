"""The `benchmarks.json` document (schema mtp-bench/v1): everything the card shows, pre-computed.

Byte-stable: keys sorted, floats rounded to a fixed number of decimals, infinity written as "inf",
no timestamps but the run dates copied from the inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from pipeline.bench.aggregate import Comparison, MatrixCell, PooledAcceptance, Report, Side
from pipeline.bench.collect import Collected
from pipeline.bench.normalize import Run
from pipeline.bench.records import Acceptance

SCHEMA = "mtp-bench/v1"
FLOAT_DECIMALS = 6  # enough for counts-derived rates; fixed so re-runs write identical bytes
MISSING = "missing"

DEFINITIONS = {
    "decode_tok_s": "1000 / median TPOT (ms): decode tokens per second per user",
    "speedup": "baseline median TPOT / speculative median TPOT - 1",
    "acceptance_rate": "accepted draft tokens / draft tokens, counts summed over runs",
    "acceptance_length": "1 + accepted draft tokens / drafts (includes the bonus token)",
    "median_tpot_ms": "median over runs of each run's median TPOT",
    "spread": "(max - min) / median of the runs' median TPOT",
}

PROVENANCE_LABELS = (
    "target_model", "engine_version", "image", "gpu", "gpu_count", "tp", "temperature", "dataset",
)  # fmt: skip


def build_document(collected: Collected, report: Report) -> dict[str, Any]:
    """The whole document as plain data."""
    runs = collected.runs
    return {
        "schema": SCHEMA,
        "definitions": DEFINITIONS,
        "summary": [{"workload": row.workload.id, "name": row.workload.name, **_comparison(row.comparison)} for row in report.summary],
        "matrix": None
        if report.matrix is None
        else {
            "workload": report.matrix.spec.workload,
            "name": report.matrix.spec.name,
            "contexts": list(report.matrix.spec.contexts),
            "concurrencies": list(report.matrix.spec.concurrencies),
            "k": sorted({c.comparison.k for row in report.matrix.cells for c in row if c.comparison and c.comparison.k}),
            "cells": [[_cell(cell) for cell in row] for row in report.matrix.cells],
        },
        "provenance": _provenance(runs),
        "warnings": list(report.warnings),
        "sources": [{"file": s.file, "sha256": s.sha256, "tool": s.tool} for s in collected.sources],
        "runs": [_run(run) for run in runs],
    }


def dumps(document: dict[str, Any]) -> bytes:
    """Serialize with sorted keys, fixed float rounding, indent 2 and a trailing newline."""
    text = json.dumps(_rounded(document), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def percent(value: float, decimals: int) -> str:
    """A speedup as shown on the card: +17.5%."""
    return f"{value * 100:+.{decimals}f}%"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return round(value, FLOAT_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def _comparison(comparison: Comparison) -> dict[str, Any]:
    """A summary row; acceptance is shown wherever the files report it, random prompts included."""
    ref = comparison.reference.labels
    acceptance, speculative, speedup = comparison.acceptance, comparison.speculative, comparison.speedup
    display = {
        "baseline_decode_tok_s": f"{comparison.baseline.decode_tok_s:.1f}",
        "speculative_decode_tok_s": None if speculative is None else f"{speculative.decode_tok_s:.1f}",
        "speedup": None if speedup is None else percent(speedup, 1),
        "acceptance_rate": None if acceptance is None or acceptance.rate is None else f"{acceptance.rate:.2f}",
        "acceptance_length": None if acceptance is None else f"{acceptance.length:.2f}",
    }
    return {
        "dataset": ref.dataset,
        "input_len": ref.input_len,
        "output_len": ref.output_len,
        "context": ref.context,
        "concurrency": ref.concurrency,
        "temperature": ref.temperature,
        "k": comparison.k,
        "synthetic": comparison.synthetic,
        "baseline": _side(comparison.baseline),
        "speculative": None if speculative is None else _side(speculative),
        "speedup": speedup,
        "acceptance": None if acceptance is None else _pooled(acceptance),
        "display": display,
    }


def _side(side: Side) -> dict[str, Any]:
    return {
        "runs": len(side.runs),
        "run_refs": [run.origin.ref for run in side.runs],
        "tpot_ms": list(side.tpot_ms),
        "median_tpot_ms": side.median_tpot_ms,
        "decode_tok_s": side.decode_tok_s,
        "spread": side.spread,
    }


def _pooled(acceptance: PooledAcceptance) -> dict[str, Any]:
    return {
        "sources": list(acceptance.sources),
        "rate": acceptance.rate,
        "length": acceptance.length,
        "num_drafts": acceptance.num_drafts,
        "num_draft_tokens": acceptance.num_draft_tokens,
        "num_accepted_tokens": acceptance.num_accepted_tokens,
        "per_position": list(acceptance.per_position),
    }


def _cell(cell: MatrixCell) -> dict[str, Any]:
    comparison = cell.comparison
    if comparison is None:
        return {
            "context": cell.context,
            "concurrency": cell.concurrency,
            "dataset": None,
            "synthetic": False,
            "speedup": None,
            "display": MISSING,
            "missing_reason": cell.missing_reason,
        }
    speedup, speculative, acceptance = comparison.speedup, comparison.speculative, comparison.acceptance
    assert speedup is not None and speculative is not None  # a matrix cell is never a baseline alone
    return {
        "context": cell.context,
        "concurrency": cell.concurrency,
        "dataset": comparison.reference.labels.dataset,
        "synthetic": comparison.synthetic,
        "speedup": speedup,
        "display": percent(speedup, 0),
        "missing_reason": None,
        "baseline": _side(comparison.baseline),
        "speculative": _side(speculative),
        "acceptance": None if acceptance is None else _pooled(acceptance),
    }


def _provenance(all_runs: Sequence[Run]) -> dict[str, Any]:
    """Every distinct value over the runs behind the figures, sorted, so disagreements stay visible.

    Runs left out of every figure (failed requests) do not count, their dates included.
    """
    runs = [run for run in all_runs if run.excluded is None]

    def distinct(values: Any) -> list[Any]:
        return sorted({value for value in values if value is not None})

    dates = distinct(run.measured.date for run in runs)
    provenance: dict[str, Any] = {name: distinct(getattr(run.labels, name) for run in runs) for name in PROVENANCE_LABELS}
    provenance.update(
        engine=distinct(run.engine for run in runs),
        tools=distinct(run.tool for run in runs),
        k=distinct(run.labels.k for run in runs),
        dates={"first": dates[0], "last": dates[-1]} if dates else None,
    )
    return provenance


def _run(run: Run) -> dict[str, Any]:
    """One normalized record (bench-formats.md §6), raw counts kept."""
    labels, m = run.labels, run.measured
    source: dict[str, Any] = {
        "tool": run.tool,
        "file": run.origin.file,
        "ref": run.origin.ref,
        "sha256": run.sha256,
        "acceptance_source": run.acceptance.source if run.acceptance else None,
    }
    if run.prometheus is not None:
        source["prometheus"] = {"before": run.prometheus.before, "after": run.prometheus.after}
    return {
        "source": source,
        "provenance": {
            "engine": run.engine,
            "engine_version": labels.engine_version,
            "image": labels.image,
            "gpu": labels.gpu,
            "gpu_count": labels.gpu_count,
            "tp": labels.tp,
            "target_model": labels.target_model,
            "temperature": labels.temperature,
            "date": m.date,
        },
        "workload": {
            "name": labels.workload,
            "dataset": labels.dataset,
            "input_len": labels.input_len,
            "output_len": labels.output_len,
            "lengths_from_token_totals": list(run.measured_lengths),
            "num_prompts": m.num_prompts,
            "synthetic": run.synthetic,
        },
        "cell": {
            "mode": labels.mode,
            "k": labels.k,
            "context": labels.context,
            "concurrency": labels.concurrency,
            "run_number": m.run_number,
            "inferred_from": dict(run.inferred),
        },
        "perf": {
            "median_tpot_ms": m.median_tpot_ms,
            "mean_tpot_ms": m.mean_tpot_ms,
            "decode_tok_s": run.decode_tok_s,
            "median_ttft_ms": m.median_ttft_ms,
            "output_throughput": m.output_throughput,
            "request_goodput": m.request_goodput,
            "request_rate": m.request_rate,
            "duration_s": m.duration,
            "completed": m.completed,
            "failed": m.failed,
            "total_input_tokens": m.total_input_tokens,
            "total_output_tokens": m.total_output_tokens,
        },
        "acceptance": None if run.acceptance is None else _acceptance(run.acceptance, labels.k),
        "excluded": run.excluded,
    }


def _acceptance(acceptance: Acceptance, k: int | None) -> dict[str, Any]:
    return {
        "num_drafts": acceptance.num_drafts,
        "num_draft_tokens": acceptance.num_draft_tokens,
        "num_accepted_tokens": acceptance.num_accepted_tokens,
        "acceptance_rate": acceptance.rate(k),
        "acceptance_length": acceptance.length,
        "per_position": list(acceptance.per_position),
    }
