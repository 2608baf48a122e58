"""Tensors landed in parallel parts at their offsets: exact bytes and hashes, bounded retries, and resume after a kill."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.checkpoint.sources import LocalSource
from pipeline.errors import RemoteError
from pipeline.rehearsal.hub import FaultPlan, HubServer
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from pipeline.remote import ranged
from pipeline.remote.ranged import FileJob, Part, Segment, fetch_files, plan_parts
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN, SOURCE_REPO, TARGET_REPO, seed_repo

SMALL_PART = 64 * 1024
# Embedding and shared heads of 1 MiB each: 16 parts of SMALL_PART per large tensor.
MULTI_PART = SyntheticSpec(hidden_size=128, vocab_size=4096, intermediate_size=256, full_heads=4, sliding_heads=4, head_dim=32)
REPO_ROOT = Path(__file__).resolve().parent.parent


def test_parts_cover_the_range_in_order() -> None:
    assert plan_parts(0, 4) == []
    assert plan_parts(8, 4) == [Part(0, 0, 4), Part(1, 4, 8)]
    assert plan_parts(10, 4) == [Part(0, 0, 4), Part(1, 4, 8), Part(2, 8, 10)]
    with pytest.raises(ValueError):
        plan_parts(10, 0)


class _CountingSource(LocalSource):
    """A local folder that counts range requests and can fail the n-th one, like a lost connection."""

    def __init__(self, root: Path, fail_on_call: int | None = None) -> None:
        super().__init__(root, "test source")
        self.calls = 0
        self.fail_on_call = fail_on_call
        self._calls_lock = threading.Lock()

    def stream_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        with self._calls_lock:
            self.calls += 1
            call = self.calls
        if call == self.fail_on_call:
            raise RemoteError("test source: connection lost")
        yield from super().stream_range(name, start, end)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "data.bin").write_bytes(os.urandom(10 * SMALL_PART + 123))
    return folder / "data.bin"


def _job(folder: Path, name: str, ranges: list[tuple[int, int]], gap: int = 0) -> FileJob:
    """A file holding each range of data.bin in turn, `gap` zero bytes before each one."""
    segments, offset = [], 0
    for start, end in ranges:
        offset += gap
        segments.append(Segment("data.bin", start, end, offset))
        offset += end - start
    return FileJob(folder / name, offset, tuple(segments), "plan")


def test_parallel_parts_land_exact_bytes_at_their_offsets(tmp_path: Path, data_file: Path) -> None:
    data = data_file.read_bytes()
    ranges = [(5, 5), (7, 100), (100, 100 + 9 * SMALL_PART + 17), (200, 200 + SMALL_PART)]
    folder = tmp_path / "landed"
    folder.mkdir()
    jobs = [_job(folder, "a.bin", ranges, gap=11), _job(folder, "b.bin", [(3, 3 + SMALL_PART + 1)])]
    digests: dict[str, list[str]] = {}
    moved: list[int] = []

    fetch_files(
        LocalSource(data_file.parent, "test"),
        [(job, lambda found, name=job.path.name: digests.__setitem__(name, found)) for job in jobs],
        4,
        moved.append,
        SMALL_PART,
    )

    landed = (folder / "a.bin").read_bytes()
    expected = b"".join(b"\0" * 11 + data[start:end] for start, end in ranges)
    assert landed == expected
    assert digests["a.bin"] == [hashlib.sha256(data[start:end]).hexdigest() for start, end in ranges]
    assert (folder / "b.bin").read_bytes() == data[3 : 3 + SMALL_PART + 1]
    assert sum(moved) == sum(job.nbytes for job in jobs)
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.bin"]


def test_an_interrupted_fetch_keeps_finished_parts_and_fetches_only_the_rest(tmp_path: Path, data_file: Path) -> None:
    data = data_file.read_bytes()
    folder = tmp_path / "landed"
    folder.mkdir()
    job = _job(folder, "a.bin", [(0, 7 * SMALL_PART), (7 * SMALL_PART, len(data))], gap=8)
    failing = _CountingSource(data_file.parent, fail_on_call=4)

    with pytest.raises(RemoteError):
        fetch_files(failing, [(job, lambda found: None)], 1, lambda n: None, SMALL_PART)  # type: ignore[arg-type]

    assert not job.path.exists()
    logged = {int(line) for line in job.part_log.read_text().split()}
    assert {0, 1, 2} <= logged and 3 not in logged  # a part already under way when 3 failed may finish too
    with open(job.part_log, "a") as log:
        log.write("7")  # a line a kill cut short: that part is not trusted
    digests: list[list[str]] = []
    resumed = _CountingSource(data_file.parent)

    fetch_files(resumed, [(job, digests.append)], 3, lambda n: None, SMALL_PART)  # type: ignore[arg-type]

    assert resumed.calls == 11 - len(logged)  # 7 + 4 parts in all
    assert job.path.read_bytes() == b"\0" * 8 + data[: 7 * SMALL_PART] + b"\0" * 8 + data[7 * SMALL_PART :]
    assert digests == [[hashlib.sha256(data[: 7 * SMALL_PART]).hexdigest(), hashlib.sha256(data[7 * SMALL_PART :]).hexdigest()]]
    assert not job.partial.exists() and not job.part_log.exists()


def test_a_file_killed_just_before_its_rename_is_hashed_again_not_fetched_again(tmp_path: Path, data_file: Path) -> None:
    data = data_file.read_bytes()
    folder = tmp_path / "landed"
    folder.mkdir()
    job = _job(folder, "a.bin", [(0, 3 * SMALL_PART), (3 * SMALL_PART, len(data))], gap=8)
    first: list[list[str]] = []
    fetch_files(LocalSource(data_file.parent, "test"), [(job, first.append)], 2, lambda n: None, SMALL_PART)
    job.path.rename(job.partial)  # the state a kill leaves between the digests' record and the rename
    job.part_log.write_text("".join(f"{number}\n" for number in range(11)))
    again: list[list[str]] = []
    counting = _CountingSource(data_file.parent)

    fetch_files(counting, [(job, again.append)], 2, lambda n: None, SMALL_PART)  # type: ignore[arg-type]

    assert counting.calls == 0
    assert again == first and job.path.is_file() and not job.partial.exists() and not job.part_log.exists()


@pytest.fixture(scope="module")
def multi_part_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multi-part")
    return write_source(root / "source", MULTI_PART), write_target(root / "target", MULTI_PART)


def _recipe(folder: Path, source: str, target: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "draft.yaml"
    path.write_text(f"family: step3p7\nsource: {source}\ntarget: {target}\nlicense: apache-2.0\n{extra}")
    return path


def _seeded(server: HubServer, pair: tuple[Path, Path]) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=server.url, token=FAKE_TOKEN)
    seed_repo(api, SOURCE_REPO, pair[0])
    seed_repo(api, TARGET_REPO, pair[1])


def _draft(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "draft").iterdir())}


def test_dropped_connections_inside_multi_part_tensors_give_identical_bytes(
    tmp_path: Path, hub_endpoint: HubServer, multi_part_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = multi_part_pair
    _seeded(hub_endpoint, multi_part_pair)
    local = _recipe(tmp_path / "local", f"{{path: {source}}}", f"{{path: {target}}}")
    assert run_cli("build", "--recipe", str(local), "--workdir", str(tmp_path / "w-local")).code == 0
    monkeypatch.setattr(ranged, "PART_BYTES", SMALL_PART)
    hub_endpoint.faults = FaultPlan(drop_after_bytes=SMALL_PART // 3, drop_times=12)
    hub = _recipe(tmp_path / "hub", SOURCE_REPO, TARGET_REPO, "retries: {attempts: 4, backoff_seconds: 0.01}\n")

    result = run_cli("build", "--recipe", str(hub), "--workdir", str(tmp_path / "w-hub"))

    assert result.code == 0, result.stderr
    assert hub_endpoint.stats.faults_fired.get("drop") == 12
    assert _draft(tmp_path / "w-hub") == _draft(tmp_path / "w-local")


def test_a_killed_fetch_resumes_its_multi_part_tensors(
    tmp_path: Path, hub_endpoint: HubServer, multi_part_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _seeded(hub_endpoint, multi_part_pair)
    recipe = _recipe(tmp_path / "r", SOURCE_REPO, TARGET_REPO, "fetch: {connections: 4}\n")
    hub_endpoint.stats.reset()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "reference")).code == 0
    clean_bytes = hub_endpoint.stats.resolve_bytes_sent
    hub_endpoint.faults = FaultPlan(bytes_per_second=512 * 1024, drop_after_bytes=SMALL_PART // 2, drop_times=2)
    killed = tmp_path / "killed"
    child = (
        f"import sys; from pipeline.remote import ranged; ranged.PART_BYTES = {SMALL_PART}; from pipeline.cli.main import main; "
        f"sys.exit(main(['fetch', '--recipe', {str(recipe)!r}, '--workdir', {str(killed)!r}, '-q']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    ours = hub_endpoint.open_connections()  # this process's kept-alive connections, idle now
    process = subprocess.Popen([sys.executable, "-c", child], env=env, stderr=subprocess.DEVNULL)
    tensors = killed / "fetch" / "shards"
    deadline = time.monotonic() + 60
    while (
        process.poll() is None and time.monotonic() < deadline and not any(p.read_text().count("\n") >= 2 for p in tensors.glob("*.parts"))
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "fetch finished before it could be killed"
    logged_parts = sum(len(p.read_text().split()) for p in tensors.glob("*.parts"))
    assert logged_parts >= 2
    assert not (killed / "draft").exists() and not (killed / "fetch" / "fetch.json").exists()  # nothing final yet
    assert hub_endpoint.stats.faults_fired.get("drop") == 2
    hub_endpoint.faults = FaultPlan()
    assert hub_endpoint.wait_closed_since(ours), "the killed fetch's connections are still open"
    hub_endpoint.stats.reset()
    monkeypatch.setattr(ranged, "PART_BYTES", SMALL_PART)

    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(killed)).code == 0

    assert _draft(killed) == _draft(tmp_path / "reference")
    assert hub_endpoint.stats.resolve_bytes_sent <= clean_bytes - logged_parts * SMALL_PART
    assert not list(tensors.glob("*.part*"))
