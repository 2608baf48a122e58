"""Performance benchmark: bytes moved, parallel fetch, hashing, verify and peak memory, each beside its baseline.

`python -m pipeline.perf` writes a synthetic Step-3.7 source at the released tensor shapes (or a
fraction of them, `--scale`), serves it from the embedded Hub with a per-connection bandwidth cap,
and runs each build stage as a child process, so each stage's peak RSS is its own. Every figure
stands beside its baseline measured in the same run: the naive downloads, one connection, `cp`
plus `sha256sum` of the same bytes. Then the vocabulary grows 4x (the embedding and the three
shared heads grow 4x) and the stages run again, to show their memory does not follow tensor size.
It prints a table and writes it as JSON. The test suite never runs it: a default run moves GBs.
"""

from __future__ import annotations

import os

# The embedded Hub speaks LFS only, and the client reads these when it is first imported.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.families.step3p7 import STEP3P7, read_geometry
from pipeline.fsio import dump_json
from pipeline.hub import FaultPlan, HubServer
from pipeline.synthetic import SyntheticSpec, step_config, write_source

DEFAULT_SCALE = 0.25  # a 1.7 GB draft from a 2.7 GB source: the whole run takes about 5 minutes on 2 cores
DEFAULT_CONNECTIONS = 8  # the recipe's default
# Per connection, in MB/s: low enough that eight capped connections (160 MB/s) stay under what the
# embedded Hub and the client together sustain on two cores (about 280 MB/s), so the comparison
# measures the fetch and not the CPU.
DEFAULT_CAP_MB = 20.0
GROWTH = 4
FAKE_TOKEN = "hf_perf_benchmark_token"
SOURCE, TARGET = "synthetic/Step-3.7-Flash", "synthetic/Step-3.7-Flash-NVFP4"
GOALS = {"ranges": 1.02, "speedup": 5.0, "extract": 1.5, "verify": 1.3, "rss_mib": 512, "rss_growth": 0.10}
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


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
    """One child process: wall time and peak resident set size."""

    seconds: float
    peak_rss: int


# Runs the measured command and reports its peak RSS. ru_maxrss of a direct child would include
# this process's own RSS, which the kernel carries across the fork and exec (the Hub server and
# the uploads live here); a bare interpreter in between is smaller than any stage, so it cannot
# mask the figure.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_child(argv: Sequence[str], env: dict[str, str], log: Path) -> ChildRun:
    """Run a command to completion and return its wall time and its own peak RSS."""
    rss_file = log.with_suffix(".maxrss")
    with open(log, "wb") as out:
        started = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(rss_file), *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
        seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise PerfError(f"{' '.join(argv[:4])} exited with {code}: {' / '.join(tail)} (log: {log})")
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    return ChildRun(seconds, int(rss_file.read_text()) * (1 if sys.platform == "darwin" else 1024))


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
    """Bytes, fetch speed-up, extract and verify against their floors, and per-stage peak RSS."""
    bench.seed()
    fetch_n, ranges_sent = bench.fetch("ranges", bench.connections, capped=True)
    needed = json.loads((bench.root / "ranges" / "fetch" / "fetch.json").read_text())["bytes_needed"]
    fetch_1, _ = bench.fetch("one-connection", 1, capped=True)
    shutil.rmtree(bench.root / "one-connection")
    _, shards_sent = bench.fetch("whole-shards", bench.connections, capped=False, mode="shards")
    shutil.rmtree(bench.root / "whole-shards")
    shutil.rmtree(bench.root / "hf-cache", ignore_errors=True)
    snapshot_sent = bench.snapshot()
    bench.drop_source()
    stages = bench.build_after_fetch("ranges")

    bench.say("baselines: cp and sha256sum of the same bytes")
    blobs = sorted(str(p) for p in (bench.root / "ranges" / "fetch" / "tensors").glob("*.bin"))
    copies = bench.root / "cp-copy"
    copies.mkdir()
    cp_seconds = timed(["cp", *blobs, str(copies)])
    copied = sorted(str(p) for p in copies.iterdir())
    sha_copy_seconds = timed([*sha256_command(), *copied])
    openssl_copy_seconds = timed(["openssl", "dgst", "-sha256", *copied]) if shutil.which("openssl") else None
    shutil.rmtree(copies)
    shards = sorted(str(p) for p in (bench.root / "ranges" / "draft").glob("*.safetensors"))
    sha_draft_seconds = timed([*sha256_command(), *shards])
    openssl_draft_seconds = timed(["openssl", "dgst", "-sha256", *shards]) if shutil.which("openssl") else None
    return {
        "bytes": {
            "source": bench.source_bytes,
            "needed": needed,
            "ranges": ranges_sent,
            "whole_shards": shards_sent,
            "snapshot": snapshot_sent,
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


@dataclass(frozen=True)
class Row:
    measure: str
    value: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None


def rows(main: dict[str, Any], grown: dict[str, Any], connections: int, cap_mb: float) -> list[Row]:
    """The table: each figure beside its baseline from the same run, and the goal it answers."""
    b, s = main["bytes"], main["seconds"]
    gib = 1024**3

    def bytes_row(label: str, sent: int, goal: str, limit: float | None) -> Row:
        ratio = sent / b["needed"]
        return Row(
            label, f"{sent / gib:.2f} GiB", f"needed {b['needed'] / gib:.2f} GiB", ratio, goal, None if limit is None else ratio <= limit
        )

    speedup = s["fetch_1"] / s["fetch_n"]
    extract_floor = s["cp"] + s["sha256sum_copy"]
    table = [
        bytes_row("bytes fetched / needed: ranges", b["ranges"], f"<= {GOALS['ranges']}", GOALS["ranges"]),
        bytes_row("bytes fetched / needed: whole shards (naive)", b["whole_shards"], "-", None),
        bytes_row("bytes fetched / needed: snapshot (naive)", b["snapshot"], "-", None),
        Row(
            f"fetch time: 1 / {connections} connections, {cap_mb:g} MB/s each",
            f"{s['fetch_n']:.1f} s",
            f"1 connection {s['fetch_1']:.1f} s",
            speedup,
            f">= {GOALS['speedup']:g}",
            speedup >= GOALS["speedup"],
        ),
        Row(
            "extract+hash / (cp + sha256sum)",
            f"{s['extract']:.1f} s",
            f"{s['cp']:.1f} + {s['sha256sum_copy']:.1f} s",
            s["extract"] / extract_floor,
            f"<= {GOALS['extract']}",
            s["extract"] / extract_floor <= GOALS["extract"],
        ),
        Row(
            "verify / sha256sum of the draft",
            f"{s['verify']:.1f} s",
            f"{s['sha256sum_draft']:.1f} s",
            s["verify"] / s["sha256sum_draft"],
            f"<= {GOALS['verify']}",
            s["verify"] / s["sha256sum_draft"] <= GOALS["verify"],
        ),
    ]
    if s["openssl_copy"] is not None and s["openssl_draft"] is not None:
        floor = s["cp"] + s["openssl_copy"]
        table.append(
            Row("extract+hash / (cp + openssl sha256)", "", f"{s['cp']:.1f} + {s['openssl_copy']:.1f} s", s["extract"] / floor, "-", None)
        )
        table.append(
            Row("verify / openssl sha256 of the draft", "", f"{s['openssl_draft']:.1f} s", s["verify"] / s["openssl_draft"], "-", None)
        )
    for stage, rss in main["peak_rss"].items():
        grown_rss = grown["peak_rss"][stage]
        growth = grown_rss / rss
        met = rss < GOALS["rss_mib"] * MIB and grown_rss < GOALS["rss_mib"] * MIB and abs(growth - 1) <= GOALS["rss_growth"]
        goal = f"< {GOALS['rss_mib']} MiB; x{GROWTH} within {GOALS['rss_growth']:.0%}"
        table.append(Row(f"peak RSS: {stage}", f"{rss / MIB:.0f} MiB", f"vocab x{GROWTH}: {grown_rss / MIB:.0f} MiB", growth, goal, met))
    return table


def render(table: list[Row]) -> str:
    """A Markdown table, readable in a terminal and pasteable into the README."""
    header = ("measure", "this pipeline", "baseline", "ratio", "goal", "met")
    lines = [header] + [
        (r.measure, r.value, r.baseline, "" if r.ratio is None else f"{r.ratio:.3f}", r.goal, {True: "yes", False: "NO", None: ""}[r.met])
        for r in table
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def machine(workdir: Path) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), cpu)
    usage = shutil.disk_usage(workdir)
    try:
        sha_version = subprocess.run([*sha256_command(), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        sha_version = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "disk": {"filesystem": _filesystem(workdir), "total_gib": round(usage.total / 1024**3), "free_gib": round(usage.free / 1024**3)},
        "sha256sum": sha_version,
    }


def _filesystem(path: Path) -> str:
    """The filesystem type holding `path` (Linux only; 'unknown' elsewhere)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    best = max(
        (m for m in mounts if resolved == m[0] or resolved.startswith(m[0].rstrip("/") + "/")), key=lambda m: len(m[0]), default=None
    )
    return best[1] if best else "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.perf",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "--scale multiplies the vocabulary, MLP width and attention head counts; hidden size, head size and\n"
            "layer counts stay as released. The draft is about 0.25 GB + scale x 5.65 GB (5.9 GB at 1).\n"
            "Disk: about twice the larger (vocab x4) source; it is checked before anything is written.\n"
            "Peak RSS comes from wait4 on each stage's own process.\n\n"
            "Example:\n  python -m pipeline.perf --scale 0.25 --json perf.json"
        ),
    )
    parser.add_argument(
        "--scale", type=float, default=DEFAULT_SCALE, metavar="FRACTION", help="fraction of the released geometry (default: %(default)s)"
    )
    parser.add_argument(
        "--connections", type=int, default=DEFAULT_CONNECTIONS, help="parallel connections to compare with one (default: %(default)s)"
    )
    parser.add_argument(
        "--cap", type=float, default=DEFAULT_CAP_MB, metavar="MB/S", help="bandwidth cap per connection, MB/s (default: %(default)s)"
    )
    parser.add_argument(
        "--json", type=Path, default=Path("perf.json"), metavar="PATH", help="where to write the results (default: %(default)s)"
    )
    parser.add_argument("--workdir", type=Path, metavar="DIR", help="where the temporary data goes (default: the system temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data instead of deleting it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.scale <= 1 or args.connections < 2 or args.cap <= 0:
        print("error: need 0 < --scale <= 1, --connections >= 2 and --cap > 0", file=sys.stderr)
        return 2
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    specs = {"main": scaled_spec(args.scale), "grown": scaled_spec(args.scale, GROWTH)}
    needed = max(disk_needed(spec, whole_shards=name == "main") for name, spec in specs.items())
    free = shutil.disk_usage(parent).free
    if free < needed:
        print(f"error: {parent} has {free / 1e9:.0f} GB free, the run needs about {needed / 1e9:.0f} GB", file=sys.stderr)
        print("hint: lower --scale or point --workdir at a larger disk", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="pipeline-perf-", dir=parent))
    cap = int(args.cap * 1e6)

    def say(message: str) -> None:
        print(f"perf: {message}", file=sys.stderr, flush=True)

    try:
        started = time.perf_counter()
        results = {}
        for name, spec in specs.items():
            say(f"{name} case: draft of {draft_bytes(spec) / 1e9:.2f} GB (vocab {spec.vocab_size})")
            with Bench(root / name, spec, args.connections, cap, say) as bench:
                results[name] = (measure_main if name == "main" else measure_grown)(bench)
            if not args.keep:
                shutil.rmtree(root / name)
        table = rows(results["main"], results["grown"], args.connections, args.cap)
        report = {
            "schema": "mtp-perf/v1",
            "command": "python -m pipeline.perf " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": {"scale": args.scale, "connections": args.connections, "cap_mb_per_s": args.cap, "growth": GROWTH},
            "machine": machine(root),
            "results": results,
            "table": [r.__dict__ for r in table],
            "goals_met": all(r.met for r in table if r.met is not None),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    except PerfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    args.json.write_bytes(dump_json(report))
    print(render(table))
    say(f"results written to {args.json}" + (f"; data kept in {root}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
