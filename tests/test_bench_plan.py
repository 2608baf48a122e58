"""bench-plan: the recipe's plan as vLLM 0.33.0 sweep inputs, and the sweep's output imported with the plan alone.

The sweep itself is tests/fake_vllm_sweep.py (test code): a fake `vllm` that writes vLLM 0.33.0's
result layout with synthetic timings, run from the `run.sh` bench-plan writes.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.bench.spec import parse_benchmark_spec
from tests import fake_vllm_sweep
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
STEP_RECIPE = ROOT / "artifacts" / "step-3.7-flash-mtp-draft" / "draft.yaml"
DRAFT = "plan-test"
CONTEXTS = ["1K", "8K", "32K", "128K"]
CONCURRENCIES = [1, 2, 4, 8]
SINGLE_STREAM = ["free-form", "code", "japanese", "tool-call"]


def step_recipe() -> dict[str, Any]:
    return yaml.safe_load(STEP_RECIPE.read_text(encoding="utf-8"))


def cli(*argv: str) -> tuple[int, str, str]:
    result = run_cli(*argv)
    return result.code, result.stdout, result.stderr


def write_recipe(root: Path, benchmarks: dict[str, Any]) -> Path:
    """The Step recipe with another benchmarks section, as artifacts/plan-test/draft.yaml."""
    recipe = step_recipe()
    recipe["benchmarks"] = benchmarks
    folder = root / "artifacts" / DRAFT
    folder.mkdir(parents=True)
    path = folder / "draft.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def real_prompts_plan() -> dict[str, Any]:
    """The Step plan with its placeholder prompt files replaced by named ones (the fake reads no prompt)."""
    plan = copy.deepcopy(step_recipe()["benchmarks"]["plan"])
    for workload in plan["workloads"]:
        suffix = "-{context}" if "contexts" in workload else ""
        workload["dataset"]["path"] = f"prompts/{workload['id']}{suffix}.jsonl"
    return plan


def fake_executables(folder: Path, names: dict[str, str]) -> Path:
    """Executables named like the real tools, each running one of the test fakes with this Python."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, script in names.items():
        path = folder / name
        path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(script)} "$@"\n')
        path.chmod(0o755)
    return folder


def run_sweep(
    plan_dir: Path, output_dir: Path, experiment: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """run.sh as the GPU host runs it, with the fake `vllm` first on PATH."""
    bin_dir = fake_executables(tmp_path / "fake-bin", {"vllm": fake_vllm_sweep.__file__})
    env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(plan_dir / "run.sh"), str(output_dir), experiment], env=env, capture_output=True, text=True, timeout=120
    )


# ---- the Step-3.7 plan: what the facts give, and our defaults for the rest --------------------------


@pytest.fixture(scope="module")
def step_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("step-plan")
    code, _, stderr = cli("bench-plan", "--draft", "step-3.7-flash-mtp-draft", "--out", str(out))
    assert code == 0, stderr
    assert "8 placeholder prompt file(s)" in stderr
    return out


def test_step_plan_serves_the_published_setup(step_plan: Path) -> None:
    # 2 GPUs, TP=2, K=1 (shared/facts/bench-formats.md §8); one baseline server and one per K
    serve = json.loads((step_plan / "serve_params.json").read_text())
    assert serve == [
        {"_benchmark_name": "baseline"},
        {
            "_benchmark_name": "mtp-k1",
            # written as text without spaces: the sweep would json.dumps a dict, with spaces (param_sweep.py:128-130)
            "speculative_config": '{"method":"mtp","model":"mtp-draft-pipeline/Step-3.7-Flash-MTP-draft","num_speculative_tokens":1}',
        },
    ]
    script = (step_plan / "run.sh").read_text()
    assert "--serve-cmd 'vllm serve stepfun-ai/Step-3.7-Flash-NVFP4 --revision main --tensor-parallel-size 2 --port 8000'" in script
    bench_cmd = shlex.split(shlex.split(script.split("--bench-cmd ", 1)[1].split(" \\\n", 1)[0])[0])
    metadata = bench_cmd[bench_cmd.index("--metadata") + 1 :]
    assert metadata == [
        "workload=unset",
        "image=vllm/vllm-openai:stepfun37",
        "gpu=RTX PRO 6000",
        "gpu_count=2",
        "tp=2",
        "temperature=0.0",
        "draft_model=mtp-draft-pipeline/Step-3.7-Flash-MTP-draft",
    ]
    # runs per cell: 3 is our default (no source gives it); the sweep's option is --num-runs (sweep/serve.py:541-546)
    assert "--num-runs 3 \\" in script


def test_step_plan_grid_is_four_single_stream_workloads_and_the_long_context_matrix(step_plan: Path) -> None:
    bench = json.loads((step_plan / "bench_params.json").read_text())
    cells = [(entry["metadata"], entry["max_concurrency"]) for entry in bench]
    expected = [(f"workload={w}", 1) for w in SINGLE_STREAM]
    expected += [("workload=long-context", c) for _ in CONTEXTS for c in CONCURRENCIES]
    assert cells == expected
    names = [entry["_benchmark_name"] for entry in bench]
    assert names[:4] == [f"{w}-c1" for w in SINGLE_STREAM]
    assert names[4:] == [f"long-context-{ctx}-c{c}" for ctx in CONTEXTS for c in CONCURRENCIES]
    assert len(set(names)) == len(names)  # the sweep refuses duplicate names (param_sweep.py:41-48)
    # no source names the prompts: every path is a named placeholder, and the long-context one is per context
    assert all(entry["dataset_path"].startswith("PLACEHOLDER:") for entry in bench)
    assert bench[4]["dataset_path"] == "PLACEHOLDER:long-context prompts of 1K tokens (no source names them)"
    assert {entry["custom_output_len"] for entry in bench} == {256}  # our default, vLLM's own for custom (datasets.py:1648-1651)


def test_step_run_script_refuses_to_start_on_placeholders(step_plan: Path, tmp_path: Path) -> None:
    result = run_sweep(step_plan, tmp_path / "results", "x", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: the plan names placeholder prompt files: PLACEHOLDER:free-form prompts")
    assert not (tmp_path / "results").exists()
    assert "## Placeholders\n\n- `PLACEHOLDER:free-form prompts (no source names them)`" in (step_plan / "RUN.md").read_text()


def test_bench_plan_json_names_every_cell(tmp_path: Path) -> None:
    code, stdout, _ = cli("bench-plan", "--draft", "step-3.7-flash-mtp-draft", "--out", str(tmp_path / "p"), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["servers"] == ["baseline", "mtp-k1"] and len(data["cells"]) == 20 and data["runs_per_cell"] == 3
    assert set(data["files"]) == {"serve_params.json", "bench_params.json", "run.sh", "RUN.md"}


# ---- plan, sweep, import: the plan is the only description ------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("swept")
    recipe = write_recipe(root, {"plan": {**real_prompts_plan(), "results": "2026-12-01"}})
    plan_dir = root / "plan"
    code, _, stderr = cli("bench-plan", "--recipe", str(recipe), "--out", str(plan_dir))
    assert code == 0 and "placeholder" not in stderr, stderr
    results = recipe.parent / "benchmarks" / "2026-12-01"
    result = run_sweep(plan_dir, results, "20261201_120000", root)
    assert result.returncode == 0, result.stderr
    code, _, stderr = cli("bench-import", "--recipe", str(recipe), "--workdir", str(root / "work"))
    assert code == 0, stderr
    document = json.loads((root / "work" / "benchmarks" / "benchmarks.json").read_text())
    return {"root": root, "recipe": recipe, "plan": plan_dir, "results": results, "document": document, "stderr": stderr}


def test_sweep_output_has_vllm_layout(swept: dict[str, Any]) -> None:
    experiment = swept["results"] / "20261201_120000"
    folders = sorted(p.name for p in experiment.iterdir() if p.is_dir())
    # "-".join(("SERVE-", name, "BENCH-", name)): sweep/serve.py:139-154
    assert folders[0] == "SERVE--baseline-BENCH--code-c1"
    assert len(folders) == 40 and (experiment / "summary.csv").is_file()
    run = json.loads((experiment / "SERVE--mtp-k1-BENCH--long-context-8K-c4" / "run=2.json").read_text())
    assert (run["workload"], run["_benchmark_name"], run["max_concurrency"], run["run_number"]) == (
        "long-context",
        "long-context-8K-c4",
        4,
        2,
    )
    assert (run["tp"], run["gpu_count"], run["image"]) == ("2", "2", "vllm/vllm-openai:stepfun37")
    assert run["speculative_config"].count(" ") == 0 and run["spec_decode_num_drafts"] == fake_vllm_sweep.DRAFTS_PER_RUN
    assert sorted(p.name for p in (experiment / "SERVE--baseline-BENCH--code-c1").iterdir()) == [
        "run=0.json",
        "run=1.json",
        "run=2.json",
        "summary.json",
    ]


def test_plan_alone_imports_and_pairs_every_cell(swept: dict[str, Any]) -> None:
    recipe = yaml.safe_load(swept["recipe"].read_text())
    assert set(recipe["benchmarks"]) == {"plan"}  # no runs:, labels:, workloads: or matrix:
    doc = swept["document"]
    assert [row["workload"] for row in doc["summary"]] == SINGLE_STREAM
    for row in doc["summary"]:
        assert (row["k"], row["concurrency"], row["baseline"]["runs"], row["speculative"]["runs"]) == (1, 1, 3, 3)
        assert row["speedup"] == pytest.approx(fake_vllm_sweep.SPEEDUP, rel=1e-5)
        assert row["acceptance"]["rate"] == pytest.approx(fake_vllm_sweep.ACCEPTED_FRACTION)
    matrix = doc["matrix"]
    assert (matrix["workload"], matrix["contexts"], matrix["concurrencies"]) == ("long-context", CONTEXTS, CONCURRENCIES)
    for row in matrix["cells"]:
        for cell in row:
            assert cell["speedup"] == pytest.approx(fake_vllm_sweep.SPEEDUP, rel=1e-5), cell
    assert doc["provenance"]["gpu"] == ["RTX PRO 6000"] and doc["provenance"]["tp"] == [2]
    assert "warning" not in swept["stderr"]


def beside_results(swept: dict[str, Any], tmp_path: Path, recipe: dict[str, Any]) -> Path:
    """A changed copy of the swept recipe whose benchmarks folder is the swept one."""
    changed = tmp_path / "artifacts" / DRAFT / "draft.yaml"
    changed.parent.mkdir(parents=True)
    changed.write_text(yaml.safe_dump(recipe, sort_keys=False))
    (changed.parent / "benchmarks").symlink_to(swept["recipe"].parent / "benchmarks")
    return changed


def test_import_refuses_a_run_whose_metadata_contradicts_the_plan(swept: dict[str, Any], tmp_path: Path) -> None:
    recipe = yaml.safe_load(swept["recipe"].read_text())
    recipe["benchmarks"]["plan"]["tp"] = 1
    changed = beside_results(swept, tmp_path, recipe)
    code, _, stderr = cli("bench-import", "--recipe", str(changed), "--workdir", str(tmp_path / "work"))
    assert code == 2
    assert "run=0.json: tp: the file says 2, the recipe's benchmarks.labels.tp says 1" in stderr


def test_import_names_the_plan_cell_without_runs(swept: dict[str, Any], tmp_path: Path) -> None:
    recipe = yaml.safe_load(swept["recipe"].read_text())
    recipe["benchmarks"]["plan"]["workloads"][0]["id"] = "chat"
    changed = beside_results(swept, tmp_path, recipe)
    code, _, stderr = cli("bench-import", "--recipe", str(changed), "--workdir", str(tmp_path / "work"))
    assert code == 2
    assert "benchmarks.plan cell chat-c1 (baseline).match: no measured run" in stderr
    assert "hint: put the folder the plan's run.sh wrote under benchmarks/" in stderr


def test_results_of_another_plan_fill_no_cell(swept: dict[str, Any], tmp_path: Path) -> None:
    recipe = yaml.safe_load(swept["recipe"].read_text())
    recipe["benchmarks"]["plan"]["workloads"][1]["num_prompts"] = 64  # the runs were made with 32 prompts
    changed = beside_results(swept, tmp_path, recipe)
    code, _, stderr = cli("bench-import", "--recipe", str(changed), "--workdir", str(tmp_path / "work"))
    assert code == 2
    assert "benchmarks.plan cell code-c1 (baseline).match: no measured run" in stderr


def test_run_script_resumes_an_experiment(swept: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert run_sweep(swept["plan"], results, "again", tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in sorted(results.rglob("run=*.json"))}
    second = run_sweep(swept["plan"], results, "again", tmp_path)
    assert second.returncode == 0, second.stderr  # without --resume the sweep refuses an existing folder (sweep/serve.py:591-601)
    assert {p: p.read_bytes() for p in sorted(results.rglob("run=*.json"))} == before


# ---- an engine build without spec_decode_* result keys: /metrics snapshots beside every run -------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_plan_sweeps_each_server_alone_and_imports_acceptance_from_snapshots(tmp_path: Path) -> None:
    old_engine = {fake_vllm_sweep.RESULT_SPEC_KEYS_ENV: "0"}  # results without spec_decode_* keys
    plan = {**real_prompts_plan(), "results": "r", "port": _free_port()}
    code, long_context = plan["workloads"][1], plan["workloads"][4]
    plan["workloads"] = [code, {**long_context, "contexts": ["1K", "8K"], "concurrencies": [1, 2]}]  # fewer cells: a scrape per run
    recipe = write_recipe(tmp_path / "metrics", {"plan": {**plan, "acceptance": "metrics"}})
    assert cli("bench-plan", "--recipe", str(recipe), "--out", str(tmp_path / "plan"))[0] == 0
    assert {"serve_params-baseline.json", "serve_params-mtp-k1.json", "scrape_metrics.py"} <= {
        p.name for p in (tmp_path / "plan").iterdir()
    }
    result = run_sweep(tmp_path / "plan", recipe.parent / "benchmarks" / "r", "e", tmp_path, old_engine)
    assert result.returncode == 0, result.stderr
    # one sweep per server configuration, each combination with its warm-up and a snapshot after every run
    assert sorted(p.name for p in (recipe.parent / "benchmarks" / "r").iterdir()) == ["e-baseline", "e-mtp-k1"]
    combination = recipe.parent / "benchmarks" / "r" / "e-mtp-k1" / "SERVE--mtp-k1-BENCH--code-c1"
    assert {"warmup.json", "warmup.metrics.prom", "run=2.json", "run=2.metrics.prom"} <= {p.name for p in combination.iterdir()}
    assert "spec_decode_num_drafts" not in json.loads((combination / "run=0.json").read_text())

    code, _, stderr = cli("bench-import", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"))
    assert code == 0, stderr
    doc = json.loads((tmp_path / "work" / "benchmarks" / "benchmarks.json").read_text())
    for row in doc["summary"]:
        assert row["acceptance"]["sources"] == ["prometheus_delta"]
        # each run's delta is its own drafts only: the warm-up and earlier runs fall outside it
        assert row["acceptance"]["num_drafts"] == 3 * fake_vllm_sweep.DRAFTS_PER_RUN
        assert row["acceptance"]["rate"] == pytest.approx(fake_vllm_sweep.ACCEPTED_FRACTION)
    assert all(cell["speedup"] is not None for row in doc["matrix"]["cells"] for cell in row)

    # the same results under a plan that expects the keys in the results: refused, naming the fix
    plain = write_recipe(tmp_path / "plain", {"plan": plan})
    (plain.parent / "benchmarks").symlink_to(recipe.parent / "benchmarks")
    code, _, stderr = cli("bench-import", "--recipe", str(plain), "--workdir", str(tmp_path / "work2"))
    assert code == 2 and "spec_decode_num_drafts: missing; a speculative run needs acceptance data" in stderr


# ---- the plan section is validated like the rest of the recipe --------------------------------------


def _plan(**changes: Any) -> dict[str, Any]:
    plan = real_prompts_plan()
    plan.update(changes)
    return plan


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (_plan(gpus=2), "plan.gpus: unknown key (did you mean 'gpu'?); valid keys:"),
        (_plan(k=[0]), "plan.k[0]: must be a positive integer, not 0"),
        (_plan(k=[1, 1]), "plan.k[1]: 1 is listed twice"),
        (_plan(tp=4), "plan.tp: 4 is more than gpu_count 2"),
        (_plan(temperature="hot"), "plan.temperature: must be a number from 0 to 2"),
        (_plan(engine={"version": "0.33.0"}), "plan.engine.image: is required"),
        (_plan(workloads=[{"id": "baseline", "random": {"input_len": 10}}]), "plan.workloads[0].id: 'baseline' reads as a mode or a K"),
        (
            _plan(workloads=[{"id": "a", "dataset": {"name": "random", "path": "x"}}]),
            "plan.workloads[0].dataset.name: 'random' is not a vLLM dataset",
        ),
        (_plan(workloads=[{"id": "a"}]), "plan.workloads[0]: give either dataset"),
        (
            _plan(workloads=[{"id": "a", "random": {"output_len": 8}, "contexts": ["8k"]}]),
            "plan.workloads[0].contexts[0]: '8k' is not a context size",
        ),
        (
            _plan(workloads=[{"id": "a", "random": {"input_len": 8}, "concurrencies": [1, 2]}]),
            "plan.workloads[0].concurrencies: a workload without contexts",
        ),
        (
            _plan(workloads=[{"id": "a", "dataset": {"name": "custom", "path": "p.jsonl"}, "contexts": ["8K"], "concurrencies": [1]}]),
            "plan.workloads[0].dataset.path: must hold {context}",
        ),
    ],
)
def test_bad_plan_names_the_field(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_benchmark_spec({"plan": plan})
    assert message in str(raised.value)


def test_bad_plan_in_a_recipe_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, {"plan": _plan(runs_per_cell=0)})
    code, _, stderr = cli("bench-plan", "--recipe", str(recipe), "--out", str(tmp_path / "p"))
    assert code == 2
    assert f"{recipe}: benchmarks.plan.runs_per_cell: must be a positive integer, not 0" in stderr


def test_bench_plan_without_a_plan_exits_2(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, {"runs": [{"files": "*.json"}]})
    code, _, stderr = cli("bench-plan", "--recipe", str(recipe), "--out", str(tmp_path / "p"))
    assert code == 2 and "benchmarks.plan: not in the recipe" in stderr and "hint:" in stderr
    assert not (tmp_path / "p").exists()


def test_random_workload_takes_its_input_length_from_the_context() -> None:
    from pipeline.bench.plan import bench_params

    spec = parse_benchmark_spec(
        {"plan": _plan(workloads=[{"id": "synthetic", "random": {"output_len": 128}, "contexts": ["8K"], "concurrencies": [2]}])}
    )
    assert spec.plan is not None
    [entry] = bench_params(spec.plan)
    # --random-input-len / --random-output-len: datasets/datasets.py:1887-1898
    assert (entry["dataset_name"], entry["random_input_len"], entry["random_output_len"]) == ("random", 8192, 128)
    assert "dataset_path" not in entry  # random takes no --dataset-path (serve.py:2157-2168)
