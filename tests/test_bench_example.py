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

# The published reference (shared/facts/bench-formats.md §8): 2x RTX PRO 6000, TP=2, K=1,
# single-stream decode gains over about 107 tok/s. Acceptance: the only published figure, about 0.80.
REFERENCE = {
    "free-form": ("Free-form", "106.8", "125.5", "+17.5%"),
    "code": ("Code", "106.7", "133.7", "+25.3%"),
    "japanese": ("Japanese", "107.0", "129.3", "+20.9%"),
    "tool-call": ("Tool-call", "106.9", "135.4", "+26.6%"),
}
PUBLISHED_ACCEPTANCE = "0.80"
# Decode speedup by context (rows) and concurrency (C=1, 2, 4, 8), cell by cell as published;
# 128K x C=8 was not measured.
MATRIX = [
    ["+20%", "+8%", "+32%", "+34%"],
    ["+22%", "+24%", "+25%", "+44%"],
    ["+22%", "+26%", "+20%", "+17%"],
    ["+28%", "+33%", "+38%", "missing"],
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
        name, baseline, speculative, speedup = REFERENCE[row["workload"]]
        acceptance = PUBLISHED_ACCEPTANCE
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
    published = [[int(text[1:-1]) for text in row if text != "missing"] for row in MATRIX]
    assert [[round(cell["speedup"] * 100) for cell in row if cell["speedup"] is not None] for row in matrix["cells"]] == published
    missing = matrix["cells"][3][3]
    assert (missing["context"], missing["concurrency"], missing["speedup"]) == ("128K", 8, None)
    assert missing["missing_reason"] == "not measured in the published reference table"


def test_undeclared_missing_cell_is_a_warning(tmp_path: Path) -> None:
    section = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["benchmarks"]
    del section["matrix"]["missing"]
    result = run(BenchImportInputs(BENCH_DIR, parse_benchmark_spec(section), tmp_path))
    assert result.warnings == ("long-context 128K x C=8: no baseline run; the cell is shown as missing",)
    cell = json.loads(result.benchmarks_json.read_text())["matrix"]["cells"][3][3]
    assert (cell["speedup"], cell["display"], cell["missing_reason"]) == (None, "missing", None)


def test_provenance_states_only_what_the_published_reference_gives(imported: tuple[BenchImportResult, dict[str, Any]]) -> None:
    _, doc = imported
    provenance = doc["provenance"]
    assert provenance["gpu"] == ["RTX PRO 6000"]
    assert (provenance["gpu_count"], provenance["tp"], provenance["k"]) == ([2], [2], [1])
    # a Step-3.7 build of vLLM; no numbered release before Step-3.7 support could have run it
    assert (provenance["image"], provenance["engine_version"]) == (["vllm/vllm-openai:stepfun37"], [])
    # no source gives dates, datasets or sampling settings for the published runs
    assert (provenance["dates"], provenance["dataset"], provenance["temperature"]) == (None, [], [])
    assert doc["schema"] == "mtp-bench/v1"
    files = {source["file"] for source in doc["sources"]}
    assert {run["source"]["file"] for run in doc["runs"]} == files
    assert len(doc["runs"]) == 4 * 2 * 3 + 15 * 2 * 3


def test_illustrative_files_carry_no_unsourced_label() -> None:
    """Labels no source gives (a release that cannot run Step-3.7, dates, datasets, lengths) are gone."""
    unsourced = ('"date"', '"vllm_version"', '"dataset"', '"dataset_path"', '"output_len"', '"custom_output_len"', '"temperature"')
    for path in sorted(BENCH_DIR.rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert not [key for key in unsourced if key in text], path
        assert "v0.15" not in text and "Blackwell" not in text, path
    (csv,) = BENCH_DIR.rglob("summary.csv")
    header = csv.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert not {key.strip('"') for key in unsourced} & set(header)
    assert not list(BENCH_DIR.rglob("*failure*"))  # no invented failure for the unmeasured cell


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


def test_document_does_not_depend_on_the_checkout_path(spec: BenchmarkSpec, tmp_path: Path) -> None:
    """Two checkouts of the example, one run with failed requests: the same bytes, no local path."""
    documents = []
    for checkout in ("a", "b/c"):
        bench = tmp_path / checkout / "benchmarks"
        shutil.copytree(BENCH_DIR, bench)
        code = bench / "single-stream" / "code-baseline.json"
        records = [json.loads(line) for line in code.read_text().splitlines()]
        records[0]["failed"] = 1
        code.write_text("\n".join(json.dumps(record) for record in records))
        result = run(BenchImportInputs(bench, spec, tmp_path / checkout / "out"))
        assert result.warnings[0] == "single-stream/code-baseline.json:1: failed: 1 requests failed; left out of every figure"
        documents.append(result.benchmarks_json.read_bytes())
    assert documents[0] == documents[1]
    assert str(tmp_path).encode() not in documents[0]


def test_sweep_summary_csv_written_by_pandas_gives_the_same_matrix(tmp_path: Path) -> None:
    """The root summary.csv (pandas: ints of partly empty columns as floats, dicts as reprs) reads like the runs."""
    section = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["benchmarks"]
    section["runs"][1]["files"] = "context-sweep/20260305_091500/summary.csv"
    csv_text = next(BENCH_DIR.rglob("summary.csv")).read_text(encoding="utf-8")
    assert ",{'method': 'mtp'," in csv_text.replace('"', "")
    doc = json.loads(run(BenchImportInputs(BENCH_DIR, parse_benchmark_spec(section), tmp_path)).benchmarks_json.read_text())
    assert [[cell["display"] for cell in row] for row in doc["matrix"]["cells"]] == MATRIX
    assert {run["source"]["file"] for run in doc["runs"] if run["workload"]["name"] == "long-context"} == {
        "context-sweep/20260305_091500/summary.csv"
    }
