"""Pair baseline and speculative runs, refuse unfair pairs, and compute the card's figures.

Formulas (shared/facts/bench-formats.md §7):
- decode tok/s per user = 1000 / median over runs of each run's median TPOT (ms);
- speedup = baseline median TPOT / speculative median TPOT - 1;
- acceptance rate = accepted / draft tokens and mean acceptance length = 1 + accepted / drafts,
  with the raw counts summed over runs first (ratios are never averaged); a source that gives only
  a length (SGLang) contributes the median length;
- spread = (max - min) / median of the per-run median TPOTs.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.normalize import Run, context_order, run_order
from pipeline.bench.spec import BenchmarkSpec, MatrixSpec, Workload
from pipeline.errors import CheckFailed, InputError

MIN_RUNS = 3  # fewer runs than this cannot show a median is stable (bench-formats.md §7)
MAX_SPREAD = 0.05  # relative spread above which a figure is flagged (bench-formats.md §7)

# A speedup compares like with like: runs of one comparison must agree on all of these.
PAIRING_FIELDS = (
    "target_model", "engine_version", "image", "gpu", "gpu_count", "tp", "dataset", "temperature",
    "input_len", "output_len", "concurrency", "context",
)  # fmt: skip


@dataclass(frozen=True)
class Side:
    """The runs of one mode in a comparison, with their per-run median TPOT."""

    runs: tuple[Run, ...]

    @property
    def tpot_ms(self) -> tuple[float, ...]:
        return tuple(run.measured.median_tpot_ms for run in self.runs)

    @property
    def median_tpot_ms(self) -> float:
        return statistics.median(self.tpot_ms)

    @property
    def decode_tok_s(self) -> float:
        return 1000.0 / self.median_tpot_ms

    @property
    def spread(self) -> float:
        return (max(self.tpot_ms) - min(self.tpot_ms)) / self.median_tpot_ms


@dataclass(frozen=True)
class PooledAcceptance:
    """Acceptance over the speculative runs of a comparison."""

    sources: tuple[str, ...]
    rate: float | None
    length: float
    num_drafts: int | None
    num_draft_tokens: int | None
    num_accepted_tokens: int | None
    per_position: tuple[float, ...]


@dataclass(frozen=True)
class Comparison:
    """Baseline against speculative runs that passed the fairness check.

    `speculative` is None for a target measured alone (no draft run yet): the row shows the
    baseline and no speedup.
    """

    baseline: Side
    speculative: Side | None
    acceptance: PooledAcceptance | None

    @property
    def speedup(self) -> float | None:
        if self.speculative is None:
            return None
        return self.baseline.median_tpot_ms / self.speculative.median_tpot_ms - 1

    @property
    def reference(self) -> Run:
        """The run whose pairing fields stand for the whole comparison."""
        return self.baseline.runs[0]

    @property
    def runs(self) -> tuple[Run, ...]:
        return self.baseline.runs + (self.speculative.runs if self.speculative else ())

    @property
    def k(self) -> int | None:
        return self.speculative.runs[0].labels.k if self.speculative else None

    @property
    def synthetic(self) -> bool:
        return any(run.synthetic for run in self.runs)


@dataclass(frozen=True)
class SummaryRow:
    workload: Workload
    comparison: Comparison


@dataclass(frozen=True)
class MatrixCell:
    context: str
    concurrency: int
    comparison: Comparison | None
    missing_reason: str | None = None


@dataclass(frozen=True)
class Matrix:
    spec: MatrixSpec
    cells: tuple[tuple[MatrixCell, ...], ...]  # one row per context, one cell per concurrency


@dataclass(frozen=True)
class Report:
    summary: tuple[SummaryRow, ...]
    matrix: Matrix | None
    warnings: tuple[str, ...]


def build_report(runs: Sequence[Run], spec: BenchmarkSpec, bench_dir: Path) -> Report:
    """Summary rows and matrix from normalized runs; raises CheckFailed on an unfair comparison."""
    # paths relative to the benchmarks folder: the document must not depend on where the checkout is
    warnings = [f"{run.origin.ref}: {run.excluded}; left out of every figure" for run in runs if run.excluded]
    matrix_workload = spec.matrix.workload if spec.matrix else None
    by_workload: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_workload[run.labels.workload or ""].append(run)
    if spec.workloads is None:
        rows = tuple(Workload(name, name) for name in sorted(by_workload) if name != matrix_workload)
    else:
        rows = spec.workloads
        listed = {row.id for row in rows} | {matrix_workload}
        warnings += [
            f"workload {name!r}: its runs appear in no table (not in benchmarks.workloads)" for name in sorted(set(by_workload) - listed)
        ]
    summary = []
    for row in rows:
        runs_of_row = by_workload.get(row.id, [])
        # a target measured alone makes a row; speculative runs that all failed do not
        has_speculative = any(run.mode == "speculative" for run in runs_of_row)
        comparison = compare(row.id, runs_of_row, warnings, baseline_alone=not has_speculative)
        if isinstance(comparison, str):
            left_out = sum(1 for run in runs_of_row if run.mode == comparison and run.excluded)
            raise InputError(
                f"{bench_dir}: workload: no {comparison} run labeled {row.id!r}"
                + (f" ({left_out} left out for failed or missing requests)" if left_out else ""),
                hint="every summary row needs baseline runs; a speedup needs speculative runs beside them",
            )
        if comparison.speculative is None:
            warnings.append(f"{row.id}: no speculative run; the row shows the target alone")
        summary.append(SummaryRow(row, comparison))
    matrix = None
    if spec.matrix is not None:
        matrix = _matrix(by_workload.get(spec.matrix.workload, []), spec.matrix, bench_dir, warnings)
    return Report(tuple(summary), matrix, tuple(warnings))


def compare(title: str, runs: Iterable[Run], warnings: list[str], *, baseline_alone: bool = False) -> Comparison | str:
    """Pair the included runs; return the missing mode's name when one side has no run.

    With `baseline_alone`, baseline runs without a speculative counterpart still make a comparison.
    """
    included = sorted((run for run in runs if run.excluded is None), key=run_order)
    if included:
        check_fair(included)
    baseline = tuple(run for run in included if run.mode == "baseline")
    speculative = tuple(run for run in included if run.mode == "speculative")
    if not baseline:
        return "baseline"
    if not speculative and not baseline_alone:
        return "speculative"
    spec_side = Side(speculative) if speculative else None
    comparison = Comparison(Side(baseline), spec_side, pool_acceptance(speculative) if speculative else None)
    for mode, side in (("baseline", comparison.baseline), ("speculative", spec_side)):
        if side is None:
            continue
        if len(side.runs) < MIN_RUNS:
            warnings.append(f"{title}: the {mode} figure rests on {len(side.runs)} run(s), fewer than {MIN_RUNS}")
        if side.spread > MAX_SPREAD:
            warnings.append(f"{title}: {mode} median TPOT varies by {side.spread:.1%} across runs, more than {MAX_SPREAD:.0%}")
    if comparison.acceptance is not None and "sglang_server_cumulative" in comparison.acceptance.sources:
        warnings.append(f"{title}: acceptance is SGLang's server-cumulative accept_length (includes earlier traffic)")
    if comparison.synthetic:
        warnings.append(f"{title}: random (synthetic) prompts overstate speculative gains and accept differently from real text")
    return comparison


def check_fair(runs: Sequence[Run]) -> None:
    """Refuse runs that differ in a pairing field, naming both files and the field."""
    reference = runs[0]
    for other in runs[1:]:
        _same(reference, other, "engine", reference.engine, other.engine)
        for name in PAIRING_FIELDS:
            if name == "output_len" and name in reference.measured_lengths and name in other.measured_lengths:
                # two means of generated tokens, not settings: they vary from run to run wherever EOS is honoured
                continue
            _same(reference, other, name, getattr(reference.labels, name), getattr(other.labels, name))
        _same(reference, other, "num_prompts", reference.measured.num_prompts, other.measured.num_prompts)
    speculative = [run for run in runs if run.mode == "speculative"]
    for other in speculative[1:]:
        _same(speculative[0], other, "k", speculative[0].labels.k, other.labels.k)


def _same(a: Run, b: Run, field: str, value_a: object, value_b: object) -> None:
    if value_a != value_b:
        raise CheckFailed(
            f"{a.origin} and {b.origin} differ in {field}: {_shown(value_a)} vs {_shown(value_b)}",
            hint="compare runs with the same model, hardware, prompts, lengths, concurrency and engine build, "
            "or label them as different workloads",
        )


def _shown(value: object) -> str:
    return "not given" if value is None else repr(value)


def pool_acceptance(runs: Sequence[Run]) -> PooledAcceptance:
    """Sum counts over runs, then divide; without counts, the median length."""
    accepted = [run.acceptance for run in runs if run.acceptance is not None]
    sources = tuple(sorted({a.source for a in accepted}))
    k = runs[0].labels.k
    if all(a.has_counts for a in accepted):
        drafts = sum(a.num_drafts or 0 for a in accepted)
        draft_tokens = sum(a.num_draft_tokens or 0 for a in accepted)
        accepted_tokens = sum(a.num_accepted_tokens or 0 for a in accepted)
        per_position: tuple[float, ...] = ()
        if k and all(len(a.per_position) == k for a in accepted):
            # rate[i] = accepted_at_pos[i] / drafts, so weighting by drafts sums the counts back
            per_position = tuple(sum(a.per_position[i] * (a.num_drafts or 0) for a in accepted) / drafts for i in range(k))
        return PooledAcceptance(
            sources=sources,
            rate=accepted_tokens / draft_tokens,
            length=1 + accepted_tokens / drafts,
            num_drafts=drafts,
            num_draft_tokens=draft_tokens,
            num_accepted_tokens=accepted_tokens,
            per_position=per_position,
        )
    rates = [a.rate(k) for a in accepted]
    return PooledAcceptance(
        sources=sources,
        rate=statistics.median(r for r in rates if r is not None) if None not in rates else None,
        length=statistics.median(a.length for a in accepted),
        num_drafts=None,
        num_draft_tokens=None,
        num_accepted_tokens=None,
        per_position=(),
    )


def _matrix(runs: list[Run], spec: MatrixSpec, bench_dir: Path, warnings: list[str]) -> Matrix:
    if not runs:
        raise InputError(f"{bench_dir}: benchmarks.matrix.workload: no run labeled {spec.workload!r}")
    by_cell: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run in runs:
        if run.labels.context is None:
            raise InputError(
                f"{run.origin}: context: not found, and the recipe gives no context",
                hint="every run of the matrix workload needs a context: set it in the recipe, pass --metadata context=8K "
                "to vllm bench serve, or give the input length (random_input_len)",
            )
        by_cell[(run.labels.context, run.labels.concurrency or 0)].append(run)
    shown = {(c, n) for c in spec.contexts for n in spec.concurrencies}
    for context, concurrency in sorted(set(by_cell) - shown, key=lambda cell: (context_order(cell[0]), cell[1])):
        warnings.append(f"{spec.workload} {context} x C={concurrency}: not in the matrix's contexts/concurrencies")
    declared = {(cell.context, cell.concurrency): cell.reason for cell in spec.missing}
    rows = []
    for context in spec.contexts:
        row = []
        for concurrency in spec.concurrencies:
            title = f"{spec.workload} {context} x C={concurrency}"
            comparison = compare(title, by_cell.get((context, concurrency), []), warnings)
            reason = declared.get((context, concurrency))
            if reason is not None and not isinstance(comparison, str):
                raise InputError(
                    f"{bench_dir}: benchmarks.matrix.missing: cell {context} x C={concurrency} has runs",
                    hint="remove the cell from matrix.missing",
                )
            if isinstance(comparison, str):
                if reason is None:
                    warnings.append(f"{title}: no {comparison} run; the cell is shown as missing")
                row.append(MatrixCell(context, concurrency, None, reason))
            else:
                row.append(MatrixCell(context, concurrency, comparison))
        rows.append(tuple(row))
    return Matrix(spec, tuple(rows))
