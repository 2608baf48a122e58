"""The benchmark's table: each figure beside its baseline and the goal it answers, and the machine."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.perf.cases import GROWTH, sha256_command

GOALS = {
    "ranges": 1.02,
    "written": 1.05,
    "workdir_peak": 1.10,
    "speedup": 5.0,
    "fetch_extract": 1.2,
    "extract": 1.5,
    "verify": 1.0,
    "rss_mib": 512,
    "rss_growth": 0.10,
}
MIB = 1024 * 1024


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

    def time_row(label: str, seconds: float, baseline: str, baseline_seconds: float, limit: float | None) -> Row:
        ratio = seconds / baseline_seconds
        return Row(
            label, f"{seconds:.1f} s", baseline, ratio, "-" if limit is None else f"<= {limit}", None if limit is None else ratio <= limit
        )

    def draft_row(label: str, count: int | None, limit: float) -> Row:
        if count is None:  # no per-process I/O counts on this platform
            return Row(label, "not measured", f"draft {b['draft'] / gib:.2f} GiB", None, f"<= {limit}", None)
        ratio = count / b["draft"]
        return Row(label, f"{count / gib:.2f} GiB", f"draft {b['draft'] / gib:.2f} GiB", ratio, f"<= {limit}", ratio <= limit)

    speedup = s["fetch_1"] / s["fetch_n"]
    transfer = b["needed"] / (connections * cap_mb * 1e6)  # the floor: needed bytes at the aggregate bandwidth
    table = [
        bytes_row("bytes fetched / needed: ranges", b["ranges"], f"<= {GOALS['ranges']}", GOALS["ranges"]),
        bytes_row("bytes fetched / needed: whole shards (naive)", b["whole_shards"], "-", None),
        bytes_row("bytes fetched / needed: snapshot (naive)", b["snapshot"], "-", None),
        draft_row("bytes written by the build / draft", b["written_by_build"], GOALS["written"]),
        draft_row("peak workdir allocation / draft", b["workdir_peak"], GOALS["workdir_peak"]),
        Row(
            f"fetch time: 1 / {connections} connections, {cap_mb:g} MB/s each",
            f"{s['fetch_n']:.1f} s",
            f"1 connection {s['fetch_1']:.1f} s",
            speedup,
            f">= {GOALS['speedup']:g}",
            speedup >= GOALS["speedup"],
        ),
        time_row(
            f"fetch + extract / needed bytes at {connections} x {cap_mb:g} MB/s",
            s["fetch_n"] + s["extract"],
            f"{transfer:.1f} s",
            transfer,
            GOALS["fetch_extract"],
        ),
        time_row(
            "extract (seal and hash) / (cp + sha256sum)",
            s["extract"],
            f"{s['cp']:.1f} + {s['sha256sum_copy']:.1f} s",
            s["cp"] + s["sha256sum_copy"],
            GOALS["extract"],
        ),
        time_row("verify / sha256sum of the draft", s["verify"], f"{s['sha256sum_draft']:.1f} s", s["sha256sum_draft"], GOALS["verify"]),
    ]
    if s["openssl_copy"] is not None and s["openssl_draft"] is not None:
        # coreutils may hash without the CPU's SHA instructions; OpenSSL (as hashlib) uses them.
        openssl_copy = f"{s['cp']:.1f} + {s['openssl_copy']:.1f} s"
        table.append(
            time_row("extract (seal and hash) / (cp + openssl sha256)", s["extract"], openssl_copy, s["cp"] + s["openssl_copy"], None)
        )
        table.append(time_row("verify / openssl sha256 of the draft", s["verify"], f"{s['openssl_draft']:.1f} s", s["openssl_draft"], None))
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
