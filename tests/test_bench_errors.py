"""Malformed inputs stop with InputError (exit 2), unfair comparisons with CheckFailed (exit 1).

Every message is one line naming the file (and record) and the field. Inputs are the realistic
fixtures with one thing changed.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench.spec import parse_benchmark_spec
from pipeline.errors import CheckFailed, InputError, PipelineError
from pipeline.stages.bench_import import BenchImportInputs, BenchImportResult, run

DATA = Path(__file__).parent / "data" / "bench"
SERVE_SPEC: dict[str, Any] = {"runs": [{"files": "vllm-serve/*.json"}]}
BASELINE = "vllm-serve/code-baseline.json"
SPECULATIVE = "vllm-serve/code-mtp-k3.json"


def copy_fixture(tmp_path: Path, *parts: str) -> Path:
    bench = tmp_path / "bench"
    for part in parts:
        shutil.copytree(DATA / part, bench / part)
    return bench


def edit_record(path: Path, line: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the record on one line of a one-object-per-line result file."""
    lines = path.read_text().splitlines()
    record = json.loads(lines[line - 1])
    change(record)
    lines[line - 1] = json.dumps(record)
    path.write_text("\n".join(lines))


def import_bench(bench: Path, spec: dict[str, Any]) -> BenchImportResult:
    return run(BenchImportInputs(bench, parse_benchmark_spec(spec), bench.parent / "out"))


def refused(kind: type[PipelineError], bench: Path, spec: dict[str, Any]) -> str:
    with pytest.raises(kind) as caught:
        import_bench(bench, spec)
    error = caught.value
    assert error.exit_code == (2 if kind is InputError else 1)
    assert "\n" not in error.message
    assert not (bench.parent / "out" / "benchmarks.json").exists()
    return error.message


def setter(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda record: record.__setitem__(key, value)


def dropper(*keys: str) -> Callable[[dict[str, Any]], None]:
    def drop(record: dict[str, Any]) -> None:
        for key in keys:
            record.pop(key)

    return drop


def drop_spec_decode(record: dict[str, Any]) -> None:
    for key in [k for k in record if k.startswith("spec_decode_")]:
        del record[key]


@pytest.mark.parametrize(
    ("file", "change", "field", "words"),
    [
        (SPECULATIVE, dropper("median_tpot_ms"), "median_tpot_ms", "missing"),
        (SPECULATIVE, setter("median_tpot_ms", math.nan), "median_tpot_ms", "not a finite number"),
        (BASELINE, setter("median_tpot_ms", "7.4"), "median_tpot_ms", "must be a number"),
        (BASELINE, setter("completed", 0), "completed", "no request completed"),
        (
            SPECULATIVE,
            setter("spec_decode_per_position_acceptance_rates", [math.nan, 0.5, 0.3]),
            "spec_decode_per_position_acceptance_rates",
            "fraction",
        ),
        (
            SPECULATIVE,
            setter("spec_decode_per_position_acceptance_rates", [0.8, 0.5]),
            "spec_decode_per_position_acceptance_rates",
            "K is 3",
        ),
        (SPECULATIVE, setter("spec_decode_acceptance_rate", 0.5334), "spec_decode_acceptance_rate", "100 x accepted / draft tokens"),
        (SPECULATIVE, dropper("spec_decode_draft_tokens"), "spec_decode_draft_tokens", "missing"),
        (SPECULATIVE, drop_spec_decode, "spec_decode_num_drafts", "a speculative run needs acceptance data"),
        (BASELINE, setter("k", "3"), "k", "labeled baseline, but the run used speculative decoding"),
        (BASELINE, setter("tp", "two"), "tp", "must be a positive integer"),
        (BASELINE, setter("mode", "spec"), "mode", "must be one of baseline, speculative"),
        (BASELINE, dropper("workload"), "workload", "not found"),
        (SPECULATIVE, dropper("k"), "k", "not found"),
        (BASELINE, setter("max_concurrency", None), "max_concurrency", "not found"),
        (BASELINE, dropper("vllm_version"), "engine_version", "not found"),
    ],
)
def test_malformed_record_names_file_and_field(
    tmp_path: Path, file: str, change: Callable[[dict[str, Any]], None], field: str, words: str
) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    edit_record(bench / file, 2, change)
    message = refused(InputError, bench, SERVE_SPEC)
    assert message.startswith(f"{bench / file}:2: {field}: ")
    assert words in message


def test_non_json_file_names_file_and_line(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    (bench / BASELINE).write_text('{"date": "20260312-141503", "median_tpot_ms": 7.4\n<html>502 Bad Gateway</html>\n')
    message = refused(InputError, bench, SERVE_SPEC)
    assert message.startswith(f"{bench / BASELINE}:2: not valid JSON")


def test_bench_latency_output_is_refused(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    (bench / BASELINE).write_text(json.dumps({"avg_latency": 1.9, "latencies": [1.9, 1.8], "percentiles": {"50": 1.9}}))
    message = refused(InputError, bench, SERVE_SPEC)
    assert message.startswith(f"{bench / BASELINE}: avg_latency: a `vllm bench latency` result")


def test_recipe_label_contradicting_the_file_is_refused(tmp_path: Path) -> None:
    spec = {"labels": {"gpu": "NVIDIA A100-SXM4-80GB"}, "runs": [{"files": "vllm-serve/*.json"}]}
    message = refused(InputError, DATA, spec)
    assert message.startswith(f"{DATA / BASELINE}:1: gpu: the file says 'NVIDIA H100 80GB HBM3'")
    assert "benchmarks.labels.gpu says 'NVIDIA A100-SXM4-80GB'" in message


def test_glob_matching_nothing_names_the_field() -> None:
    message = refused(InputError, DATA, {"runs": [{"files": "vllm-serve/*.jsonl"}]})
    assert message == f"{DATA}: benchmarks.runs[0].files: 'vllm-serve/*.jsonl' matches no file"


SWEEP_LABELS = {"workload": "chat", "engine_version": "0.33.0"}


def test_failed_sweep_run_record_is_refused(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-sweep")
    combination = next(bench.glob("vllm-sweep/*/SERVE-mtp-k2-*"))
    failure = {"run_number": 0, "error_type": "CalledProcessError", "error": "exit status 1", "serve_overrides": {}, "bench_overrides": {}}
    (combination / "run=0.failure.json").write_text(json.dumps(failure, indent=2))
    spec = {"labels": SWEEP_LABELS, "runs": [{"files": "vllm-sweep/*/SERVE-mtp-k2-*/run=*.json", "mode": "speculative"}]}
    message = refused(InputError, bench, spec)
    assert message.startswith(f"{combination / 'run=0.failure.json'}: error_type: a failed sweep run")


def test_run_read_twice_through_a_summary_is_refused() -> None:
    spec = {"labels": SWEEP_LABELS, "runs": [{"files": "vllm-sweep/*/SERVE-baseline-*/*.json", "mode": "baseline"}]}
    message = refused(InputError, DATA, spec)
    assert ": date: the same run as " in message
    assert "summary.json[0]" in message and "run=0.json" in message


def test_run_taken_by_two_groups_is_refused() -> None:
    spec = {"runs": [{"files": "vllm-serve/*.json"}, {"files": "vllm-serve/code-*.json"}]}
    message = refused(InputError, DATA, spec)
    assert message == f"{DATA / BASELINE}:1: taken by benchmarks.runs[0] and benchmarks.runs[1]"


SGLANG_SPEC = {
    "labels": {"workload": "chat"},
    "runs": [
        {"files": "sglang/*.jsonl", "mode": "baseline", "match": {"server_info.speculative_algorithm": None}},
        {"files": "sglang/*.jsonl", "mode": "speculative", "k": 1, "match": {"server_info.speculative_algorithm": "EAGLE"}},
    ],
}


def test_sglang_speculative_run_without_accept_length_is_refused(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "sglang")
    jsonl = bench / "sglang" / "sglang_0306_50_sharegpt.jsonl"
    edit_record(jsonl, 4, setter("accept_length", None))
    with pytest.raises(InputError) as caught:
        import_bench(bench, SGLANG_SPEC)
    assert caught.value.message == f"{jsonl}:4: accept_length: missing; a speculative run needs acceptance data"
    assert caught.value.hint == "bench_serving writes accept_length only with a --backend whose name contains sglang"


LEGACY = "vllm-legacy"


def legacy_spec(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "labels": {"workload": "chat", "output_len": 128},
        "runs": [
            {"files": f"{LEGACY}/baseline/*.json", "mode": "baseline"},
            {
                "files": f"{LEGACY}/mtp/*.json",
                "mode": "speculative",
                "k": 2,
                "prometheus": [{"before": f"{LEGACY}/metrics/{b}", "after": f"{LEGACY}/metrics/{a}"} for b, a in pairs],
            },
        ],
    }


def test_prometheus_counter_going_down_is_refused() -> None:
    pairs = [("run0.after.prom", "run0.before.prom"), ("run1.before.prom", "run1.after.prom"), ("run2.before.prom", "run2.after.prom")]
    message = refused(InputError, DATA, legacy_spec(pairs))
    after = DATA / LEGACY / "metrics" / "run0.before.prom"
    assert message.startswith(f"{after}: vllm:spec_decode_num_drafts_total: ")
    assert "is below" in message


def test_prometheus_pairs_must_cover_every_run() -> None:
    message = refused(InputError, DATA, legacy_spec([("run0.before.prom", "run0.after.prom")]))
    assert message == f"{DATA}: benchmarks.runs[1].prometheus: 1 snapshot pairs for 3 runs"


def test_prometheus_snapshot_without_spec_decode_counters_is_refused(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, LEGACY)
    snapshot = bench / LEGACY / "metrics" / "run1.before.prom"
    snapshot.write_text('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 0.0\n')
    message = refused(InputError, bench, legacy_spec([(f"run{i}.before.prom", f"run{i}.after.prom") for i in range(3)]))
    assert message == f"{snapshot}: vllm:spec_decode_num_drafts_total: missing"


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("model_id", "stepfun-ai/Step-3.7-Flash-FP8", "target_model"),
        ("output_len", "512", "output_len"),
        ("total_input_tokens", 9000, "input_len"),
        ("max_concurrency", 2, "concurrency"),
        ("vllm_version", "stepfun37", "engine_version"),
        ("gpu", "NVIDIA H200", "gpu"),
        ("temperature", "0.7", "temperature"),
        ("dataset", "spec_bench/math", "dataset"),
    ],
)
def test_unfair_comparison_names_both_files_and_the_field(tmp_path: Path, key: str, value: object, field: str) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    edit_record(bench / SPECULATIVE, 2, setter(key, value))
    message = refused(CheckFailed, bench, SERVE_SPEC)
    assert message.startswith(f"{bench / BASELINE}:1 and {bench / SPECULATIVE}:2 differ in {field}: ")


def test_speculative_runs_with_different_k_are_not_pooled(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")

    def k1(record: dict[str, Any]) -> None:
        record.update(k="1", spec_decode_per_position_acceptance_rates=[record["spec_decode_per_position_acceptance_rates"][0]])

    edit_record(bench / SPECULATIVE, 3, k1)
    message = refused(CheckFailed, bench, SERVE_SPEC)
    assert message == f"{bench / SPECULATIVE}:1 and {bench / SPECULATIVE}:3 differ in k: 3 vs 1"


def test_fewer_than_three_runs_is_a_warning(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    path = bench / BASELINE
    path.write_text("\n".join(path.read_text().splitlines()[:2]))
    result = import_bench(bench, SERVE_SPEC)
    assert result.warnings == ("code: the baseline figure rests on 2 run(s), fewer than 3",)
    document = json.loads(result.benchmarks_json.read_text())
    assert document["warnings"] == list(result.warnings)
    assert document["summary"][0]["baseline"]["runs"] == 2


def test_run_with_failed_requests_is_left_out_with_a_warning(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    edit_record(bench / BASELINE, 1, setter("failed", 2))
    result = import_bench(bench, SERVE_SPEC)
    assert result.warnings == (
        f"{BASELINE}:1: failed: 2 requests failed; left out of every figure",
        "code: the baseline figure rests on 2 run(s), fewer than 3",
    )
    document = json.loads(result.benchmarks_json.read_text())
    assert document["summary"][0]["baseline"]["tpot_ms"] == [7.43223, 7.39518]
    assert document["runs"][0]["excluded"] == "failed: 2 requests failed"


def test_wide_spread_is_a_warning(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    edit_record(bench / BASELINE, 3, setter("median_tpot_ms", 8.1))
    result = import_bench(bench, SERVE_SPEC)
    assert result.warnings == ("code: baseline median TPOT varies by 9.3% across runs, more than 5%",)


def test_summary_row_without_usable_runs_of_a_mode_is_refused(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    for line in (1, 2, 3):
        edit_record(bench / SPECULATIVE, line, setter("completed", 20))  # of num_prompts 24
    message = refused(InputError, bench, SERVE_SPEC)
    assert message == f"{bench}: workload: no speculative run labeled 'code' (3 left out for failed or missing requests)"


def test_random_prompts_keep_acceptance_and_are_flagged(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    for file in (BASELINE, SPECULATIVE):
        for line in (1, 2, 3):
            edit_record(bench / file, line, setter("dataset", "random"))
    result = import_bench(bench, SERVE_SPEC)
    assert result.warnings == ("code: random (synthetic) prompts overstate speculative gains and accept differently from real text",)
    row = json.loads(result.benchmarks_json.read_text())["summary"][0]
    assert (row["synthetic"], row["dataset"], row["display"]["acceptance_rate"]) == (True, "random", "0.53")
