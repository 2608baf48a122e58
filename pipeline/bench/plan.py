"""bench-plan: the recipe's `benchmarks.plan` as the exact inputs of `vllm bench sweep serve`.

Writes `serve_params.json`, `bench_params.json`, `run.sh` and `RUN.md`. Every parameter name, file
name and JSON key below was read in vLLM 0.33.0 (paths under `vllm/benchmarks/`):

- `--serve-cmd`, `--bench-cmd`, `--serve-params`, `--bench-params`, `--num-runs`, `-o/--output-dir`,
  `-e/--experiment-name`, `--continue-on-error`, `--resume`, `--warmup-num-prompts`, `--after-bench-cmd`:
  `sweep/serve.py:463-578`; the commands are split with `shlex.split` (`sweep/serve.py:412-416`); the
  server's port is read from `--port` in the serve command (`sweep/server.py:235-252`).
- Params files: a JSON list of objects (`sweep/param_sweep.py:9-17`); `_benchmark_name` names an
  entry and is never passed on (`param_sweep.py:41-48, 67-77, 124-126`). A key becomes `--key-with-dashes`
  and is appended, or replaces the token after that flag when the command already has it
  (`param_sweep.py:80-153`); a dict value would be passed as `json.dumps(v)`, with spaces
  (`param_sweep.py:128-130`), so `speculative_config` is written as compact JSON text instead.
- Results: `<output_dir>/<experiment_name>/` (`sweep/serve.py:591-601`, default name
  `%Y%m%d_%H%M%S`, `:432-435`), one folder per combination named `SERVE--<serve name>-BENCH--<bench name>` (`"-".join(("SERVE-", name, "BENCH-", name))`, `:139-155`)
  joined with `-` (`:139-154`), holding `run=<N>.json` and `summary.json` (`:157-161`); the root
  `summary.csv` (`:383-384`). Each run is `vllm bench serve`'s result with `run_number` and every
  override key added (`:54-64`).
- The sweep adds `--percentile-metrics ttft,tpot,itl,e2el --save-result --result-dir --result-filename`
  itself (`sweep/serve.py:77-86`), so the bench command leaves them out.
- `vllm bench serve`: `--model` (`serve.py:1693`), `--num-warmups` (`:1781`), `--metadata KEY=VALUE ...`
  (`:1808`, `nargs="*"`, each split at its first `=` into a top-level key, `:2315-2323`), `--temperature`
  (`:1907`, not written into the result, hence also a metadata pair), `--max-concurrency` (`:1679`),
  `--num-prompts`, `--dataset-name`, `--dataset-path` (`datasets/datasets.py:1587-1622`).
- `vllm serve`: `--revision` and `--tensor-parallel-size` (`vllm/engine/arg_utils.py:986, 1209`),
  `--speculative-config` parsed with `json.loads` (`arg_utils.py:1864-1866`) into `method`, `model`
  and `num_speculative_tokens` (`vllm/config/speculative.py:413-419`).
- Acceptance: `vllm bench serve` writes `spec_decode_*` into each result when the server's `/metrics`
  has `vllm:spec_decode*` counters before and after the run (`serve.py:210-261, 1131-1170, 1376-1385`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from pipeline.bench.plan_cells import BASELINE, Cell, bench_params, cells, serve_name
from pipeline.bench.plan_metrics import SCRAPER, SCRAPER_SOURCE, scrape_command, serve_params_file
from pipeline.bench.plan_spec import RANDOM, PlanSpec, context_tokens
from pipeline.checkpoint.files import dump_json

SERVE_PARAMS = "serve_params.json"
BENCH_PARAMS = "bench_params.json"
RUN_SH = "run.sh"
RUN_MD = "RUN.md"
# The first `--metadata` pair of the bench command is each bench entry's own: the sweep replaces the
# one token after `--metadata` with the entry's `metadata` value (param_sweep.py:132-146). The
# pairs after it (provenance) are the same for every run.
WORKLOAD_SLOT = "workload=unset"


@dataclass(frozen=True)
class PlanInputs:
    """What the plan needs from the rest of the recipe."""

    draft_name: str
    plan: PlanSpec
    target_repo: str
    target_revision: str
    draft_model: str  # where vLLM loads the draft from: a Hub repo id or a path on the GPU host


@dataclass(frozen=True)
class PlanFiles:
    """The files to write, by name, and what the operator should know."""

    files: dict[str, bytes]
    cells: tuple[Cell, ...]
    serve_names: tuple[str, ...]
    placeholders: tuple[str, ...]

    @property
    def runs(self) -> int:
        return len(self.cells) * len(self.serve_names)


def speculative_config(plan: PlanSpec, draft_model: str, k: int) -> str:
    """The `--speculative-config` value, compact JSON in the order the card shows it."""
    return json.dumps({"method": plan.method, "model": draft_model, "num_speculative_tokens": k}, separators=(",", ":"))


def serve_params(inputs: PlanInputs) -> list[dict[str, object]]:
    """The baseline server, then one per K."""
    entries: list[dict[str, object]] = [{"_benchmark_name": BASELINE}]
    for k in inputs.plan.k:
        entries.append(
            {"_benchmark_name": serve_name(inputs.plan, k), "speculative_config": speculative_config(inputs.plan, inputs.draft_model, k)}
        )
    return entries


def serve_command(inputs: PlanInputs) -> list[str]:
    plan = inputs.plan
    return [
        "vllm", "serve", inputs.target_repo, "--revision", inputs.target_revision, "--tensor-parallel-size", str(plan.tp),
        "--port", str(plan.port),
    ]  # fmt: skip


def metadata(inputs: PlanInputs) -> list[str]:
    """The provenance pairs every run carries, after the workload slot."""
    plan = inputs.plan
    pairs = [f"image={plan.image}"]
    if plan.engine_version:
        pairs.append(f"engine_version={plan.engine_version}")
    if plan.gpu:
        pairs.append(f"gpu={plan.gpu}")
    pairs += [f"gpu_count={plan.gpu_count}", f"tp={plan.tp}", f"temperature={plan.temperature!r}", f"draft_model={inputs.draft_model}"]
    return pairs


def bench_command(inputs: PlanInputs) -> list[str]:
    plan = inputs.plan
    return [
        "vllm", "bench", "serve", "--model", inputs.target_repo, "--port", str(plan.port), "--temperature", repr(plan.temperature),
        # with /metrics snapshots the sweep's warm-up run warms the server, outside every measured window
        "--num-warmups", str(0 if plan.scrapes_metrics else plan.warmups), "--metadata", WORKLOAD_SLOT, *metadata(inputs),
    ]  # fmt: skip


def sweep_command(inputs: PlanInputs) -> list[str]:
    """The sweep's argv, with run.sh's `$plan_dir`, `$output_dir`, `$experiment` (and `$server`) left in."""
    plan = inputs.plan
    per_server = plan.scrapes_metrics
    argv = [
        "vllm", "bench", "sweep", "serve",
        "--serve-cmd", shlex.join(serve_command(inputs)),
        "--bench-cmd", shlex.join(bench_command(inputs)),
        "--serve-params", f"$plan_dir/{serve_params_file('$server') if per_server else SERVE_PARAMS}",
        "--bench-params", f"$plan_dir/{BENCH_PARAMS}",
        "--num-runs", str(plan.runs_per_cell),
    ]  # fmt: skip
    if per_server:
        argv += ["--warmup-num-prompts", str(plan.warmups), "--after-bench-cmd", scrape_command(plan.port)]
    experiment = "$experiment-$server" if per_server else "$experiment"
    return [*argv, "--output-dir", "$output_dir", "--experiment-name", experiment, "--continue-on-error"]


def _shell_word(word: str) -> str:
    """Quote a word for sh; the run.sh variables (`$name`) stay expandable."""
    if "$" in word:
        assert not any(c in word for c in '"\\`'), word  # only our own words hold variables
        return f'"{word}"'
    return shlex.quote(word)


def _option_lines(argv: list[str]) -> list[str]:
    """The command words on the first line, then one option (with its value) per line."""
    first = next(i for i, word in enumerate(argv) if word.startswith("--"))
    lines = [" ".join(argv[:first])]
    for word in argv[first:]:
        if word.startswith("--") or not lines[-1].startswith("--") or " " in lines[-1]:
            lines.append(_shell_word(word))
        else:
            lines[-1] += " " + _shell_word(word)
    return lines


def run_script(inputs: PlanInputs, placeholders: tuple[str, ...]) -> str:
    argv = sweep_command(inputs)
    lines = [
        "#!/bin/sh",
        f"# Written by `python -m pipeline bench-plan --draft {inputs.draft_name}`; RUN.md says what it measures.",
        "# Usage (inside the vLLM image, on the GPU host): sh run.sh [OUTPUT_DIR [EXPERIMENT]]",
        "# Running it again with the same EXPERIMENT resumes: the sweep skips the combinations it finished.",
        "set -eu",
    ]
    listed = "; ".join(placeholders)
    lines += [
        f"placeholders={shlex.quote(listed)}",
        'if [ -n "$placeholders" ]; then',
        '    echo "error: the plan names placeholder prompt files: $placeholders" >&2',
        "    echo 'hint: set benchmarks.plan.workloads[].dataset.path in the recipe to real files, then run bench-plan again' >&2",
        "    exit 2",
        "fi",
    ]
    lines += [
        'plan_dir=$(CDPATH="" cd -- "$(dirname -- "$0")" && pwd)',
        "output_dir=${1:-results}",
        "experiment=${2:-$(date -u +%Y%m%d_%H%M%S)}",
    ]
    if inputs.plan.scrapes_metrics:
        servers = " ".join(serve_name(inputs.plan, k) for k in (None, *inputs.plan.k))
        lines += [
            "# one sweep per server configuration: each run's /metrics deltas stay inside one server's life",
            f"for server in {servers}; do",
            '    if [ -d "$output_dir/$experiment-$server" ]; then set -- --resume; else set --; fi',
            "    " + " \\\n        ".join(_option_lines(argv)) + ' \\\n        "$@"',
            "done",
        ]
    else:
        lines += [
            'if [ -d "$output_dir/$experiment" ]; then set -- --resume; else set --; fi',
            " \\\n    ".join(_option_lines(argv)) + ' \\\n    "$@"',
        ]
    return "\n".join(lines) + "\n"


def run_notes(inputs: PlanInputs, result_cells: tuple[Cell, ...], names: tuple[str, ...], placeholders: tuple[str, ...]) -> str:
    plan = inputs.plan
    rows = "\n".join(
        f"| `{cell.name}` | {cell.workload.id} | {cell.context or 'as the dataset gives'} | {cell.concurrency} | "
        f"{_prompts(cell)} | {cell.workload.num_prompts} |"
        for cell in result_cells
    )
    placeholder_text = (
        "\n".join(f"- `{path}`" for path in placeholders) + "\n\n`run.sh` refuses to start until the recipe names real files.\n"
        if placeholders
        else "None: every prompt source is named.\n"
    )
    return f"""# Benchmark plan for {inputs.draft_name}

Written by `python -m pipeline bench-plan --draft {inputs.draft_name}` from the recipe's
`benchmarks.plan`. Do not edit these files: change the recipe and plan again.

## Run it

On a host with {plan.gpu_count} GPU(s){f" ({plan.gpu})" if plan.gpu else ""}, inside `{plan.image}`:

```sh
docker run --rm --gpus all --ipc=host -v "$PWD:/plan" -w /plan \\
    -v "$HOME/.cache/huggingface:/root/.cache/huggingface" \\
    --entrypoint sh {shlex.quote(plan.image)} run.sh results
```

`run.sh` runs one `vllm bench sweep serve`: {len(names)} server configurations ({", ".join(f"`{n}`" for n in names)})
x {len(result_cells)} cells x {plan.runs_per_cell} runs = {len(names) * len(result_cells) * plan.runs_per_cell} measured runs. Run it again with
the same output folder and experiment name to resume; add `--dry-run` to the sweep to print the commands only.
The results land in `results/<experiment>/SERVE--<server>-BENCH--<cell>/run=<N>.json`, with a `summary.json`
per combination and `summary.csv` at the root. Copy that folder to `artifacts/{inputs.draft_name}/benchmarks/<date>/`,
set `benchmarks.plan.results: <date>` in the recipe, and `bench-import` reads it with the plan as its only
description (no `runs:` section).

## Servers

- `baseline`: `{shlex.join(serve_command(inputs))}`
{chr(10).join(f"- `{serve_name(plan, k)}`: the same with `--speculative-config '{speculative_config(plan, inputs.draft_model, k)}'`" for k in plan.k)}

The draft is loaded from `{inputs.draft_model}`. bench-import compares the baseline with K={plan.k[0]},
the first K of the plan; runs at other K stay in the folder as raw data.

## Cells

| bench name | workload | context | concurrency | prompts | prompts per run |
|---|---|---|---|---|---|
{rows}

Every run carries its labels: `workload` from its entry's `--metadata`, then `{" ".join(metadata(inputs))}`
for every run (the sweep replaces only the first `--metadata` token per entry); K from the server's
`speculative_config`, concurrency from `max_concurrency`, the cell from `_benchmark_name`.

## Acceptance

{_acceptance_notes(plan)}

## Choices no source gives (this project's defaults unless the recipe sets them)

- runs per cell: {plan.runs_per_cell}; warm-up requests per run: {plan.warmups}; temperature: {plan.temperature!r}
- prompts per run and output lengths: as in the table and `bench_params.json`

## Placeholders

{placeholder_text}"""


def _acceptance_notes(plan: PlanSpec) -> str:
    if plan.scrapes_metrics:
        return (
            "The plan asks for `/metrics` snapshots (`acceptance: metrics`), for an engine build whose results carry no\n"
            "`spec_decode_*` keys. `run.sh` runs one sweep per server configuration; after every run, the warm-up\n"
            f"run included, the sweep runs `{SCRAPER}`, which saves the server's `/metrics` beside the run file\n"
            "(`run=N.metrics.prom`, `warmup.metrics.prom`) and resets the caches. bench-import takes run N's acceptance\n"
            "from the counter deltas between the snapshot before it and the one after it. Keep the snapshots with the runs."
        )
    return (
        "Acceptance comes from the `spec_decode_*` keys `vllm bench serve` writes into each run when the server\n"
        "exposes its `vllm:spec_decode*` counters (vLLM 0.33.0, `vllm/benchmarks/serve.py:1376-1385`). An engine\n"
        "build that predates those keys writes none, and bench-import then refuses the speculative runs: set\n"
        "`acceptance: metrics` in the plan, which runs one sweep per server configuration and saves `/metrics`\n"
        "snapshots around every run."
    )


def _prompts(cell: Cell) -> str:
    workload = cell.workload
    if workload.dataset == RANDOM:
        length = context_tokens(cell.context) if cell.context else workload.input_len
        return f"random, {length} in / {workload.output_len} out"
    return f"`{workload.dataset}` `{workload.path_for(cell.context)}`, {workload.output_len} out"


def plan_files(inputs: PlanInputs) -> PlanFiles:
    """Every file of the plan, as bytes; pure, so the same recipe gives the same bytes."""
    plan = inputs.plan
    planned = cells(plan)
    names = tuple(serve_name(plan, k) for k in (None, *plan.k))
    placeholders = plan.placeholders
    files = {
        SERVE_PARAMS: dump_json(serve_params(inputs)),
        BENCH_PARAMS: dump_json(bench_params(plan)),
        RUN_SH: run_script(inputs, placeholders).encode("utf-8"),
        RUN_MD: run_notes(inputs, planned, names, placeholders).encode("utf-8"),
    }
    if plan.scrapes_metrics:
        for entry in serve_params(inputs):
            files[serve_params_file(str(entry["_benchmark_name"]))] = dump_json([entry])
        files[SCRAPER] = SCRAPER_SOURCE.encode("utf-8")
    return PlanFiles(files=files, cells=planned, serve_names=names, placeholders=placeholders)
