"""The cells of a benchmark plan, named once for the files `bench-plan` writes and for `bench-import`.

`vllm bench sweep serve` (vLLM 0.33.0, `vllm/benchmarks/sweep/serve.py`) runs every serve
combination against every bench combination, so a cell is (workload, context, concurrency) and the
server configurations are the baseline and one per K. The sweep writes every serve and bench override
key into each `run=N.json` (`_update_run_data`, `serve.py:54-64`: serve keys first, then bench keys),
so a run's `_benchmark_name` is its bench combination's (the cell name) and its `speculative_config`
is its server's: that is how bench-import finds each cell's runs with the plan as the only recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from pipeline.bench.plan_spec import OUTPUT_LEN_KEYS, RANDOM, RANDOM_INPUT_LEN_KEY, PlanSpec, PlanWorkload, context_tokens
from pipeline.bench.spec import Labels, MatrixSpec, MissingCell, PrometheusPair, RunGroup, Workload

BASELINE = "baseline"
RUN_FILES = "run=*.json"  # `_get_comb_run_path`, sweep/serve.py:157-161
K_KEY = "speculative_config.num_speculative_tokens"
# The snapshot scrape_metrics.py saves after a run, beside its run=N.json (or the sweep's warmup.json,
# sweep/serve.py:274-280); the one before a run is its predecessor's.
METRICS_SUFFIX = ".metrics.prom"
WARMUP = "warmup"


@dataclass(frozen=True)
class Cell:
    """One bench combination: a workload at one context (or its natural length) and one concurrency."""

    workload: PlanWorkload
    context: str | None
    concurrency: int

    @property
    def name(self) -> str:
        parts = [self.workload.id] + ([self.context] if self.context else []) + [f"c{self.concurrency}"]
        return "-".join(parts)


def cells(plan: PlanSpec) -> tuple[Cell, ...]:
    """Every cell, workload by workload in plan order, then context, then concurrency."""
    found = []
    for workload in plan.workloads:
        for context in workload.contexts or (None,):
            for concurrency in workload.concurrencies:
                found.append(Cell(workload, context, concurrency))
    return tuple(found)


def bench_params(plan: PlanSpec) -> list[dict[str, object]]:
    """One entry per cell: the workload's prompts at one context and one concurrency.

    Each key is a `vllm bench serve` option (`--max-concurrency`, `--num-prompts`, `--dataset-name`,
    `--dataset-path`, `--random-input-len`, the dataset's output length); `metadata` fills the bench
    command's first `--metadata` token with the workload (sweep/param_sweep.py:132-146).
    """
    entries = []
    for cell in cells(plan):
        workload = cell.workload
        entry: dict[str, object] = {
            "_benchmark_name": cell.name,
            "metadata": f"workload={workload.id}",
            "max_concurrency": cell.concurrency,
            "num_prompts": workload.num_prompts,
            "dataset_name": workload.dataset,
        }
        if workload.dataset == RANDOM:
            entry[RANDOM_INPUT_LEN_KEY] = context_tokens(cell.context) if cell.context else workload.input_len
        else:
            entry["dataset_path"] = workload.path_for(cell.context)
        entry[OUTPUT_LEN_KEYS[workload.dataset]] = workload.output_len
        entries.append(entry)
    return entries


def serve_name(plan: PlanSpec, k: int | None) -> str:
    """The serve combination's `_benchmark_name`: `baseline`, or `mtp-k1` (a K the importer can read)."""
    return BASELINE if k is None else f"{plan.method}-k{k}"


def plan_labels(plan: PlanSpec) -> Labels:
    """What the plan says of every run; the runs' `--metadata` must agree with it."""
    return Labels(
        image=plan.image, engine_version=plan.engine_version, gpu=plan.gpu, gpu_count=plan.gpu_count, tp=plan.tp,
        temperature=plan.temperature,
    )  # fmt: skip


def run_groups(plan: PlanSpec, missing: tuple[MissingCell, ...] = ()) -> tuple[RunGroup, ...]:
    """One run group per cell and mode, for bench-import: the baseline and the plan's first K.

    A run belongs to a cell only if it holds every override the plan gives the cell, so the results
    of an earlier plan (other prompts, lengths or counts) fill no cell of this one. The card compares one K with the baseline, so runs at the plan's other K values stay in the
    folder as raw data and feed no figure. Matrix cells the recipe declares missing get no group.
    """
    base = f"{plan.results}/" if plan.results else ""
    skipped = {(cell.context, cell.concurrency) for cell in missing}
    groups = []
    k = plan.k[0]
    for cell, entry in zip(cells(plan), bench_params(plan), strict=True):
        if cell.context is not None and (cell.context, cell.concurrency) in skipped:
            continue
        for mode_k in (None, k):
            # every override the plan gives the cell must be in the run as planned (sweep/serve.py:54-64)
            match = (*entry.items(), ("speculative_config", None) if mode_k is None else (K_KEY, mode_k))
            labels = Labels(
                workload=cell.workload.id, context=cell.context, mode="baseline" if mode_k is None else "speculative", k=mode_k,
            )  # fmt: skip
            groups.append(
                RunGroup(
                    files=f"{base}**/{RUN_FILES}",
                    labels=labels,
                    match=tuple(sorted(match)),
                    where=f"benchmarks.plan cell {cell.name} ({serve_name(plan, mode_k)})",
                    metrics_beside=plan.scrapes_metrics and mode_k is not None,  # a baseline server has no such counters
                )
            )
    return tuple(groups)


def snapshots_beside(run_file: str, run_number: int) -> PrometheusPair:
    """The `/metrics` snapshots around run N of a combination: after the run before it, and after it."""
    folder = PurePosixPath(run_file).parent
    before = WARMUP if run_number == 0 else f"run={run_number - 1}"
    return PrometheusPair(str(folder / f"{before}{METRICS_SUFFIX}"), str(folder / f"run={run_number}{METRICS_SUFFIX}"))


def summary_rows(plan: PlanSpec) -> tuple[Workload, ...]:
    """The single-stream rows: every workload without contexts, in plan order."""
    return tuple(Workload(w.id, w.name) for w in plan.workloads if not w.contexts)


def matrix_spec(plan: PlanSpec) -> MatrixSpec | None:
    workload = plan.matrix_workload
    if workload is None:
        return None
    return MatrixSpec(workload.id, workload.name, workload.contexts, workload.concurrencies)
