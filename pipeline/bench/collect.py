"""Find and read the files the recipe's run groups name, and turn each record into a `Run`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.formats import Records, parse_records, read_result_file
from pipeline.bench.normalize import Run, normalize_run, run_order
from pipeline.bench.plan_cells import snapshots_beside
from pipeline.bench.prometheus import SpecCounters, delta, read_snapshot
from pipeline.bench.spec import BenchmarkSpec, PrometheusPair, RunGroup
from pipeline.errors import InputError

PROMETHEUS_TOOL = "prometheus /metrics snapshot"


@dataclass(frozen=True)
class Source:
    """One input file: path relative to the benchmarks folder, sha256 and the tool that wrote it."""

    file: str
    sha256: str
    tool: str


@dataclass(frozen=True)
class Collected:
    runs: tuple[Run, ...]
    sources: tuple[Source, ...]


class _Files:
    """Reads each input file once, however many groups name it, and refuses paths leaving the folder."""

    def __init__(self, bench_dir: Path) -> None:
        self.bench_dir = bench_dir
        self.root = bench_dir.resolve()
        self.data: dict[str, bytes] = {}
        self.parsed: dict[str, Records] = {}
        self.globbed: dict[str, list[Path]] = {}
        self.sources: dict[str, Source] = {}

    def glob(self, pattern: str) -> list[Path]:
        """The files a pattern matches, found once however many groups use it (a plan has many)."""
        if pattern not in self.globbed:
            self.globbed[pattern] = sorted(p for p in self.bench_dir.glob(pattern) if p.is_file())
        return self.globbed[pattern]

    def records(self, path: Path, rel: str) -> Records:
        if rel not in self.parsed:
            self.parsed[rel] = parse_records(path, self.read(rel))
        return self.parsed[rel]

    def relative(self, path: Path) -> str:
        if not path.resolve().is_relative_to(self.root):
            raise InputError(f"{path}: points outside {self.bench_dir}")
        return path.relative_to(self.bench_dir).as_posix()

    def read(self, rel: str) -> bytes:
        if rel not in self.data:
            self.data[rel] = (self.bench_dir / rel).read_bytes()
        return self.data[rel]

    def sha256(self, rel: str) -> str:
        return hashlib.sha256(self.read(rel)).hexdigest()

    def add_source(self, rel: str, tool: str) -> None:
        self.sources.setdefault(rel, Source(rel, self.sha256(rel), tool))


def collect(bench_dir: Path, spec: BenchmarkSpec) -> Collected:
    """Read every file the spec names and normalize its runs (sorted for the document)."""
    if not bench_dir.is_dir():
        raise InputError(f"{bench_dir}: not a folder", hint="put the benchmark result files under it")
    files = _Files(bench_dir)
    snapshots: dict[str, SpecCounters] = {}
    claimed: dict[tuple[str, int], int] = {}
    runs: list[Run] = []
    for i, group in enumerate(spec.runs):
        paths = files.glob(group.files)
        if not paths:
            raise InputError(f"{bench_dir}: {_named(group, i)}.files: {group.files!r} matches no file", hint=_hint(group))
        raws = []
        for path in paths:
            rel = files.relative(path)
            file_runs = read_result_file(path, rel, files.read(rel), group.match, files.records(path, rel))
            for raw in file_runs:
                key = (rel, raw.origin.index)
                if key in claimed:
                    raise InputError(
                        f"{raw.origin}: taken by {_named(spec.runs[claimed[key]], claimed[key])} and {_named(group, i)}",
                        hint="each run belongs to one run group; narrow files or match",
                    )
                claimed[key] = i
            if file_runs:
                files.add_source(rel, file_runs[0].tool)
            raws.extend(file_runs)
        if not raws:
            raise InputError(f"{bench_dir}: {_named(group, i)}.match: no measured run in {group.files!r} matches", hint=_hint(group))
        pairs = group.prometheus
        if pairs and len(pairs) != len(raws):
            raise InputError(
                f"{bench_dir}: benchmarks.runs[{i}].prometheus: {len(pairs)} snapshot pairs for {len(raws)} runs",
                hint="list one before/after pair per run, in file order",
            )
        for j, raw in enumerate(raws):
            pair = pairs[j] if pairs else None
            if group.metrics_beside and raw.measured.run_number is not None:
                pair = snapshots_beside(raw.origin.file, raw.measured.run_number)
            counters = None
            if pair is not None:
                counters = _delta(files, snapshots, pair, f"{_named(group, i)}.prometheus[{j}]")
            runs.append(
                normalize_run(
                    raw,
                    group=group,
                    group_index=i,
                    section_labels=spec.labels,
                    sha256=files.sha256(raw.origin.file),
                    counters=counters,
                    pair=pair,
                )
            )
    _refuse_duplicates(runs)
    return Collected(tuple(sorted(runs, key=run_order)), tuple(files.sources[name] for name in sorted(files.sources)))


def _named(group: RunGroup, index: int) -> str:
    return group.where or f"benchmarks.runs[{index}]"


def _hint(group: RunGroup) -> str | None:
    if group.where is None:
        return None
    return (
        "put the folder the plan's run.sh wrote under benchmarks/ (benchmarks.plan.results names it), "
        "or list a cell that could not run under benchmarks.matrix.missing"
    )


def _delta(files: _Files, cache: dict[str, SpecCounters], pair: PrometheusPair, where: str) -> SpecCounters:
    for rel, field in ((pair.before, f"{where}.before"), (pair.after, f"{where}.after")):
        if rel in cache:
            continue
        path = files.bench_dir / rel
        if not path.is_file():
            raise InputError(f"{files.bench_dir}: {field}: {rel} not found")
        files.relative(path)
        try:
            text = files.read(rel).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
        cache[rel] = read_snapshot(text, str(path))
        files.add_source(rel, PROMETHEUS_TOOL)
    bench_dir = files.bench_dir
    return delta(cache[pair.before], cache[pair.after], str(bench_dir / pair.before), str(bench_dir / pair.after))


def _refuse_duplicates(runs: list[Run]) -> None:
    """The same run read twice (run=N.json and a summary) would count double."""
    seen: dict[tuple[object, ...], Run] = {}
    for run in runs:
        m = run.measured
        if m.date is None and m.duration is None:
            continue
        key = (run.engine, m.date, m.duration, m.median_tpot_ms, m.completed, m.total_output_tokens)
        if key in seen:
            raise InputError(
                f"{run.origin}: date: the same run as {seen[key].origin} (same date, duration and TPOT)",
                hint="match either the run=N.json files or the sweep summaries, not both",
            )
        seen[key] = run
