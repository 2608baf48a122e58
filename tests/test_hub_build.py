"""Building from the embedded Hub through the real client: same bytes as a local build, only the
needed bytes moved, and faults either absorbed (identical output) or reported (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.rehearsal.hub import FaultPlan, HubServer
from tests.conftest import run_cli
from tests.hub_fixtures import FAST_RETRIES, SOURCE_REPO, TARGET_REPO, files_of, hub_recipe, recipe_file, seed_pair


def test_hub_build_equals_local_build_and_moves_only_needed_bytes(
    tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    source, target = medium_pair
    seed_pair(hub_endpoint, source, target)
    local = recipe_file(
        tmp_path / "local", f"family: step3p7\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n"
    )
    assert run_cli("build", "--recipe", str(local), "--workdir", str(tmp_path / "w-local")).code == 0
    hub_endpoint.stats.reset()

    result = run_cli("build", "--recipe", str(hub_recipe(tmp_path / "hub")), "--workdir", str(tmp_path / "w-hub"))

    assert result.code == 0, result.stderr
    assert files_of(tmp_path / "w-hub" / "draft") == files_of(tmp_path / "w-local" / "draft")
    manifest = json.loads((tmp_path / "w-hub" / "fetch" / "fetch.json").read_text())
    assert manifest["source"]["commit"] and len(manifest["source"]["commit"]) == 40
    assert manifest["bytes_fetched"] <= 1.02 * manifest["bytes_needed"]
    assert "bytes fetched for" in result.stderr
    source_bytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    assert hub_endpoint.stats.resolve_bytes_sent < 0.8 * source_bytes  # the backbone never crossed the wire
    lock = json.loads((tmp_path / "hub" / "draft.lock.json").read_text())
    assert lock["source"]["commit"] == manifest["source"]["commit"]


@pytest.mark.parametrize(
    "faults",
    [
        FaultPlan(drop_after_bytes=40_000, drop_times=3),
        FaultPlan(error_status=503, error_route="resolve", error_times=2),
        FaultPlan(error_status=429, error_route="resolve", error_times=1, retry_after=0),
        FaultPlan(error_status=500, error_route="tree", error_times=2),
    ],
    ids=["dropped-connections", "two-503s", "429-retry-after", "tree-500s"],
)
def test_faults_within_the_retry_budget_give_identical_bytes(
    faults: FaultPlan, tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    source, target = medium_pair
    seed_pair(hub_endpoint, source, target)
    recipe = hub_recipe(tmp_path / "r", FAST_RETRIES)
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "clean")).code == 0
    hub_endpoint.faults = faults

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "faulty"))

    assert result.code == 0, result.stderr
    assert sum(hub_endpoint.stats.faults_fired.values()) > 0
    assert files_of(tmp_path / "faulty" / "draft") == files_of(tmp_path / "clean" / "draft")


def test_a_permanent_failure_exits_3_with_one_line(tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]) -> None:
    seed_pair(hub_endpoint, *medium_pair)
    hub_endpoint.faults = FaultPlan(error_status=503, error_route="resolve", error_times=10_000)

    result = run_cli("build", "--recipe", str(hub_recipe(tmp_path / "r", FAST_RETRIES)), "--workdir", str(tmp_path / "w"))

    assert result.code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "503" in errors[0] and SOURCE_REPO in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "fetch" / "fetch.json").exists()


def test_unknown_revision_is_bad_input(tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]) -> None:
    seed_pair(hub_endpoint, *medium_pair)

    result = run_cli("build", "--recipe", str(hub_recipe(tmp_path / "r", revision="no-such-branch")), "--workdir", str(tmp_path / "w"))

    assert result.code == 2
    assert "revision 'no-such-branch' not found" in result.stderr


def test_whole_shard_mode_checks_lfs_hashes_and_gives_the_same_bytes(
    tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    source, target = medium_pair
    seed_pair(hub_endpoint, source, target)
    several = "max_shard_size: 1MB\n"  # several landed shards, each filled from more than one source shard
    assert run_cli("build", "--recipe", str(hub_recipe(tmp_path / "ranges", several)), "--workdir", str(tmp_path / "w1")).code == 0

    result = run_cli(
        "build", "--recipe", str(hub_recipe(tmp_path / "shards", several + "fetch: {mode: shards}\n")), "--workdir", str(tmp_path / "w2")
    )

    assert result.code == 0, result.stderr
    assert files_of(tmp_path / "w2" / "draft") == files_of(tmp_path / "w1" / "draft")
    assert len(list((tmp_path / "w2" / "draft").glob("model-*.safetensors"))) > 1
    manifest = json.loads((tmp_path / "w2" / "fetch" / "fetch.json").read_text())
    needed_shards = {t["source_file"] for t in manifest["tensors"]}
    assert manifest["bytes_fetched"] >= sum((source / name).stat().st_size for name in needed_shards)


def test_each_small_remote_file_is_requested_once_per_build(
    tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    source, target = medium_pair
    seed_pair(hub_endpoint, source, target)
    hub_endpoint.stats.reset()

    assert run_cli("build", "--recipe", str(hub_recipe(tmp_path / "hub")), "--workdir", str(tmp_path / "w")).code == 0

    small = {path: count for path, count in hub_endpoint.stats.file_requests.items() if not path.endswith(".safetensors")}
    assert f"{SOURCE_REPO}/config.json" in small and f"{SOURCE_REPO}/model.safetensors.index.json" in small
    assert f"{TARGET_REPO}/config.json" in small and f"{SOURCE_REPO}/README.md" in small
    assert small == dict.fromkeys(small, 1)
