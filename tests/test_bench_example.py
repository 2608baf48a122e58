"""The committed Step-3.7 example inputs reproduce the published reference table and matrix."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.bench.spec import BenchmarkSpec, parse_benchmark_spec
from pipeline.stages.bench_import import BenchImportInputs, BenchImportResult, run

ROOT = Path(__file__).parent.parent
BENCH_DIR = ROOT / "artifacts" / "step-3.7-flash-mtp-draft" / "benchmarks"
RECIPE = Path(__file__).resolve().parent.parent / "artifacts" / "step-3.7-flash-mtp-draft" / "draft.yaml"

# 2x RTX PRO 6000 Blackwell, TP=2, K=1, single-stream decode tok/s: baseline, speculative, speedup, acceptance
REFERENCE = {
    "free-form": ("Free-form", "106.8", "125.5", "+17.5%", "0.77"),
    "code": ("Code", "106.7", "133.7", "+25.3%", "0.88"),
    "japanese": ("Japanese", "107.0", "129.3", "+20.9%", "0.80"),
    "tool-call": ("Tool-call", "106.9", "135.4", "+26.6%", "0.90"),
}
MATRIX = [
    ["+20%", "+17%", "+13%", "+8%"],
    ["+22%", "+19%", "+15%", "+10%"],
    ["+22%", "+20%", "+16%", "+11%"],
    ["+28%", "+24%", "+19%", "missing"],
]


@pytest.fixture(scope="module")
def spec() -> BenchmarkSpec:
    return parse_benchmark_spec(yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["benchmarks"])


@pytest.fixture(scope="module")
def imported(spec: BenchmarkSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchImportResult, dict[str, Any]]:
    result = run(BenchImportInputs(BENCH_DIR, spec, tmp_path_factory.mktemp("out")))
    return result, json.loads(result.benchmarks_json.read_text(encoding="utf-8"))


def test_reference_table_is_reproduced(imported: tuple[BenchImportResult, dict[str, Any]]) -> None:
    result, doc = imported
    assert result.warnings == ()
    assert [row["workload"] for row in doc["summary"]] == list(REFERENCE)
    for row in doc["summary"]:
        name, baseline, speculative, speedup, acceptance = REFERENCE[row["workload"]]
        assert row["name"] == name
        assert (row["k"], row["concurrency"]) == (1, 1)
        assert f"{row['baseline']['decode_tok_s']:.1f}" == baseline
        assert f"{row['speculative']['decode_tok_s']:.1f}" == speculative
        assert f"{row['speedup'] * 100:+.1f}%" == speedup
        assert f"{row['acceptance']['rate']:.2f}" == acceptance
        # K=1: one draft token per draft, so the mean acceptance length is 1 + the rate
        assert row["acceptance"]["length"] == pytest.approx(1 + row["acceptance"]["rate"], abs=1e-6)
        assert row["baseline"]["runs"] == row["speculative"]["runs"] == 3
        assert row["display"] == {
            "baseline_decode_tok_s": baseline,
            "speculative_decode_tok_s": speculative,
            "speedup": speedup,
            "acceptance_rate": acceptance,
            "acceptance_length": f"{1 + float(acceptance):.2f}",
        }


def test_speedup_comes_from_median_tpot(imported: tuple[BenchImportResult, dict[str, Any]]) -> None:
    _, doc = imported
    for row in doc["summary"]:
        assert row["baseline"]["decode_tok_s"] == pytest.approx(1000 / row["baseline"]["median_tpot_ms"], abs=1e-5)
        assert row["speedup"] == pytest.approx(row["baseline"]["median_tpot_ms"] / row["speculative"]["median_tpot_ms"] - 1, abs=1e-6)


def test_matrix_is_reproduced_with_the_missing_cell(imported: tuple[BenchImportResult, dict[str, Any]]) -> None:
    _, doc = imported
    matrix = doc["matrix"]
    assert (matrix["contexts"], matrix["concurrencies"], matrix["k"]) == (["1K", "8K", "32K", "128K"], [1, 2, 4, 8], [1])
    assert [[cell["display"] for cell in row] for row in matrix["cells"]] == MATRIX
    assert [round(row[0]["speedup"] * 100) for row in matrix["cells"]] == [20, 22, 22, 28]
    missing = matrix["cells"][3][3]
    assert (missing["context"], missing["concurrency"], missing["speedup"]) == ("128K", 8, None)
    assert "KV-cache" in missing["missing_reason"]
    for row in matrix["cells"]:
        speedups = [cell["speedup"] for cell in row if cell["speedup"] is not None]
        assert speedups == sorted(speedups, reverse=True)  # gains shrink as concurrency grows


def test_undeclared_missing_cell_is_a_warning(tmp_path: Path) -> None:
    section = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["benchmarks"]
    del section["matrix"]["missing"]
    result = run(BenchImportInputs(BENCH_DIR, parse_benchmark_spec(section), tmp_path))
    assert result.warnings == ("long-context 128K x C=8: no speculative run; the cell is shown as missing",)
    cell = json.loads(result.benchmarks_json.read_text())["matrix"]["cells"][3][3]
    assert (cell["speedup"], cell["display"], cell["missing_reason"]) == (None, "missing", None)


def test_provenance_lists_hardware_engine_and_dates(imported: tuple[BenchImportResult, dict[str, Any]]) -> None:
    _, doc = imported
    provenance = doc["provenance"]
    assert provenance["gpu"] == ["NVIDIA RTX PRO 6000 Blackwell Workstation Edition"]
    assert (provenance["gpu_count"], provenance["tp"], provenance["k"], provenance["temperature"]) == ([2], [2], [1], [0.0])
    assert provenance["engine_version"] == ["0.15.1"]
    assert provenance["image"] == ["vllm/vllm-openai:v0.15.1"]
    assert provenance["dates"] == {"first": "2026-03-04T10:12:33", "last": provenance["dates"]["last"]}
    assert doc["schema"] == "mtp-bench/v1"
    files = {source["file"] for source in doc["sources"]}
    assert {run["source"]["file"] for run in doc["runs"]} == files
    assert len(doc["runs"]) == 4 * 2 * 3 + (16 * 2 - 1) * 3


def test_outputs_are_byte_stable(spec: BenchmarkSpec, imported: tuple[BenchImportResult, dict[str, Any]], tmp_path: Path) -> None:
    first, _ = imported
    again = run(BenchImportInputs(BENCH_DIR, spec, tmp_path))
    assert again.sha256 == first.sha256
    assert first.plot_png is not None
    for path in (first.benchmarks_json, first.plot_png):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == first.sha256[path.name]
    assert first.benchmarks_json.read_bytes().endswith(b"}\n")


def test_one_changed_number_changes_exactly_its_figures(
    spec: BenchmarkSpec, imported: tuple[BenchImportResult, dict[str, Any]], tmp_path: Path
) -> None:
    _, before = imported
    bench = tmp_path / "benchmarks"
    shutil.copytree(BENCH_DIR, bench)
    code = bench / "single-stream" / "code-mtp-k1.json"
    lines = code.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    middle = sorted(range(3), key=lambda i: records[i]["median_tpot_ms"])[1]
    records[middle]["median_tpot_ms"] *= 1.001  # still the median run, now slower
    lines[middle] = json.dumps(records[middle])
    code.write_text("\n".join(lines))

    after = json.loads(run(BenchImportInputs(bench, spec, tmp_path / "out")).benchmarks_json.read_text())
    old, new = _flatten(before), _flatten(after)
    changed = sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))
    ref = f"single-stream/code-mtp-k1.json:{middle + 1}"
    changed_run = next(i for i, r in enumerate(after["runs"]) if r["source"]["ref"] == ref)
    same_file = [i for i, r in enumerate(after["runs"]) if r["source"]["file"] == "single-stream/code-mtp-k1.json"]
    code_sha = next(i for i, s in enumerate(after["sources"]) if s["file"] == "single-stream/code-mtp-k1.json")
    assert changed == sorted(
        [
            f"summary.1.speculative.tpot_ms.{after['summary'][1]['speculative']['run_refs'].index(ref)}",
            "summary.1.speculative.median_tpot_ms",
            "summary.1.speculative.decode_tok_s",
            "summary.1.speculative.spread",
            "summary.1.speedup",
            "summary.1.display.speculative_decode_tok_s",
            "summary.1.display.speedup",
            f"runs.{changed_run}.perf.median_tpot_ms",
            f"runs.{changed_run}.perf.decode_tok_s",
            *(f"runs.{i}.source.sha256" for i in same_file),
            f"sources.{code_sha}.sha256",
        ]
    )
    assert after["summary"][1]["display"]["speculative_decode_tok_s"] == "133.6"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a JSON document by its dotted path."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(str(i), item) for i, item in enumerate(value)]
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat
