"""A killed fetch or extract never leaves a partial file under a final name, and a re-run completes it.

Each kill waits for the state it means to interrupt (polling the files the stage writes) and then
checks that it landed there: the stage was still running and its work was still incomplete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import RecipeMaker, run_cli
from tests.safetensors_reader import tensor_bytes

LARGER = SyntheticSpec(hidden_size=512, vocab_size=16384, intermediate_size=1024, full_heads=4, sliding_heads=8, kv_groups=2, head_dim=64)
REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_PART = 64 * 1024  # parts this small make a local fetch long enough to be caught mid-shard
EXTRACT_CRASH_POINTS = (1, 2, 3)  # extract killed while sealing each of these shards
FETCH_CRASH_POINTS = (1, 40)  # fetch killed once this many parts have landed in the shards
KILL_ATTEMPTS = 3
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@pytest.fixture(scope="module")
def larger_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("larger")
    return write_source(root / "source", LARGER), write_target(root / "target", LARGER)


@pytest.fixture
def larger_recipe(larger_pair: tuple[Path, Path], make_recipe: RecipeMaker) -> Path:
    source, target = larger_pair
    return make_recipe("max_shard_size: 20MB\n", source=source, target=target)


@pytest.fixture
def reference(tmp_path: Path, larger_recipe: Path) -> dict[str, bytes]:
    workdir = tmp_path / "reference"
    assert run_cli("build", "--recipe", str(larger_recipe), "--workdir", str(workdir)).code == 0
    return {path.name: path.read_bytes() for path in (workdir / "draft").iterdir()}


def _complete_shards(draft: Path) -> None:
    """Every file under a final shard name is whole: its header's offsets are all inside it."""
    for shard in draft.glob("model-*.safetensors"):
        tensor_bytes(shard)  # raises on a partial file: offsets past the end would slice short
        header_end = 8 + int.from_bytes(shard.read_bytes()[:8], "little")
        assert shard.stat().st_size >= header_end


def _kill_when(argv: list[str], reached: Callable[[], bool]) -> None:
    """Start a stage, SIGKILL it the moment `reached()` holds, and check it was killed while running."""
    process = subprocess.Popen([sys.executable, *argv], env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not reached() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
    assert reached(), "the stage was killed before it reached the state under test"


def _draft(workdir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (workdir / "draft").iterdir()}


def _landing(workdir: Path, number: int) -> Path:
    return next((workdir / "fetch" / "shards").glob(f"model-{number:05d}-of-*.unsealed"))


def _header_written(path: Path) -> bool:
    """Extract has written this landed shard's header but not yet renamed it: it is mid-seal."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) != b"\0" * 8
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("shard", EXTRACT_CRASH_POINTS)
def test_extract_killed_while_sealing_resumes_to_identical_bytes(
    tmp_path: Path, larger_recipe: Path, reference: dict[str, bytes], shard: int
) -> None:
    fetched = tmp_path / "fetched"
    assert run_cli("fetch", "--recipe", str(larger_recipe), "--workdir", str(fetched)).code == 0
    for attempt in range(KILL_ATTEMPTS):  # sealing one shard takes tens of ms: a busy machine may miss it
        killed = tmp_path / f"killed-{attempt}"
        shutil.copytree(fetched, killed)  # copy2 keeps the mtimes the stage records compare
        landing = _landing(killed, shard)
        argv = ["-m", "pipeline", "extract", "--recipe", str(larger_recipe), "--workdir", str(killed)]
        _kill_when(argv, lambda landing=landing: _header_written(landing) or not landing.exists())
        if landing.exists():
            break
    else:
        pytest.fail(f"extract sealed shard {shard} before each of {KILL_ATTEMPTS} kills landed")

    draft = killed / "draft"
    assert _header_written(landing) and not (draft / landing.name.replace(".unsealed", ".safetensors")).exists()
    assert not (draft / "model.safetensors.index.json").exists()
    _complete_shards(draft)
    assert run_cli("build", "--recipe", str(larger_recipe), "--workdir", str(killed)).code == 0
    assert _draft(killed) == reference
    assert not list((killed / "fetch" / "shards").glob("*.unsealed"))


@pytest.mark.parametrize("logged_parts", FETCH_CRASH_POINTS)
def test_fetch_killed_while_landing_shards_resumes_to_identical_bytes(
    tmp_path: Path, larger_recipe: Path, reference: dict[str, bytes], logged_parts: int
) -> None:
    killed = tmp_path / "killed"
    shards = killed / "fetch" / "shards"
    child = (
        f"import sys; from pipeline.remote import ranged; ranged.PART_BYTES = {SMALL_PART}; from pipeline.cli.main import main; "
        f"sys.exit(main(['fetch', '--recipe', {str(larger_recipe)!r}, '--workdir', {str(killed)!r}, '-q']))"
    )

    def landing_parts() -> int:
        return sum(path.read_text().count("\n") for path in shards.glob("*.parts")) if shards.is_dir() else 0

    _kill_when(["-c", child], lambda: landing_parts() >= logged_parts)

    assert list(shards.glob("*.part")), "no shard was mid-landing"
    assert not (killed / "fetch" / "fetch.json").exists()
    assert not (killed / "draft").exists()
    for landed in shards.glob("*.unsealed"):  # a landed shard is complete: its record names every tensor
        record = json.loads(landed.with_suffix(".json").read_text())
        assert landed.stat().st_size == record["size"] and set(record["sha256"]) == set(record["tensors"])
    assert run_cli("build", "--recipe", str(larger_recipe), "--workdir", str(killed)).code == 0
    assert _draft(killed) == reference
    assert not list(shards.iterdir()) or all(p.suffix == ".json" for p in shards.iterdir())


def test_a_truncated_landed_shard_is_refused_then_fetched_again(tmp_path: Path, make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe("max_shard_size: 100KB\n")
    assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    landing = _landing(workdir, 2)
    landing.write_bytes(landing.read_bytes()[:1000])

    result = run_cli("extract", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 2 and "the layout needs" in result.stderr
    assert not list((workdir / "draft").glob("model-00002-*"))
    _complete_shards(workdir / "draft")
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    _complete_shards(workdir / "draft")
    assert len(list((workdir / "draft").glob("model-*.safetensors"))) == 5


def test_changed_landed_bytes_are_refused_by_extract_then_fetched_again(make_recipe: RecipeMaker, workdir: Path, tmp_path: Path) -> None:
    recipe = make_recipe()
    reference = tmp_path / "reference"
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(reference)).code == 0
    assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    landing = _landing(workdir, 1)
    data = bytearray(landing.read_bytes())
    data[-1] ^= 0xFF
    landing.write_bytes(bytes(data))

    result = run_cli("extract", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    assert "changed since fetch" in result.stderr
    assert not list((workdir / "draft").glob("*.safetensors"))
    assert not landing.exists()  # never sealed, so the next fetch lands it again
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    assert _draft(workdir) == _draft(reference)
