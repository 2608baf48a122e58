"""The benchmark's cases: a synthetic source on an embedded Hub, each stage as its own process."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.checkpoint.files import dump_json
from pipeline.families.step3p7 import STEP3P7, read_geometry
from pipeline.perf.sampling import PeakAllocation
from pipeline.rehearsal.hub import FaultPlan, HubServer
from pipeline.rehearsal.synthetic import SyntheticSpec, step_config, write_source

GROWTH = 4  # the second case's vocabulary multiplier: its four largest tensors grow 4x
FAKE_TOKEN = "hf_perf_benchmark_token"
SOURCE, TARGET = "synthetic/Step-3.7-Flash", "synthetic/Step-3.7-Flash-NVFP4"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


class PerfError(Exception):
    """A step of the benchmark failed; the message names the step and its log."""


def scaled_spec(scale: float, vocab_factor: int = 1) -> SyntheticSpec:
    """The released geometry with vocabulary, MLP width and head counts times `scale`.

    Hidden size, head size and layer counts stay real, so at `scale=1` this is the released model.
    `vocab_factor` then multiplies the vocabulary: the embedding and the three shared heads grow.
    """
    real = SyntheticSpec.real_shapes()

    def part(value: int, step: int) -> int:
        return max(step, round(value * scale / step) * step)

    return replace(
        real,
        vocab_size=part(real.vocab_size, 128) * vocab_factor,
        intermediate_size=part(real.intermediate_size, 128),
        sliding_heads=part(real.sliding_heads, real.kv_groups),
        full_heads=part(real.full_heads, real.kv_groups),
        shards=max(4, math.ceil(4 * scale * vocab_factor)),  # shards of at most about 3 GB
    )


def draft_bytes(spec: SyntheticSpec) -> int:
    """Bytes of the draft's tensors (all BF16) for a synthetic geometry."""
    geometry = read_geometry(step_config(spec))
    return sum(2 * math.prod(t.shape) for t in STEP3P7.expected_tensors(geometry))


def disk_needed(spec: SyntheticSpec, whole_shards: bool) -> int:
    """Peak disk use of one case: the source twice while it is uploaded; in whole-shard mode the
    Hub's copy, the downloaded shards and two sets of draft bytes; otherwise at most the Hub's
    copy and the fetched bytes, or fetched bytes and draft once the Hub's copy is gone."""
    source, draft = source_bytes_estimate(spec), draft_bytes(spec)
    return max(2 * source, 2 * source + 2 * draft if whole_shards else source + draft, 2 * draft)


def source_bytes_estimate(spec: SyntheticSpec) -> int:
    """About the size of the synthetic source: the draft plus lm_head and the backbone's projections."""
    h = spec.hidden_size
    backbone = spec.vocab_size * h + spec.num_hidden_layers * (h * spec.full_heads * spec.head_dim + 2 * h)
    return draft_bytes(spec) + 2 * backbone


@dataclass(frozen=True)
class ChildRun:
    """One child process: wall time, peak resident set size, and bytes it wrote to storage."""

    seconds: float
    peak_rss: int
    write_bytes: int | None  # None where the kernel keeps no per-process I/O counts (not Linux)


# Runs the measured command and reports its peak RSS and the bytes it wrote to storage. ru_maxrss
# of a direct child would include this process's own RSS, which the kernel carries across the fork
# and exec (the Hub server and the uploads live here); a bare interpreter in between is smaller
# than any stage, so it cannot mask the figure. Linux adds a reaped child's I/O counts (its own and
# its reaped children's) to the parent's, so the launcher's `write_bytes` after wait4, less before,
# is what the command and everything it started wrote; the launcher itself writes nothing until then.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "def written():\n"
    "    try:\n"
    "        lines = open('/proc/self/io').read().splitlines()\n"
    "    except OSError:\n"
    "        return None\n"
    "    return int(next(l.split()[1] for l in lines if l.startswith('write_bytes:')))\n"
    "before = written()\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "after = written()\n"
    "wrote = 'none' if before is None or after is None else str(after - before)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss) + ' ' + wrote)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_child(argv: Sequence[str], env: dict[str, str], log: Path) -> ChildRun:
    """Run a command to completion and return its wall time, its own peak RSS and its storage writes."""
    usage_file = log.with_suffix(".usage")
    with open(log, "wb") as out:
        started = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(usage_file), *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
        seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise PerfError(f"{' '.join(argv[:4])} exited with {code}: {' / '.join(tail)} (log: {log})")
    maxrss, wrote = usage_file.read_text().split()
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    return ChildRun(seconds, int(maxrss) * (1 if sys.platform == "darwin" else 1024), None if wrote == "none" else int(wrote))


def timed(argv: Sequence[str]) -> float:
    """Wall time of a baseline command such as cp or sha256sum."""
    started = time.perf_counter()
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def sha256_command() -> list[str]:
    return ["sha256sum"] if shutil.which("sha256sum") else ["shasum", "-a", "256"]


def write_target_files(folder: Path, spec: SyntheticSpec) -> None:
    """The NVFP4-like target as the build reads it: config and card only (its weights are never read)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(dump_json(step_config(spec, arrays=spec.num_hidden_layers, quantized=True)))
    (folder / "README.md").write_text(f"---\nlicense: apache-2.0\nbase_model: {SOURCE}\n---\n\n# Synthetic NVFP4-like target\n")


class Bench:
    """One benchmark case: a synthetic source on its own embedded Hub, and the stages run against it."""

    def __init__(self, root: Path, spec: SyntheticSpec, connections: int, cap: int, say: Callable[[str], None]) -> None:
        self.root, self.spec, self.connections, self.cap, self.say = root, spec, connections, cap, say
        self.server = HubServer(root / "hub")
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.source_bytes = 0
        self.url = ""

    def __enter__(self) -> Bench:
        self.server.start()
        self.url = self.server.url  # kept: the stages after fetch run with the server already gone
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {
            **os.environ,
            "PYTHONPATH": path,
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": FAKE_TOKEN,
            "HF_HOME": str(self.root / "hf-home"),
            "HF_HUB_CACHE": str(self.root / "hf-cache"),
        }

    def seed(self) -> None:
        """Generate the source and target, upload them through the real client, drop the local copies."""
        from huggingface_hub import HfApi

        generated = self.root / "generated"
        self.say(f"generating the source (about {source_bytes_estimate(self.spec) / 1e9:.1f} GB)")
        write_source(generated / "source", self.spec)
        write_target_files(generated / "target", self.spec)
        self.source_bytes = sum(p.stat().st_size for p in (generated / "source").glob("*.safetensors"))
        self.say("uploading it to the embedded Hub")
        api = HfApi(endpoint=self.server.url, token=FAKE_TOKEN)
        for repo, folder in ((SOURCE, generated / "source"), (TARGET, generated / "target")):
            api.create_repo(repo, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Add synthetic checkpoint")
        shutil.rmtree(generated)

    def recipe(self, name: str, connections: int, mode: str = "ranges") -> Path:
        folder = self.root / "recipes" / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "draft.yaml"
        fetch = f"{{connections: {connections}, mode: {mode}}}"
        path.write_text(f"family: step3p7\nsource: {SOURCE}@main\ntarget: {TARGET}@main\nlicense: apache-2.0\nfetch: {fetch}\n")
        return path

    def stage(self, stage: str, recipe: Path, workdir: Path) -> ChildRun:
        argv = [sys.executable, "-m", "pipeline", stage, "--recipe", str(recipe), "--workdir", str(workdir), "-q"]
        return run_child(argv, self.env, self.logs / f"{workdir.name}-{stage}.log")

    def fetch(self, name: str, connections: int, *, capped: bool, mode: str = "ranges") -> tuple[ChildRun, int]:
        """One fetch stage; returns its run and the bytes the Hub sent for it."""
        self.server.faults = FaultPlan(bytes_per_second=self.cap) if capped else FaultPlan()
        self.server.stats.reset()
        cap = f" at {self.cap / 1e6:g} MB/s each" if capped else ", uncapped"
        self.say(f"fetch, {mode}, {connections} connection(s){cap}")
        run = self.stage("fetch", self.recipe(name, connections, mode), self.root / name)
        return run, self.server.stats.resolve_bytes_sent

    def snapshot(self) -> int:
        """A full snapshot download of the source, as `hf download` would do; returns the bytes sent."""
        from huggingface_hub import snapshot_download

        self.server.faults = FaultPlan()
        self.server.stats.reset()
        self.say("snapshot download of the whole source, uncapped")
        folder = self.root / "snapshot"
        snapshot_download(SOURCE, cache_dir=str(folder), endpoint=self.server.url, token=FAKE_TOKEN)
        shutil.rmtree(folder)
        return self.server.stats.resolve_bytes_sent

    def drop_source(self) -> None:
        """Stop the Hub and delete its copy of the source: the stages after fetch never read it."""
        self.server.stop()
        shutil.rmtree(self.root / "hub")

    def build_after_fetch(self, name: str) -> dict[str, ChildRun]:
        recipe = self.recipe(name, self.connections)
        runs = {}
        for stage in ("extract", "config-fix", "verify"):
            self.say(stage)
            runs[stage] = self.stage(stage, recipe, self.root / name)
        return runs


def measure_main(bench: Bench) -> dict[str, Any]:
    """Bytes moved and written, disk peak, fetch speed-up, extract and verify against their floors, peak RSS."""
    bench.seed()
    workdir = bench.root / "ranges"
    with PeakAllocation(workdir) as fetch_peak:
        fetch_n, ranges_sent = bench.fetch("ranges", bench.connections, capped=True)
    needed = json.loads((workdir / "fetch" / "fetch.json").read_text())["bytes_needed"]
    fetch_1, _ = bench.fetch("one-connection", 1, capped=True)
    shutil.rmtree(bench.root / "one-connection")
    _, shards_sent = bench.fetch("whole-shards", bench.connections, capped=False, mode="shards")
    shutil.rmtree(bench.root / "whole-shards")
    shutil.rmtree(bench.root / "hf-cache", ignore_errors=True)
    snapshot_sent = bench.snapshot()
    bench.drop_source()
    with PeakAllocation(workdir) as later_peak:
        stages = bench.build_after_fetch("ranges")
    runs = [fetch_n, *stages.values()]
    written = None if any(run.write_bytes is None for run in runs) else sum(run.write_bytes or 0 for run in runs)
    draft_size = sum(p.stat().st_size for p in (workdir / "draft").iterdir() if p.is_file())

    bench.say("baselines: cp and sha256sum of the same bytes")
    shards = sorted(str(p) for p in (workdir / "draft").glob("*.safetensors"))
    copies = bench.root / "cp-copy"
    copies.mkdir()
    cp_seconds = timed(["cp", *shards, str(copies)])
    copied = sorted(str(p) for p in copies.iterdir())
    sha_copy_seconds = timed([*sha256_command(), *copied])
    openssl_copy_seconds = timed(["openssl", "dgst", "-sha256", *copied]) if shutil.which("openssl") else None
    shutil.rmtree(copies)
    sha_draft_seconds = timed([*sha256_command(), *shards])
    openssl_draft_seconds = timed(["openssl", "dgst", "-sha256", *shards]) if shutil.which("openssl") else None
    return {
        "bytes": {
            "source": bench.source_bytes,
            "needed": needed,
            "ranges": ranges_sent,
            "whole_shards": shards_sent,
            "snapshot": snapshot_sent,
            "draft": draft_size,
            "written_by_build": written,
            "workdir_peak": max(fetch_peak.bytes, later_peak.bytes),
        },
        "seconds": {
            "fetch_n": fetch_n.seconds,
            "fetch_1": fetch_1.seconds,
            "extract": stages["extract"].seconds,
            "cp": cp_seconds,
            "sha256sum_copy": sha_copy_seconds,
            "openssl_copy": openssl_copy_seconds,
            "verify": stages["verify"].seconds,
            "sha256sum_draft": sha_draft_seconds,
            "openssl_draft": openssl_draft_seconds,
        },
        "written": {"fetch": fetch_n.write_bytes, **{name: run.write_bytes for name, run in stages.items()}},
        "peak_rss": {"fetch": fetch_n.peak_rss, **{name: run.peak_rss for name, run in stages.items()}},
    }


def measure_grown(bench: Bench) -> dict[str, Any]:
    """The same stages with the vocabulary-sized tensors 4x larger: only their memory matters here."""
    bench.seed()
    fetch_n, _ = bench.fetch("ranges", bench.connections, capped=True)
    bench.drop_source()
    stages = bench.build_after_fetch("ranges")
    needed = json.loads((bench.root / "ranges" / "fetch" / "fetch.json").read_text())["bytes_needed"]
    return {
        "bytes": {"source": bench.source_bytes, "needed": needed},
        "seconds": {"fetch_n": fetch_n.seconds, **{name: run.seconds for name, run in stages.items()}},
        "peak_rss": {"fetch": fetch_n.peak_rss, **{name: run.peak_rss for name, run in stages.items()}},
    }
