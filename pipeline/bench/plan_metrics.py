"""Acceptance from `/metrics` for engine builds whose bench results carry no `spec_decode_*` keys.

`vllm bench sweep serve --after-bench-cmd CMD` runs CMD after every run, the warm-up run included,
instead of resetting the server's caches (vLLM 0.33.0 `vllm/benchmarks/sweep/serve.py:119, 274-280`,
`sweep/server.py:228-233`). bench-plan's CMD is `scrape_metrics.py`: it saves the server's `/metrics`
beside the run file just written (`run=N.metrics.prom`, `warmup.metrics.prom`) and then resets the
caches as the sweep would (`sweep/server.py:171-175, 277-287`). Run N's acceptance is the counter
delta from the snapshot after run N-1 (after the warm-up for run 0) to the one after run N; a server
lives for one serve combination (`sweep/serve.py:321-332`), so one sweep per server configuration
keeps every delta inside one server's life.
"""

from __future__ import annotations

from pipeline.bench.plan_cells import METRICS_SUFFIX

SCRAPER = "scrape_metrics.py"

SCRAPER_SOURCE = f'''"""Written by bench-plan; `vllm bench sweep serve --after-bench-cmd` runs it after every run.

Usage: python3 scrape_metrics.py EXPERIMENT_DIR PORT
Saves the server's /metrics beside the run file the sweep wrote last (<run>{METRICS_SUFFIX}), then
resets the server's caches, which the sweep does itself when no --after-bench-cmd is given.
"""

import glob
import os
import sys
import urllib.request

experiment, port = sys.argv[1], sys.argv[2]
base = "http://localhost:" + port
written = glob.glob(os.path.join(glob.escape(experiment), "*", "run=*.json"))
written += glob.glob(os.path.join(glob.escape(experiment), "*", "warmup.json"))
written = [path for path in written if not path.endswith(".failure.json")]
if written:
    latest = max(written, key=os.path.getmtime)
    target = latest[: -len(".json")] + "{METRICS_SUFFIX}"
    if not os.path.exists(target):  # a failed run wrote no file: keep the last run's snapshot as it was
        with urllib.request.urlopen(base + "/metrics", timeout=60) as response:
            text = response.read()
        with open(target + ".tmp", "wb") as handle:
            handle.write(text)
        os.replace(target + ".tmp", target)
for endpoint in ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"):
    urllib.request.urlopen(urllib.request.Request(base + endpoint, method="POST"), timeout=60).close()
'''


def serve_params_file(server: str) -> str:
    """The one-server params file of a metrics plan: one sweep per server configuration."""
    return f"serve_params-{server}.json"


def scrape_command(port: int) -> str:
    """The `--after-bench-cmd` value; run.sh expands its variables, the sweep splits it with shlex."""
    return f"python3 '$plan_dir/{SCRAPER}' '$output_dir/$experiment-$server' {port}"
