"""A killed or failed extract never leaves a partial shard under its final name, and a re-run completes it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import RecipeMaker, run_cli
from tests.safetensors_reader import tensor_bytes

LARGER = SyntheticSpec(hidden_size=512, vocab_size=16384, intermediate_size=1024, full_heads=4, sliding_heads=8, kv_groups=2, head_dim=64)
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def larger_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("larger")
    return write_source(root / "source", LARGER), write_target(root / "target", LARGER)


def _complete_shards(draft: Path) -> None:
    for shard in draft.glob("model-*.safetensors"):
        tensor_bytes(shard)  # raises on a partial file: offsets past the end would slice short
        header_end = 8 + int.from_bytes(shard.read_bytes()[:8], "little")
        assert shard.stat().st_size >= header_end


def test_sigkilled_extract_resumes_to_identical_bytes(tmp_path: Path, larger_pair: tuple[Path, Path], make_recipe: RecipeMaker) -> None:
    source, target = larger_pair
    recipe = make_recipe("max_shard_size: 20MB\n", source=source, target=target)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(reference)).code == 0
    assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(killed)).code == 0

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "extract", "--recipe", str(recipe), "--workdir", str(killed)], env=env, stderr=subprocess.DEVNULL
    )
    draft = killed / "draft"
    deadline = time.monotonic() + 30
    while not list(draft.glob(".model-00002-*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "extract finished before it could be killed"
    _complete_shards(draft)
    assert not (draft / "model.safetensors.index.json").exists()

    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(killed)).code == 0
    assert not list(draft.glob(".*.tmp"))
    for path in (reference / "draft").iterdir():
        assert (draft / path.name).read_bytes() == path.read_bytes(), path.name


EXTRACT_CRASH_POINTS = 3


def test_extract_killed_at_random_moments_resumes_to_identical_bytes(
    tmp_path: Path, larger_pair: tuple[Path, Path], make_recipe: RecipeMaker
) -> None:
    source, target = larger_pair
    recipe = make_recipe("max_shard_size: 20MB\n", source=source, target=target)
    reference = tmp_path / "reference"
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(reference)).code == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    rng = random.Random(20261128)
    for point in range(EXTRACT_CRASH_POINTS):
        workdir = tmp_path / f"killed-{point}"
        assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
        argv = [sys.executable, "-m", "pipeline", "extract", "--recipe", str(recipe), "--workdir", str(workdir)]
        process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2))  # from interpreter start-up to well into the shards
        process.send_signal(signal.SIGKILL)
        process.wait()
        _complete_shards(workdir / "draft")  # whatever the moment, no final name holds a partial shard

        assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
        for path in (reference / "draft").iterdir():
            assert (workdir / "draft" / path.name).read_bytes() == path.read_bytes(), path.name


def test_failed_extract_leaves_no_partial_shard(tmp_path: Path, make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe()
    assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    blob = sorted((workdir / "fetch" / "tensors").glob("*.bin"))[-1]
    original = blob.read_bytes()
    blob.write_bytes(original[: len(original) // 2])

    result = run_cli("extract", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 2
    assert not list((workdir / "draft").glob("*.safetensors")) or all(tensor_bytes(p) for p in (workdir / "draft").glob("*.safetensors"))
    assert not list((workdir / "draft").glob(".*.tmp"))
    blob.write_bytes(original)
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0


def test_changed_blob_is_refused_by_extract(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe()
    assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    blob = sorted((workdir / "fetch" / "tensors").glob("*.bin"))[0]
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))

    result = run_cli("extract", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    assert "changed since fetch" in result.stderr
    assert not list((workdir / "draft").glob("*.safetensors"))
