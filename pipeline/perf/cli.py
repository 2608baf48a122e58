"""`python -m pipeline.perf`: run both cases, print the table, write the JSON."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline import perf
from pipeline.checkpoint.files import dump_json
from pipeline.perf.cases import GROWTH, Bench, PerfError, disk_needed, draft_bytes, measure_grown, measure_main, scaled_spec
from pipeline.perf.report import machine, render, rows
from pipeline.recipe.loader import MAX_CONNECTIONS

DEFAULT_SCALE = 0.25  # a 1.7 GB draft from a 2.7 GB source: the whole run takes about 5 minutes on 2 cores
DEFAULT_CONNECTIONS = 8  # the recipe's default
# Per connection, in MB/s: low enough that eight capped connections (160 MB/s) stay under what the
# embedded Hub and the client together sustain on two cores (about 280 MB/s), so the comparison
# measures the fetch and not the CPU.
DEFAULT_CAP_MB = 20.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.perf",
        description=(perf.__doc__ or "").split("\n\n")[0],
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
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        metavar="N",
        help="parallel connections to compare with one (default: %(default)s)",
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
    if not 0 < args.scale <= 1 or not 2 <= args.connections <= MAX_CONNECTIONS or args.cap <= 0:
        print(f"error: need 0 < --scale <= 1, 2 <= --connections <= {MAX_CONNECTIONS} and --cap > 0", file=sys.stderr)
        print("hint: python -m pipeline.perf --help lists the defaults", file=sys.stderr)
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
