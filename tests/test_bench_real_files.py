"""Result files as users really label them: K=0 baselines, baseline-only folders, bare sweep trees.

Each test starts from a realistic fixture and changes it the way a real run would differ: the
labels a user passes with `--metadata`, the keys `vllm bench sweep serve` writes, SGLang's random
dataset, a run with failed requests, or the checkout the import runs from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench.inferred import context_name
from pipeline.bench.spec import parse_benchmark_spec
from pipeline.errors import CheckFailed, InputError
from pipeline.stages.bench_import import BenchImportInputs, BenchImportResult, run
from tests.test_bench_errors import BASELINE, DATA, SPECULATIVE, copy_fixture, dropper, edit_record, setter

ONE_LINE: dict[str, Any] = {"runs": [{"files": "vllm-serve/*.json"}]}


def import_bench(bench: Path, spec: dict[str, Any], out: Path | None = None) -> BenchImportResult:
    return run(BenchImportInputs(bench, parse_benchmark_spec(spec), out or bench.parent / "out"))


def document(result: BenchImportResult) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(result.benchmarks_json.read_text(encoding="utf-8"))
    return loaded


def relabel_baseline(bench: Path, key: str, value: str) -> None:
    """The baseline runs labeled the way many users do: K=0 instead of mode=baseline."""
    for line in (1, 2, 3):
        edit_record(bench / BASELINE, line, dropper("mode"))
        edit_record(bench / BASELINE, line, setter(key, value))


@pytest.mark.parametrize("key", ["num_speculative_tokens", "k"])
def test_k0_label_means_baseline(tmp_path: Path, key: str) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    relabel_baseline(bench, key, "0")
    for line in (1, 2, 3):
        edit_record(bench / SPECULATIVE, line, dropper("mode"))  # K=3 alone says speculative
    doc = document(import_bench(bench, ONE_LINE))
    (row,) = doc["summary"]
    assert (row["baseline"]["runs"], row["speculative"]["runs"], row["k"]) == (3, 3, 3)
    assert row["display"]["speedup"] == "+78.6%"
    baseline_run = doc["runs"][0]
    assert (baseline_run["cell"]["mode"], baseline_run["cell"]["k"]) == ("baseline", None)
    assert baseline_run["cell"]["inferred_from"] == {"mode": key}


def test_k0_baseline_on_other_hardware_is_refused_naming_the_field(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    relabel_baseline(bench, "num_speculative_tokens", "0")
    edit_record(bench / SPECULATIVE, 1, setter("gpu", "NVIDIA H200"))
    with pytest.raises(CheckFailed) as caught:
        import_bench(bench, ONE_LINE)
    assert caught.value.exit_code == 1
    assert caught.value.message == (
        f"{bench / BASELINE}:1 and {bench / SPECULATIVE}:1 differ in gpu: 'NVIDIA H100 80GB HBM3' vs 'NVIDIA H200'"
    )


def test_k0_on_a_run_labeled_speculative_is_refused(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    edit_record(bench / SPECULATIVE, 2, setter("k", "0"))
    with pytest.raises(InputError) as caught:
        import_bench(bench, ONE_LINE)
    assert caught.value.message == f"{bench / SPECULATIVE}:2: k: 0 means no speculation, but the run is labeled speculative"


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [("hardware", "NVIDIA H200", "gpu"), ("num_prompts", 32, "num_prompts")],
)
def test_hardware_and_prompt_count_join_the_pairing_key(tmp_path: Path, key: str, value: object, field: str) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    for line in (1, 2, 3):
        if key == "hardware":  # every run labeled with --metadata hardware=..., none with gpu=
            edit_record(bench / BASELINE, line, dropper("gpu"))
            edit_record(bench / BASELINE, line, setter("hardware", "NVIDIA H100 80GB HBM3"))
            edit_record(bench / SPECULATIVE, line, dropper("gpu"))
        else:
            edit_record(bench / SPECULATIVE, line, setter("completed", 32))
        edit_record(bench / SPECULATIVE, line, setter(key, value))
    # the prompt count alone differs: the mean input length is declared, not taken from token totals
    with pytest.raises(CheckFailed) as caught:
        import_bench(bench, {"labels": {"input_len": 192}, **ONE_LINE})
    assert caught.value.exit_code == 1
    assert caught.value.message.startswith(f"{bench / BASELINE}:1 and {bench / SPECULATIVE}:1 differ in {field}: ")


def test_legacy_baseline_only_folder_imports_as_a_baseline_row(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-legacy")
    spec = {"labels": {"workload": "chat", "output_len": 128, "mode": "baseline"}, "runs": [{"files": "vllm-legacy/baseline/*.json"}]}
    result = import_bench(bench, spec)
    assert result.warnings == ("chat: no speculative run; the row shows the target alone",)
    assert result.plot_png is None  # no speedup to draw
    (row,) = document(result)["summary"]
    assert (row["speculative"], row["speedup"], row["acceptance"], row["k"]) == (None, None, None, None)
    assert (row["baseline"]["runs"], row["baseline"]["median_tpot_ms"]) == (3, 11.9238)
    assert row["display"] == {
        "baseline_decode_tok_s": f"{1000 / 11.9238:.1f}",
        "speculative_decode_tok_s": None,
        "speedup": None,
        "acceptance_rate": None,
        "acceptance_length": None,
    }


def test_speculative_runs_that_all_failed_still_refuse_the_row(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    for line in (1, 2, 3):
        edit_record(bench / SPECULATIVE, line, setter("failed", 1))
    with pytest.raises(InputError) as caught:
        import_bench(bench, ONE_LINE)
    assert caught.value.message == f"{bench}: workload: no speculative run labeled 'code' (3 left out for failed or missing requests)"


def test_document_is_byte_identical_from_two_checkouts_with_an_excluded_run(tmp_path: Path) -> None:
    outputs = []
    for checkout in ("first", "second/deeper"):
        bench = copy_fixture(tmp_path / checkout, "vllm-serve")
        edit_record(bench / BASELINE, 1, setter("failed", 2))
        edit_record(bench / BASELINE, 1, setter("date", "20260401-090000"))  # the latest date, on the left-out run
        result = import_bench(bench, ONE_LINE)
        outputs.append(result.benchmarks_json.read_bytes())
        assert str(tmp_path).encode() not in outputs[-1]
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    assert doc["warnings"][0] == f"{BASELINE}:1: failed: 2 requests failed; left out of every figure"
    assert doc["provenance"]["dates"]["last"] < "2026-04-01"


SWEEP_TREE = "vllm-sweep"


def bare_sweep(tmp_path: Path) -> Path:
    """The sweep fixture as a sweep writes it without --metadata: context only as random_input_len."""
    bench = copy_fixture(tmp_path, SWEEP_TREE)
    for path in bench.glob(f"{SWEEP_TREE}/*/*/run=*.json"):
        record = json.loads(path.read_text())
        for key in ("context", "metadata"):
            record.pop(key)
        record["random_input_len"] = 4000
        path.write_text(json.dumps(record, indent=4))
    return bench


def test_sweep_tree_imports_with_three_recipe_lines(tmp_path: Path) -> None:
    bench = bare_sweep(tmp_path)
    spec = {"labels": {"workload": "chat", "engine_version": "0.33.0"}, "runs": [{"files": f"{SWEEP_TREE}/*/*/run=[0-9].json"}]}
    result = import_bench(bench, spec)
    assert result.warnings == ()
    doc = document(result)
    (row,) = doc["summary"]
    assert (row["context"], row["k"], row["concurrency"], row["input_len"]) == ("4K", 2, 1, 4000)
    assert row["speedup"] == round(9.8294 / 6.9207 - 1, 6)
    inferred = {r["cell"]["mode"]: r["cell"]["inferred_from"] for r in doc["runs"]}
    assert inferred == {
        "baseline": {"context": "random_input_len", "mode": "speculative_config"},
        "speculative": {"context": "random_input_len", "mode": "speculative_config.num_speculative_tokens"},
    }


def test_sweep_benchmark_name_gives_mode_and_k(tmp_path: Path) -> None:
    bench = bare_sweep(tmp_path)
    for path in bench.glob(f"{SWEEP_TREE}/*/*/run=*.json"):
        record = json.loads(path.read_text())
        speculative = "speculative_config.num_speculative_tokens" in record
        record.pop("speculative_config.num_speculative_tokens", None)
        record["_benchmark_name"] = "mtp-k2" if speculative else "baseline"
        path.write_text(json.dumps(record, indent=4))
    spec = {"labels": {"workload": "chat", "engine_version": "0.33.0"}, "runs": [{"files": f"{SWEEP_TREE}/*/*/run=[0-9].json"}]}
    doc = document(import_bench(bench, spec))
    assert doc["summary"][0]["k"] == 2
    assert {r["cell"]["inferred_from"]["mode"] for r in doc["runs"]} == {"_benchmark_name"}


@pytest.mark.parametrize(
    ("tokens", "name"),
    [
        (1024, "1K"),
        (1000, "1K"),
        (8000, "8K"),
        (8192, "8K"),
        (32768, "32K"),
        (131072, "128K"),
        (128000, "128K"),
        (100000, None),
        (512, None),
    ],
)
def test_input_length_rounds_to_the_usual_context_names(tokens: int, name: str | None) -> None:
    assert context_name(tokens) == name


def test_sglang_random_dataset_shows_acceptance_and_names_the_dataset(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "sglang")
    jsonl = bench / "sglang" / "sglang_0306_50_sharegpt.jsonl"
    for line in (1, 2, 3, 4, 5, 6):
        edit_record(jsonl, line, setter("dataset_name", "random"))
    spec = {
        "labels": {"workload": "chat"},
        "runs": [
            {"files": "sglang/*.jsonl", "k": 1, "match": {"server_info.speculative_algorithm": "EAGLE"}},
            {"files": "sglang/*.jsonl", "match": {"server_info.speculative_algorithm": None}},
        ],
    }
    result = import_bench(bench, spec)
    (row,) = document(result)["summary"]
    assert (row["dataset"], row["synthetic"], row["display"]["acceptance_length"]) == ("random", True, "1.80")
    assert "chat: random (synthetic) prompts overstate speculative gains and accept differently from real text" in result.warnings


def test_sglang_hint_names_no_metadata_flag(tmp_path: Path) -> None:
    spec = {"runs": [{"files": "sglang/*.jsonl", "k": 1, "match": {"server_info.speculative_algorithm": "EAGLE"}}]}
    with pytest.raises(InputError) as caught:
        import_bench(DATA, spec, tmp_path)
    assert caught.value.message.startswith(f"{DATA / 'sglang' / 'sglang_0306_50_sharegpt.jsonl'}:2: workload: not found")
    assert caught.value.hint == "set workload under benchmarks.runs[0]"


def test_vllm_hint_names_the_metadata_flag(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    edit_record(bench / BASELINE, 1, dropper("workload"))
    with pytest.raises(InputError) as caught:
        import_bench(bench, ONE_LINE)
    assert caught.value.hint == "set workload under benchmarks.runs[0], or pass --metadata workload=VALUE to vllm bench serve"
