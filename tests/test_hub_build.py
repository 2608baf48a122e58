"""Building from the embedded Hub through the real client: same bytes as a local build, only the
needed bytes moved, and faults either absorbed (identical output) or reported (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from pipeline.hub import FaultPlan, HubServer
from pipeline.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN, SOURCE_REPO, TARGET_REPO, seed_repo

MEDIUM = SyntheticSpec(
    hidden_size=256, vocab_size=8192, intermediate_size=512, full_heads=4, sliding_heads=8, kv_groups=2, head_dim=32, shards=3
)
FAST_RETRIES = "fetch: {attempts: 4, backoff_seconds: 0.05}\n"


@pytest.fixture(scope="module")
def medium_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("medium")
    return write_source(root / "source", MEDIUM), write_target(root / "target", MEDIUM)


def _seed(server: HubServer, source: Path, target: Path) -> HfApi:
    api = HfApi(endpoint=server.url, token=FAKE_TOKEN)
    seed_repo(api, SOURCE_REPO, source)
    seed_repo(api, TARGET_REPO, target)
    return api


def _recipe(folder: Path, text: str) -> Path:
    path = folder / "draft.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _hub_recipe(folder: Path, extra: str = "", revision: str = "main") -> Path:
    return _recipe(folder, f"family: step3p7\nsource: {SOURCE_REPO}@{revision}\ntarget: {TARGET_REPO}\nlicense: apache-2.0\n{extra}")


def _files(draft: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(draft.iterdir())}


def test_hub_build_equals_local_build_and_moves_only_needed_bytes(
    tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    source, target = medium_pair
    _seed(hub_endpoint, source, target)
    local = _recipe(tmp_path / "local", f"family: step3p7\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n")
    assert run_cli("build", "--recipe", str(local), "--workdir", str(tmp_path / "w-local")).code == 0
    hub_endpoint.stats.reset()

    result = run_cli("build", "--recipe", str(_hub_recipe(tmp_path / "hub")), "--workdir", str(tmp_path / "w-hub"))

    assert result.code == 0, result.stderr
    assert _files(tmp_path / "w-hub" / "draft") == _files(tmp_path / "w-local" / "draft")
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
    _seed(hub_endpoint, source, target)
    recipe = _hub_recipe(tmp_path / "r", FAST_RETRIES)
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "clean")).code == 0
    hub_endpoint.faults = faults

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "faulty"))

    assert result.code == 0, result.stderr
    assert sum(hub_endpoint.stats.faults_fired.values()) > 0
    assert _files(tmp_path / "faulty" / "draft") == _files(tmp_path / "clean" / "draft")


def test_a_permanent_failure_exits_3_with_one_line(tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]) -> None:
    _seed(hub_endpoint, *medium_pair)
    hub_endpoint.faults = FaultPlan(error_status=503, error_route="resolve", error_times=10_000)

    result = run_cli("build", "--recipe", str(_hub_recipe(tmp_path / "r", FAST_RETRIES)), "--workdir", str(tmp_path / "w"))

    assert result.code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "503" in errors[0] and SOURCE_REPO in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "fetch" / "fetch.json").exists()


def test_unknown_revision_is_bad_input(tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]) -> None:
    _seed(hub_endpoint, *medium_pair)

    result = run_cli("build", "--recipe", str(_hub_recipe(tmp_path / "r", revision="no-such-branch")), "--workdir", str(tmp_path / "w"))

    assert result.code == 2
    assert "revision 'no-such-branch' not found" in result.stderr


def test_whole_shard_mode_checks_lfs_hashes_and_gives_the_same_bytes(
    tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    source, target = medium_pair
    _seed(hub_endpoint, source, target)
    assert run_cli("build", "--recipe", str(_hub_recipe(tmp_path / "ranges")), "--workdir", str(tmp_path / "w1")).code == 0

    result = run_cli(
        "build", "--recipe", str(_hub_recipe(tmp_path / "shards", "fetch: {mode: shards}\n")), "--workdir", str(tmp_path / "w2")
    )

    assert result.code == 0, result.stderr
    assert _files(tmp_path / "w2" / "draft") == _files(tmp_path / "w1" / "draft")
    manifest = json.loads((tmp_path / "w2" / "fetch" / "fetch.json").read_text())
    needed_shards = {t["source_file"] for t in manifest["tensors"]}
    assert manifest["bytes_fetched"] >= sum((source / name).stat().st_size for name in needed_shards)
