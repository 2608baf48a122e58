"""Test code: a fake `vllm` executable for `vllm bench sweep serve`, writing vLLM 0.33.0's result layout.

No server runs and nothing is measured: every timing and count below is synthetic, computed from the
run's own labels so that a test can predict each figure. What is real is the layout and the keys, read
in vLLM 0.33.0 (paths under `vllm/benchmarks/`):

- options: `--serve-cmd`, `--bench-cmd`, `--serve-params`, `--bench-params`, `-o/--output-dir`,
  `-e/--experiment-name`, `--num-runs`, `--continue-on-error`, `--resume`, `--dry-run` (`sweep/serve.py:463-578`);
- params files: a list of objects, or an object keyed by name that becomes `_benchmark_name`
  (`sweep/param_sweep.py:9-31`); overrides applied to a command by replacing the token after an
  existing flag or appending `--key-with-dashes value` (`param_sweep.py:80-153`);
- the experiment folder `<output_dir>/<experiment_name>`, refused if it exists without `--resume`
  (`sweep/serve.py:591-601`); each combination folder `"-".join(("SERVE-", serve name, "BENCH-", bench name))`
  through `sanitize_filename` (`sweep/serve.py:139-154`, `sweep/utils.py:1-4`);
- `run=<N>.json` per run, indent 4, holding the bench result plus `run_number` and every serve, then
  bench, override key (`sweep/serve.py:54-64, 121-131`); an existing run file is read, not rerun
  (`:96-107`); `summary.json` per combination, a list of its runs, indent 4 (`:157-161, 298-299`);
  `summary.csv` at the root, written by pandas with its index column (`:383-384`);
- `--warmup-num-prompts N`: one unmeasured run per combination saved as `warmup.json`, `run_number` -1
  (`sweep/serve.py:274-280`); `--after-bench-cmd`: run after every run, the warm-up included, instead
  of the cache reset (`sweep/serve.py:119`, `sweep/server.py:228-233`); one server per serve
  combination (`sweep/serve.py:321-332`), here a `/metrics` endpoint on the serve command's `--port`
  whose spec-decode counters (names as in shared/facts/bench-formats.md §4) count from 0 each time;
- the bench result's keys: `date`, `endpoint_type`, `backend`, `label`, `model_id`, `tokenizer_id`,
  `num_prompts`, then each `--metadata` pair split at its first `=`, then `request_rate` ("inf"),
  `burstiness`, `max_concurrency` (`serve.py:2302-2329`), then the benchmark's figures
  (`serve.py:1317-1390`), `spec_decode_*` only when the server drafted (`serve.py:1376-1385`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SYNTHETIC_START = datetime(2026, 12, 1, 12, 0, 0)  # a made-up clock: runs are 1 minute apart
ACCEPTED_FRACTION = 0.8  # synthetic: every drafted position is accepted 80 % of the time
DRAFTS_PER_RUN = 1000  # synthetic
SPEEDUP = 0.25  # synthetic: a drafting server's TPOT is the baseline's / 1.25
NATURAL_INPUT_LEN = 600  # synthetic input length of a dataset cell with no context
# Set to 0 to play an engine build older than the spec_decode_* result keys (vLLM PR #31739).
RESULT_SPEC_KEYS_ENV = "FAKE_VLLM_RESULT_SPEC_KEYS"


class FakeServer:
    """A server's `/metrics` and cache-reset endpoints; the counters grow with every drafted run."""

    def __init__(self, port: int, k: int | None) -> None:
        self.k = k
        self.counts = {"drafts": 0, "draft_tokens": 0, "accepted": 0}
        self.per_position = [0] * (k or 0)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = server.metrics().encode() if self.path == "/metrics" else b""
                self.send_response(200 if self.path == "/metrics" else 404)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                ok = self.path in ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache")
                self.send_response(200 if ok else 404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def drafted(self, draft_tokens: int, accepted: int, drafts: int, accepted_per_position: list[int]) -> None:
        self.counts["drafts"] += drafts
        self.counts["draft_tokens"] += draft_tokens
        self.counts["accepted"] += accepted
        self.per_position = [a + b for a, b in zip(self.per_position, accepted_per_position, strict=True)]

    def metrics(self) -> str:
        lines = ["# a process counter every vLLM server exposes", "process_cpu_seconds_total 1.0"]
        if self.k is not None:
            labels = 'engine="0",model_name="m"'
            lines += [
                f"vllm:spec_decode_num_drafts_total{{{labels}}} {self.counts['drafts']}",
                f"vllm:spec_decode_num_draft_tokens_total{{{labels}}} {self.counts['draft_tokens']}",
                f"vllm:spec_decode_num_accepted_tokens_total{{{labels}}} {self.counts['accepted']}",
            ]
            lines += [
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{i}"}} {count}'
                for i, count in enumerate(self.per_position)
            ]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def baseline_tpot_ms(workload: str, input_len: int, concurrency: int, run_number: int) -> float:
    """A synthetic median TPOT that differs by cell and run, within 1 % across runs."""
    return round(8.0 + 0.5 * math.log2(max(input_len, 1) / 1024 + 1) + 0.25 * concurrency + 0.01 * len(workload) + 0.02 * run_number, 6)


def _apply(cmd: list[str], overrides: dict[str, Any]) -> list[str]:
    """`ParameterSweepItem.apply_to_cmd` for the value kinds a plan uses (param_sweep.py:120-153)."""
    cmd = list(cmd)
    for key, value in overrides.items():
        if key == "_benchmark_name":
            continue
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        flags = ["--" + key.replace("_", "-"), "--" + key, "--" + key.replace("-", "_")]
        found = next((flag for flag in flags if flag in cmd), None)
        if found is None:
            cmd += ["--" + key.replace("_", "-"), text]
        else:
            cmd[cmd.index(found) + 1] = text
    return cmd


def _bench_args(argv: list[str]) -> argparse.Namespace:
    assert argv[:3] == ["vllm", "bench", "serve"], argv
    parser = argparse.ArgumentParser()
    for flag in ("--model", "--dataset-name", "--dataset-path", "--percentile-metrics", "--result-dir", "--result-filename"):
        parser.add_argument(flag)
    for flag in ("--max-concurrency", "--num-prompts", "--random-input-len", "--num-warmups", "--port"):
        parser.add_argument(flag, type=int)
    for flag in ("--random-output-len", "--custom-output-len", "--spec-bench-output-len", "--sharegpt-output-len", "--hf-output-len"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--metadata", nargs="*")
    parser.add_argument("--save-result", action="store_true")
    return parser.parse_args(argv[3:])


def _serve_k(argv: list[str]) -> int | None:
    assert argv[:2] == ["vllm", "serve"], argv
    if "--speculative-config" not in argv:
        return None
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    return int(config["num_speculative_tokens"])


def bench_result(
    serve_argv: list[str], bench_argv: list[str], run_number: int, clock: datetime, server: FakeServer | None = None
) -> dict[str, Any]:
    """What `vllm bench serve --save-result` would write for one run, with synthetic figures."""
    args = _bench_args(bench_argv)
    k = _serve_k(serve_argv)
    result: dict[str, Any] = {
        "date": clock.strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai",
        "backend": "openai",
        "label": None,
        "model_id": args.model,
        "tokenizer_id": args.model,
        "num_prompts": args.num_prompts,
    }
    for item in args.metadata or []:
        key, value = item.split("=", 1)
        result[key.strip()] = value.strip()
    result |= {"request_rate": "inf", "burstiness": 1.0, "max_concurrency": args.max_concurrency}
    output_len = next(
        value
        for value in (
            args.random_output_len,
            args.custom_output_len,
            args.spec_bench_output_len,
            args.sharegpt_output_len,
            args.hf_output_len,
        )
        if value
    )
    if args.dataset_name == "random":
        input_len = args.random_input_len
    else:
        # a dataset path's last number stands for its context in these tests ("long-{context}.jsonl")
        context = Path(args.dataset_path).stem.rsplit("-", 1)[-1]
        input_len = int(context[:-1]) * 1024 if context[:-1].isdigit() and context.endswith("K") else NATURAL_INPUT_LEN
    workload = result.get("workload", "")
    tpot = baseline_tpot_ms(str(workload), input_len, args.max_concurrency, run_number)
    if k is not None:
        tpot = round(tpot / (1 + SPEEDUP), 6)
    prompts = args.num_prompts
    duration = round(prompts * output_len * tpot / 1000 / args.max_concurrency, 6)
    result |= {
        "duration": duration,
        "completed": prompts,
        "failed": 0,
        "total_input_tokens": prompts * input_len,
        "total_output_tokens": prompts * output_len,
        "request_throughput": prompts / duration,
        "output_throughput": prompts * output_len / duration,
        "mean_ttft_ms": 50.0,
        "median_ttft_ms": 50.0,
        "mean_tpot_ms": tpot,
        "median_tpot_ms": tpot,
        "p99_tpot_ms": tpot,
        "mean_itl_ms": tpot,
        "median_itl_ms": tpot,
    }
    if k is not None:
        draft_tokens = DRAFTS_PER_RUN * k
        accepted = round(draft_tokens * ACCEPTED_FRACTION)
        if server is not None:
            server.drafted(draft_tokens, accepted, DRAFTS_PER_RUN, [round(DRAFTS_PER_RUN * ACCEPTED_FRACTION)] * k)
    if k is not None and os.environ.get(RESULT_SPEC_KEYS_ENV, "1") == "1":
        result |= {
            "spec_decode_acceptance_rate": accepted / draft_tokens * 100,
            "spec_decode_acceptance_length": 1 + accepted / DRAFTS_PER_RUN,
            "spec_decode_num_drafts": DRAFTS_PER_RUN,
            "spec_decode_draft_tokens": draft_tokens,
            "spec_decode_accepted_tokens": accepted,
            "spec_decode_per_position_acceptance_rates": [ACCEPTED_FRACTION] * k,
        }
    return result


def _read_params(path: str | None) -> list[dict[str, Any]]:
    if path is None:
        return [{}]
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        return [{"_benchmark_name": name, **params} for name, params in data.items()]
    return list(data)


def _name(item: dict[str, Any]) -> str:
    if "_benchmark_name" in item:
        return str(item["_benchmark_name"])
    return "-".join(f"{k}={v}" for k, v in item.items())


def _csv_cell(value: Any) -> str:
    """pandas' `to_csv` text: None empty, numbers and containers by repr/str."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def summary_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", *columns])
    for index, row in enumerate(rows):
        writer.writerow([index, *(_csv_cell(row.get(column)) for column in columns)])
    return buffer.getvalue()


def sweep(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vllm bench sweep serve")
    parser.add_argument("--serve-cmd", required=True)
    parser.add_argument("--bench-cmd", required=True)
    parser.add_argument("--serve-params")
    parser.add_argument("--bench-params")
    parser.add_argument("-o", "--output-dir", default="results")
    parser.add_argument("-e", "--experiment-name")
    parser.add_argument("--num-runs", type=int, default=3)
    parser.add_argument("--continue-on-error", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--warmup-num-prompts", type=int, default=0)
    parser.add_argument("--after-bench-cmd")
    args = parser.parse_args(argv)
    experiment = Path(args.output_dir) / (args.experiment_name or datetime.now().strftime("%Y%m%d_%H%M%S"))
    if args.resume and not experiment.exists():
        raise ValueError(f"Cannot resume from non-existent {experiment=}")
    if not args.resume and experiment.exists():
        raise ValueError(f"Cannot overwrite existing {experiment=}")
    rows: list[dict[str, Any]] = []
    clock = SYNTHETIC_START
    for serve in _read_params(args.serve_params):
        serve_argv = _apply(shlex.split(args.serve_cmd), serve)
        port = int(serve_argv[serve_argv.index("--port") + 1]) if "--port" in serve_argv else 8000
        # only an --after-bench-cmd talks to the server here; without one no port is taken
        server = FakeServer(port, _serve_k(serve_argv)) if args.after_bench_cmd and not args.dry_run else None
        try:
            for bench in _read_params(args.bench_params):
                folder_name = "-".join(("SERVE-", _name(serve), "BENCH-", _name(bench)))
                folder = experiment / folder_name.replace("/", "_").replace("..", "__").strip("'").strip('"')
                planned = (
                    [(-1, folder / "warmup.json", {**bench, "num_prompts": args.warmup_num_prompts})] if args.warmup_num_prompts else []
                )
                planned += [(n, folder / f"run={n}.json", bench) for n in range(args.num_runs)]
                runs = []
                for run_number, path, overrides in planned:
                    clock += timedelta(minutes=1)
                    if path.exists():  # found existing results: read, not rerun (sweep/serve.py:96-107)
                        data = json.loads(path.read_text()) | {"run_number": run_number, **serve, **overrides}
                    elif args.dry_run:
                        continue
                    else:
                        bench_argv = _apply(shlex.split(args.bench_cmd), overrides)
                        data = bench_result(serve_argv, bench_argv, run_number, clock, server)
                        data["run_number"] = run_number
                        data.update(serve)
                        data.update(overrides)
                        folder.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(data, indent=4))
                        if args.after_bench_cmd:
                            subprocess.run(shlex.split(args.after_bench_cmd), check=True)
                    if run_number >= 0:
                        runs.append(data)
                if not args.dry_run:
                    (folder / "summary.json").write_text(json.dumps(runs, indent=4))
                rows += runs
        finally:
            if server is not None:
                server.stop()
    if not args.dry_run:
        (experiment / "summary.csv").write_text(summary_csv(rows))
    return 0


def main(argv: list[str]) -> int:
    if argv[:3] != ["bench", "sweep", "serve"]:
        print(f"fake vllm: only `vllm bench sweep serve` is implemented, not {argv[:3]}", file=sys.stderr)
        return 2
    return sweep(argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
