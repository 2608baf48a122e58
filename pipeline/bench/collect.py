"""Find and read the files the recipe's run groups name, and turn each record into a `Run`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.formats import RawRun, read_result_file
from pipeline.bench.normalize import Run, normalize_run, run_order
from pipeline.bench.prometheus import SpecCounters, delta, read_snapshot
from pipeline.bench.spec import BenchmarkSpec
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


def collect(bench_dir: Path, spec: BenchmarkSpec) -> Collected:
    """Read every file the spec names, once, and normalize its runs (sorted for the document)."""
    if not bench_dir.is_dir():
        raise InputError(f"{bench_dir}: not a folder", hint="put the benchmark result files under it")
    root = bench_dir.resolve()
    claimed: dict[str, int] = {}
    sources: dict[str, Source] = {}
    snapshots: dict[str, SpecCounters] = {}
    runs: list[Run] = []
    for i, group in enumerate(spec.runs):
        raws: list[tuple[RawRun, str]] = []
        paths = sorted(p for p in bench_dir.glob(group.files) if p.is_file())
        if not paths:
            raise InputError(f"{bench_dir}: benchmarks.runs[{i}].files: {group.files!r} matches no file")
        for path in paths:
            rel = _inside(path, bench_dir, root)
            if rel in claimed:
                raise InputError(
                    f"{path}: matched by benchmarks.runs[{claimed[rel]}].files and benchmarks.runs[{i}].files",
                    hint="each file belongs to one run group",
                )
            claimed[rel] = i
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            file_runs = read_result_file(path, rel, data)
            if not file_runs:
                raise InputError(f"{path}: run_number: only warm-up runs (-1), nothing measured")
            sources[rel] = Source(rel, sha, file_runs[0].tool)
            raws.extend((raw, sha) for raw in file_runs)
        pairs = group.prometheus
        if pairs and len(pairs) != len(raws):
            raise InputError(
                f"{bench_dir}: benchmarks.runs[{i}].prometheus: {len(pairs)} snapshot pairs for {len(raws)} runs",
                hint="list one before/after pair per run, in file order",
            )
        for j, (raw, sha) in enumerate(raws):
            pair = pairs[j] if pairs else None
            counters = None
            if pair is not None:
                where = f"benchmarks.runs[{i}].prometheus[{j}]"
                before = _snapshot(bench_dir, root, pair.before, f"{where}.before", snapshots, sources)
                after = _snapshot(bench_dir, root, pair.after, f"{where}.after", snapshots, sources)
                counters = delta(before, after, str(bench_dir / pair.before), str(bench_dir / pair.after))
            runs.append(
                normalize_run(
                    raw,
                    group=group,
                    group_index=i,
                    section_labels=spec.labels,
                    sha256=sha,
                    counters=counters,
                    pair=pair,
                )
            )
    _refuse_duplicates(runs)
    return Collected(tuple(sorted(runs, key=run_order)), tuple(sources[name] for name in sorted(sources)))


def _inside(path: Path, bench_dir: Path, root: Path) -> str:
    """The path relative to the benchmarks folder; a symlink pointing out of it is refused."""
    if not path.resolve().is_relative_to(root):
        raise InputError(f"{path}: points outside {bench_dir}")
    return path.relative_to(bench_dir).as_posix()


def _snapshot(
    bench_dir: Path,
    root: Path,
    rel: str,
    field: str,
    cache: dict[str, SpecCounters],
    sources: dict[str, Source],
) -> SpecCounters:
    if rel not in cache:
        path = bench_dir / rel
        if not path.is_file():
            raise InputError(f"{bench_dir}: {field}: {rel} not found")
        _inside(path, bench_dir, root)
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
        cache[rel] = read_snapshot(text, str(path))
        sources[rel] = Source(rel, hashlib.sha256(data).hexdigest(), PROMETHEUS_TOOL)
    return cache[rel]


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
