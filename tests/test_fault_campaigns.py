"""Fault campaigns and crash points: a release is all or nothing, and a rerun finishes it.

Faults come from the embedded Hub (dropped bodies, 5xx/429 storms, failures mid-upload); crashes
are SIGKILLs of a real `python -m pipeline` process once it reaches a named state.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.rehearsal.hub import FaultPlan, HubServer
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN, FAST_RETRIES, files_of, hub_recipe, seed_pair
from tests.release_fixtures import DESTINATION, Release

REPO_ROOT = Path(__file__).resolve().parent.parent
DROP_CAMPAIGNS = 5


def test_connections_dropped_at_random_offsets_never_change_the_output(
    tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    seed_pair(hub_endpoint, *medium_pair)
    recipe = hub_recipe(tmp_path / "r", "retries: {attempts: 8, backoff_seconds: 0.01}\n")
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "clean")).code == 0
    clean = files_of(tmp_path / "clean" / "draft")
    rng = random.Random(20261127)
    fired = 0
    for campaign in range(DROP_CAMPAIGNS):
        hub_endpoint.faults = FaultPlan(drop_after_bytes=rng.randint(1, 2_000_000), drop_times=rng.randint(1, 4))
        workdir = tmp_path / f"campaign-{campaign}"

        result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))

        assert result.code == 0, result.stderr
        assert files_of(workdir / "draft") == clean
        fired += hub_endpoint.stats.faults_fired.get("drop", 0)
    assert fired >= DROP_CAMPAIGNS


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_storm_within_the_retry_budget_is_absorbed(
    status: int, tmp_path: Path, hub_endpoint: HubServer, medium_pair: tuple[Path, Path]
) -> None:
    seed_pair(hub_endpoint, *medium_pair)
    recipe = hub_recipe(tmp_path / "r", FAST_RETRIES)
    hub_endpoint.faults = FaultPlan(error_status=status, error_route="resolve", error_times=3, retry_after=0 if status == 429 else None)

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "w"))

    assert result.code == 0, result.stderr
    assert hub_endpoint.stats.faults_fired["error"] == 3


def test_a_storm_beyond_the_budget_publishes_nothing(release: Release) -> None:
    release.prepare()
    release.server.faults = FaultPlan(error_status=503, error_route="commit", error_times=1000)

    result = release.cli("publish")

    assert result.code == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert not release.api.repo_exists(DESTINATION), "the repo created for the failed release is removed again"


@pytest.mark.parametrize("route", ["lfs_upload", "commit", "tag_create"])
def test_a_failure_mid_release_is_finished_by_a_rerun(route: str, release: Release) -> None:
    release.prepare()
    release.server.faults = FaultPlan(error_status=500, error_route=route, error_times=1000)

    failed = release.cli("publish")

    assert failed.code == 3, failed.stderr
    if route == "tag_create":
        assert release.tags() == {} and len(release.commits()) == 2
    else:
        assert not release.api.repo_exists(DESTINATION), "a failed first release leaves no empty repo behind"
    release.server.faults = FaultPlan()

    finished = release.cli("publish")

    assert finished.code == 0, finished.stderr
    commits = release.commits()
    assert len(commits) == 2, "one release makes one commit, however often it is retried"
    assert release.tags() == {"v1.0.0": commits[0]}


def _publish_process(release: Release) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_ENDPOINT": release.server.url,
        "HF_TOKEN": FAKE_TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(release.root.parent / "hf-home"),
    }
    argv = [sys.executable, "-m", "pipeline", "publish", "--recipe", str(release.recipe), "--workdir", str(release.workdir)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Each crash point is a state of a publish that the embedded Hub can see; the kill waits for it.
# The faults hold the process in that state (throttled reads, or a refusal it waits to retry).
PUBLISH_CRASH_POINTS: tuple[tuple[str, FaultPlan, str], ...] = (
    ("fetching the tensor bytes", FaultPlan(bytes_per_second=100_000), "resolve"),
    ("built, before any upload", FaultPlan(error_status=503, error_route="preupload", error_times=1000), "preupload"),
    ("objects uploaded, commit not yet made", FaultPlan(error_status=503, error_route="commit", error_times=1000), "commit"),
    ("committed, not yet tagged", FaultPlan(error_status=503, error_route="tag_create", error_times=1000), "tag_create"),
)
SLOW_RETRIES = "retries: {attempts: 3, backoff_seconds: 30}"  # a refused call waits here, so the kill lands mid-publish


def _reached(server: HubServer, route: str) -> bool:
    if route == "resolve":
        return server.stats.resolve_bytes_sent > 50_000  # past the small files, inside the tensor bytes
    return server.stats.requests_by_route.get(route, 0) > 0


@pytest.mark.parametrize(("state", "faults", "route"), PUBLISH_CRASH_POINTS, ids=[p[0] for p in PUBLISH_CRASH_POINTS])
def test_publish_killed_in_each_state_ends_in_exactly_one_release(release: Release, state: str, faults: FaultPlan, route: str) -> None:
    release.prepare()
    release.recipe.write_text(release.recipe.read_text().replace("retries: {attempts: 3, backoff_seconds: 0.05}", SLOW_RETRIES))
    assert release.cli("card").code == 0
    release.commit_and_tag("v1.0.1")
    if route == "resolve":
        release.workdir = release.root / "build" / "fresh"  # nothing built there yet, so the fetch runs
    release.server.stats.reset()
    release.server.faults = faults
    ours = release.server.open_connections()

    process = _publish_process(release)
    deadline = time.monotonic() + 120
    while not _reached(release.server, route):
        assert process.poll() is None, f"publish ended before reaching {state}: {_stderr(process)}"
        assert time.monotonic() < deadline, f"publish never reached {state}"
        time.sleep(0.01)
    assert process.poll() is None, f"the kill must land while publish is {state}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    release.server.faults = FaultPlan()
    assert release.server.wait_closed_since(ours), "the killed publish's requests are still being answered"
    published = release.tags() if release.api.repo_exists(DESTINATION) else {}
    assert "v1.0.1" not in published, "a killed publish leaves no tag"

    rerun = _publish_process(release)
    assert rerun.wait(timeout=120) == 0, _stderr(rerun)
    commits = release.commits()
    assert len(commits) == 2 and release.tags() == {"v1.0.1": commits[0]}, "one release, one commit, one tag"


def _stderr(process: subprocess.Popen[bytes]) -> str:
    return process.stderr.read().decode() if process.stderr else ""
