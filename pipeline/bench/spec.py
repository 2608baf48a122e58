"""The recipe's `benchmarks:` section: which result files to read and how their runs are labeled.

A run's labels (workload, mode, K, context, concurrency and the provenance fields) come from the
recipe or from the keys the benchmark tool wrote into the file (vLLM `--metadata KEY=VALUE`,
sweep override keys, `max_concurrency`, `model_id`). Nothing is taken from file names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import PurePosixPath
from typing import Any

from pipeline.bench.plan_spec import PlanSpec, parse_plan
from pipeline.bench.sections import ListingSection

MODES = ("baseline", "speculative")


class _Section(ListingSection):
    """A mapping of the `benchmarks:` section."""


@dataclass(frozen=True)
class Labels:
    """What a run measured and on what; `None` means "not declared here"."""

    workload: str | None = None
    mode: str | None = None
    k: int | None = None
    context: str | None = None
    concurrency: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    target_model: str | None = None
    engine_version: str | None = None
    image: str | None = None
    gpu: str | None = None
    gpu_count: int | None = None
    tp: int | None = None
    temperature: float | None = None
    dataset: str | None = None

    def over(self, fallback: Labels) -> Labels:
        """These labels, with the gaps filled from `fallback`."""
        mine = {name: getattr(self, name) for name in LABEL_NAMES if getattr(self, name) is not None}
        return replace(fallback, **mine)


LABEL_NAMES = tuple(f.name for f in fields(Labels))
HARDWARE = "hardware"  # another name for `gpu`, in the recipe as in `--metadata hardware=...`


@dataclass(frozen=True)
class PrometheusPair:
    """`/metrics` snapshots taken before and after one run (paths relative to the benchmarks folder)."""

    before: str
    after: str


@dataclass(frozen=True)
class RunGroup:
    """Result files matched by one glob, with the labels the recipe declares for their runs.

    `match` keeps only the records whose keys hold the given values (None: absent or null), so
    a file holding both modes (an SGLang JSONL, a sweep summary) can feed two groups.
    """

    files: str
    labels: Labels = Labels()
    match: tuple[tuple[str, object], ...] = ()
    prometheus: tuple[PrometheusPair, ...] = ()
    where: str | None = None  # how messages name the group when the recipe does not list it (a plan cell)
    metrics_beside: bool = False  # each run=N.json has its /metrics snapshots beside it (a plan with acceptance: metrics)


@dataclass(frozen=True)
class Workload:
    """A summary-table row: workload id as labeled in the runs, and the name shown on the card."""

    id: str
    name: str


@dataclass(frozen=True)
class MissingCell:
    """A matrix cell known to have no result, and why."""

    context: str
    concurrency: int
    reason: str


@dataclass(frozen=True)
class MatrixSpec:
    """The context x concurrency speedup matrix of one workload."""

    workload: str
    name: str
    contexts: tuple[str, ...]
    concurrencies: tuple[int, ...]
    missing: tuple[MissingCell, ...] = ()


@dataclass(frozen=True)
class BenchmarkSpec:
    """The whole `benchmarks:` section; without `runs:`, the run groups come from the plan."""

    runs: tuple[RunGroup, ...]
    labels: Labels = Labels()
    workloads: tuple[Workload, ...] | None = None
    matrix: MatrixSpec | None = None
    plan: PlanSpec | None = None


def coerce_label(name: str, value: object) -> object:
    """Turn a recipe or file value into the label's type; raise ValueError saying what is expected.

    K may be 0: `num_speculative_tokens=0` is how many users label a run without speculation.
    """
    kind = _LABEL_KINDS[name]
    if kind is int:
        number = _to_number(value)
        lowest = 0 if name == "k" else 1
        if number is None or number != int(number) or number < lowest:
            what = "a whole number of at least 0" if lowest == 0 else "a positive integer"
            raise ValueError(f"must be {what}, not {value!r}")
        return int(number)
    if kind is float:
        number = _to_number(value)
        if number is None or number < 0:
            raise ValueError(f"must be a non-negative number, not {value!r}")
        return number
    if isinstance(value, (bool, dict, list)) or value is None:
        raise ValueError(f"must be a string, not {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    if name == "mode" and text not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}")
    return text


_LABEL_KINDS: dict[str, type] = {
    "workload": str, "mode": str, "k": int, "context": str, "concurrency": int, "input_len": int,
    "output_len": int, "target_model": str, "engine_version": str, "image": str, "gpu": str,
    "gpu_count": int, "tp": int, "temperature": float, "dataset": str,
}  # fmt: skip


def _to_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def parse_benchmark_spec(data: object) -> BenchmarkSpec:
    """Validate the `benchmarks:` mapping; errors start with the dotted field path inside it."""
    top = _Section(data, "")
    labels = top.at("labels", _label_section, Labels())
    plan = top.at("plan", parse_plan, None)
    runs = top.at("runs", _runs, None, required=plan is None)
    workloads = top.at("workloads", _workloads, None)
    matrix = top.at("matrix", _matrix, None)
    top.finish()
    if runs is None and plan is not None:
        from pipeline.bench import plan_cells  # it builds run groups of this module's types

        runs = plan_cells.run_groups(plan, matrix.missing if matrix else ())
        labels = labels.over(plan_cells.plan_labels(plan))
        workloads = workloads if workloads is not None else plan_cells.summary_rows(plan)
        matrix = matrix if matrix is not None else plan_cells.matrix_spec(plan)
    if matrix is not None and workloads is not None:
        for i, workload in enumerate(workloads):
            if workload.id == matrix.workload:
                raise ValueError(f"workloads[{i}].id: {workload.id!r} is the matrix workload; list it in one place")
    return BenchmarkSpec(runs=runs, labels=labels, workloads=workloads, matrix=matrix, plan=plan)


def _label_section(value: Any, path: str) -> Labels:
    section = _Section(value, path)
    labels = _labels(section)
    section.finish()
    return labels


def _labels(section: _Section) -> Labels:
    values = {}
    for name in LABEL_NAMES:
        values[name] = section.at(name, _label_converter(name), None)
    hardware = section.at(HARDWARE, _label_converter("gpu"), None)
    if hardware is not None:
        if values["gpu"] is not None:
            raise ValueError(f"{section.path(HARDWARE)}: gpu is given too; {HARDWARE} is another name for it, keep one")
        values["gpu"] = hardware
    return Labels(**values)


def _label_converter(name: str) -> Callable[[Any, str], Any]:
    def convert(value: Any, path: str) -> Any:
        if _LABEL_KINDS[name] is str and isinstance(value, float):
            # YAML reads 0.10 as the number 0.1; a version or a name must keep its text
            raise ValueError(f"{path}: must be a string, not the number {value!r}; quote it")
        try:
            return coerce_label(name, value)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    return convert


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: must be a non-empty string")
    return value.strip()


def _relative_path(value: Any, path: str) -> str:
    text = _string(value, path)
    parts = PurePosixPath(text).parts
    if text.startswith(("/", "\\")) or ".." in parts or "\\" in text:
        raise ValueError(f"{path}: must be a path inside the benchmarks folder, using '/'")
    return text


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}: must be a non-empty list")
    return value


def _runs(value: Any, path: str) -> tuple[RunGroup, ...]:
    groups = []
    for i, item in enumerate(_list(value, path)):
        section = _Section(item, f"{path}[{i}]")
        files = section.at("files", _relative_path, None, required=True)
        match = section.at("match", _match, ())
        pairs = section.at("prometheus", _prometheus, ())
        labels = _labels(section)
        section.finish()
        groups.append(RunGroup(files=files, labels=labels, match=match, prometheus=pairs))
    return tuple(groups)


def _match(value: Any, path: str) -> tuple[tuple[str, object], ...]:
    section = _Section(value, path)
    if not section.data:
        raise ValueError(f"{path}: must name at least one key")
    for key, expected in section.data.items():
        if isinstance(expected, (dict, list)):
            raise ValueError(f"{path}.{key}: must be a single value or null")
    return tuple(sorted(section.data.items()))


def _prometheus(value: Any, path: str) -> tuple[PrometheusPair, ...]:
    pairs = []
    for i, item in enumerate(_list(value, path)):
        section = _Section(item, f"{path}[{i}]")
        before = section.at("before", _relative_path, None, required=True)
        after = section.at("after", _relative_path, None, required=True)
        section.finish()
        pairs.append(PrometheusPair(before=before, after=after))
    return tuple(pairs)


def _workloads(value: Any, path: str) -> tuple[Workload, ...]:
    rows: list[Workload] = []
    for i, item in enumerate(_list(value, path)):
        section = _Section(item, f"{path}[{i}]")
        ident = section.at("id", _string, None, required=True)
        name = section.at("name", _string, ident)
        section.finish()
        if any(row.id == ident for row in rows):
            raise ValueError(f"{path}[{i}].id: {ident!r} is listed twice")
        rows.append(Workload(id=ident, name=name))
    return tuple(rows)


def _matrix(value: Any, path: str) -> MatrixSpec:
    section = _Section(value, path)
    workload = section.at("workload", _string, None, required=True)
    name = section.at("name", _string, workload)
    contexts = section.at("contexts", _contexts, None, required=True)
    concurrencies = section.at("concurrencies", _concurrencies, None, required=True)
    missing = section.at("missing", _missing, ())
    section.finish()
    for i, cell in enumerate(missing):
        where = f"{path}.missing[{i}]"
        if cell.context not in contexts:
            raise ValueError(f"{where}.context: {cell.context!r} is not one of the matrix contexts")
        if cell.concurrency not in concurrencies:
            raise ValueError(f"{where}.concurrency: {cell.concurrency} is not one of the matrix concurrencies")
    return MatrixSpec(workload, name, contexts, concurrencies, missing)


def _contexts(value: Any, path: str) -> tuple[str, ...]:
    items = tuple(str(_label_converter("context")(v, f"{path}[{i}]")) for i, v in enumerate(_list(value, path)))
    return _unique(items, path)


def _concurrencies(value: Any, path: str) -> tuple[int, ...]:
    convert = _label_converter("concurrency")
    items = tuple(int(convert(v, f"{path}[{i}]")) for i, v in enumerate(_list(value, path)))
    return _unique(items, path)


def _unique(items: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise ValueError(f"{path}[{i}]: {item!r} is listed twice")
    return items


def _missing(value: Any, path: str) -> tuple[MissingCell, ...]:
    cells = []
    for i, item in enumerate(_list(value, path)):
        section = _Section(item, f"{path}[{i}]")
        context = section.at("context", _label_converter("context"), None, required=True)
        concurrency = section.at("concurrency", _label_converter("concurrency"), None, required=True)
        reason = section.at("reason", _string, None, required=True)
        section.finish()
        cells.append(MissingCell(context, concurrency, reason))
    return tuple(cells)
