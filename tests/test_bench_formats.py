"""Each accepted format, read from a realistic file, gives the exact figures of the stated formulas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench.prometheus import delta, read_snapshot
from pipeline.bench.spec import parse_benchmark_spec
from pipeline.stages.bench_import import BenchImportInputs, run

DATA = Path(__file__).parent / "data" / "bench"
H100 = "NVIDIA H100 80GB HBM3"
SWEEP_LABELS = {"workload": "chat", "engine_version": "0.33.0", "gpu": H100, "gpu_count": 2, "tp": 2}


def import_bench(spec: dict[str, Any], out: Path, bench_dir: Path = DATA) -> tuple[tuple[str, ...], dict[str, Any]]:
    result = run(BenchImportInputs(bench_dir, parse_benchmark_spec(spec), out))
    return result.warnings, json.loads(result.benchmarks_json.read_text(encoding="utf-8"))


def r6(value: float) -> float:
    """The document's fixed rounding."""
    return round(value, 6)


def test_vllm_bench_serve_append_result_with_spec_decode_keys(tmp_path: Path) -> None:
    warnings, doc = import_bench({"runs": [{"files": "vllm-serve/*.json"}]}, tmp_path)
    assert warnings == ()
    (row,) = doc["summary"]
    assert (row["workload"], row["k"], row["concurrency"], row["output_len"], row["input_len"]) == ("code", 3, 1, 256, 192)
    assert row["baseline"]["tpot_ms"] == [7.41, 7.43223, 7.39518]
    assert row["baseline"]["decode_tok_s"] == r6(1000 / 7.41)
    assert row["speculative"]["median_tpot_ms"] == 4.15
    assert row["speedup"] == r6(7.41 / 4.15 - 1)
    accepted, draft_tokens, drafts = 3453 + 3447 + 3282, 6474 + 6465 + 6153, 2158 + 2155 + 2051
    acceptance = row["acceptance"]
    assert (acceptance["num_accepted_tokens"], acceptance["num_draft_tokens"], acceptance["num_drafts"]) == (accepted, draft_tokens, drafts)
    assert acceptance["rate"] == r6(accepted / draft_tokens)
    assert acceptance["length"] == r6(1 + accepted / drafts)
    assert acceptance["per_position"] == [
        r6((1683 + 1702 + 1641) / drafts),
        r6((1144 + 1142 + 1087) / drafts),
        r6((626 + 603 + 554) / drafts),
    ]
    assert row["display"] == {
        "baseline_decode_tok_s": "135.0",
        "speculative_decode_tok_s": "241.0",
        "speedup": "+78.6%",
        "acceptance_rate": "0.53",
        "acceptance_length": "2.60",
    }
    first = doc["runs"][3]
    assert first["source"]["ref"] == "vllm-serve/code-mtp-k3.json:1"
    assert first["source"]["tool"] == "vllm bench serve"
    assert first["source"]["acceptance_source"] == "bench_result"
    assert first["provenance"]["gpu_count"] == 2 and first["provenance"]["temperature"] == 0.0
    assert first["perf"]["request_rate"] == "inf"
    assert first["workload"]["lengths_from_token_totals"] == ["input_len"]
    assert (tmp_path / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


LEGACY_SPEC = {
    "labels": {"workload": "chat", "output_len": 128},
    "runs": [
        {"files": "vllm-legacy/baseline/*.json", "mode": "baseline"},
        {
            "files": "vllm-legacy/mtp/*.json",
            "mode": "speculative",
            "k": 2,
            "prometheus": [
                {"before": f"vllm-legacy/metrics/run{i}.before.prom", "after": f"vllm-legacy/metrics/run{i}.after.prom"} for i in range(3)
            ],
        },
    ],
}


def test_legacy_benchmark_serving_with_prometheus_deltas(tmp_path: Path) -> None:
    spec = LEGACY_SPEC
    warnings, doc = import_bench(spec, tmp_path)
    assert warnings == ()
    (row,) = doc["summary"]
    assert row["speedup"] == r6(11.9238 / 7.7844 - 1)
    # deltas summed over both engines: drafts 602 + 568 + 620, draft tokens twice that, accepted 752 + 710 + 774
    acceptance = row["acceptance"]
    assert acceptance["sources"] == ["prometheus_delta"]
    assert (acceptance["num_drafts"], acceptance["num_draft_tokens"], acceptance["num_accepted_tokens"]) == (1790, 3580, 2236)
    assert acceptance["rate"] == r6(2236 / 3580)
    assert acceptance["length"] == r6(1 + 2236 / 1790)
    spec_run = next(r for r in doc["runs"] if r["cell"]["mode"] == "speculative")
    assert spec_run["source"]["tool"] == "vllm benchmark_serving.py (legacy)"
    assert spec_run["source"]["prometheus"] == {
        "before": "vllm-legacy/metrics/run0.before.prom",
        "after": "vllm-legacy/metrics/run0.after.prom",
    }
    assert spec_run["acceptance"]["per_position"] == [r6(452 / 602), r6(300 / 602)]
    tools = {source["file"]: source["tool"] for source in doc["sources"]}
    assert tools["vllm-legacy/metrics/run2.after.prom"] == "prometheus /metrics snapshot"


def test_legacy_misspelled_goodput_key_is_read(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    shutil.copytree(DATA / "vllm-legacy", bench / "vllm-legacy")
    path = sorted((bench / "vllm-legacy" / "baseline").glob("*.json"))[0]
    record = json.loads(path.read_text())
    assert "request_goodput:" in record and "failed" not in record
    record["request_goodput:"] = 0.5
    path.write_text(json.dumps(record))
    _, doc = import_bench(LEGACY_SPEC, tmp_path / "out", bench)
    assert doc["runs"][0]["perf"]["request_goodput"] == 0.5


SWEEP_RUNS = {
    "labels": SWEEP_LABELS,
    "runs": [
        {"files": "vllm-sweep/*/SERVE-baseline-*/run=[0-9].json", "mode": "baseline"},
        {"files": "vllm-sweep/*/SERVE-mtp-k2-*/run=[0-9].json", "mode": "speculative"},
    ],
}


def test_sweep_run_files_take_labels_from_override_keys(tmp_path: Path) -> None:
    warnings, doc = import_bench(SWEEP_RUNS, tmp_path)
    assert warnings == ()
    (row,) = doc["summary"]
    # context from --metadata, K from the dotted speculative_config key, output_len from random_output_len
    assert (row["context"], row["k"], row["output_len"], row["input_len"]) == ("4K", 2, 256, 4010)
    assert row["speedup"] == r6(9.8294 / 6.9207 - 1)
    assert row["acceptance"]["rate"] == r6((1886 + 1968 + 1861) / (3368 + 3514 + 3322))
    assert [r["cell"]["run_number"] for r in doc["runs"]] == [0, 1, 2, 0, 1, 2]  # warmup.json (run -1) left out
    assert {r["source"]["tool"] for r in doc["runs"]} == {"vllm bench sweep serve"}


@pytest.mark.parametrize(
    "runs",
    [
        [
            {"files": "vllm-sweep/*/SERVE-baseline-*/summary.json", "mode": "baseline"},
            {"files": "vllm-sweep/*/SERVE-mtp-k2-*/summary.json", "mode": "speculative"},
        ],
        [
            {"files": "vllm-sweep/*/summary.csv", "mode": "baseline", "match": {"speculative_config.num_speculative_tokens": None}},
            {"files": "vllm-sweep/*/summary.csv", "mode": "speculative", "match": {"speculative_config.num_speculative_tokens": 2}},
        ],
    ],
    ids=["summary.json", "summary.csv"],
)
def test_sweep_summaries_give_the_same_figures_as_the_run_files(tmp_path: Path, runs: list[dict[str, Any]]) -> None:
    _, expected = import_bench(SWEEP_RUNS, tmp_path / "runs")
    _, doc = import_bench({"labels": SWEEP_LABELS, "runs": runs}, tmp_path / "summary")

    def figures(document: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(json.dumps(document["summary"]))
        for row in rows:
            for side in ("baseline", "speculative"):
                del row[side]["run_refs"]
        return rows

    assert figures(doc) == figures(expected)


def test_sglang_jsonl_with_bare_infinity_and_cumulative_accept_length(tmp_path: Path) -> None:
    spec = {
        "labels": {"workload": "chat"},
        "runs": [
            {"files": "sglang/*.jsonl", "mode": "baseline", "match": {"server_info.speculative_algorithm": None}},
            {"files": "sglang/*.jsonl", "mode": "speculative", "k": 1, "match": {"server_info.speculative_algorithm": "EAGLE"}},
        ],
    }
    assert "Infinity" in (DATA / "sglang" / "sglang_0306_50_sharegpt.jsonl").read_text()
    warnings, doc = import_bench(spec, tmp_path)
    assert warnings == ("chat: acceptance is SGLang's server-cumulative accept_length (includes earlier traffic)",)
    (row,) = doc["summary"]
    assert row["baseline"]["tpot_ms"] == [10.2, 10.25, 10.18]
    assert row["speedup"] == r6(10.2 / 7.9 - 1)
    assert row["acceptance"]["sources"] == ["sglang_server_cumulative"]
    assert row["acceptance"]["length"] == 1.8  # median of 1.79, 1.81, 1.8
    assert row["acceptance"]["rate"] == 0.8  # (AL - 1) / K for a chain draft
    assert row["acceptance"]["num_drafts"] is None
    spec_run = doc["runs"][3]
    assert spec_run["source"]["ref"] == "sglang/sglang_0306_50_sharegpt.jsonl:2"
    assert spec_run["perf"]["request_rate"] == "inf"
    assert spec_run["provenance"]["target_model"] == "stepfun-ai/Step-3.7-Flash-NVFP4"
    assert (spec_run["provenance"]["engine_version"], spec_run["provenance"]["tp"]) == ("0.5.9", 2)
    assert spec_run["workload"]["output_len"] == 256  # sharegpt_output_len; random_* ignored for sharegpt
    text = (tmp_path / "benchmarks.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))


def test_prometheus_delta_sums_engines_and_ignores_created_series() -> None:
    scrape = """# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 7302.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 1000.0
vllm:spec_decode_num_drafts_created{engine="0",model_name="m"} 1.76e+09
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 21906.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="m"} 3000.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 11580.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="m"} 1500.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 5716.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="0"} 800.0
"""
    start = """vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 1000
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 1000
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 3000
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="m"} 3000
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 1500
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="m"} 1500
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 800
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="0"} 800
"""
    counters = delta(read_snapshot(start, "a"), read_snapshot(scrape, "b"), "a", "b")
    # the worked example of bench-formats.md §4: rate 0.533, length 2.60, pos0 0.78
    assert (counters.num_drafts, counters.num_draft_tokens, counters.num_accepted_tokens) == (6302, 18906, 10080)
    assert counters.accepted_per_position == (4916,)
    assert round(counters.num_accepted_tokens / counters.num_draft_tokens, 3) == 0.533
    assert round(1 + counters.num_accepted_tokens / counters.num_drafts, 2) == 2.60
