"""The recipe's `benchmarks.plan:` section: what to measure, as `vllm bench sweep serve` will run it.

Only the published setup's facts belong in a recipe's plan (hardware, TP, K, contexts, concurrencies);
what no source gives (runs per cell, prompts per run, warm-ups, temperature, output length) has a
default of this project's own, named here, and a dataset path no source gives is written as a
`PLACEHOLDER:` so that `run.sh` refuses to start until someone chooses the prompts.

Names checked against vLLM 0.33.0 (paths under `vllm/benchmarks/`):
- dataset names: the `--dataset-name` choices, `datasets/datasets.py:1593-1612`;
- `random` takes no `--dataset-path` (`serve.py:2157-2168`); its lengths are `--random-input-len` /
  `--random-output-len` (`datasets/datasets.py:1887-1898`);
- runs per combination: `vllm bench sweep serve --num-runs` (`sweep/serve.py:541-546`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.bench.inferred import BASELINE_NAME, K_IN_NAME
from pipeline.bench.sections import ListingSection

# Defaults of our own: no source gives them for the published runs.
DEFAULT_RUNS_PER_CELL = 3  # bench-formats.md §7 asks for at least 3; also the sweep's default (sweep/serve.py:544)
DEFAULT_NUM_PROMPTS = 32
DEFAULT_WARMUPS = 2
DEFAULT_TEMPERATURE = 0.0  # greedy: the vLLM draft samples greedily whatever the temperature (bench-formats.md §7)
DEFAULT_OUTPUT_LEN = 256  # vLLM's own default for the custom and spec_bench datasets (datasets/datasets.py:1648-1651, 1668-1671)
DEFAULT_PORT = 8000  # vLLM's own default for `vllm serve` and `vllm bench serve` (sweep/server.py:250, serve.py:1662)
ACCEPTANCE_SOURCES = ("results", "metrics")
DEFAULT_METHOD = "mtp"  # `method` of vLLM's SpeculativeConfig (vllm/config/speculative.py:57, 419)

PLACEHOLDER = "PLACEHOLDER:"
# `--dataset-name` choices of vLLM 0.33.0 (datasets/datasets.py:1596-1610) that read prompts from a
# `--dataset-path`, each with the bench option that sets its output length; `random` has its own
# key in the plan. Each option is also the key the sweep writes into the run (sweep/serve.py:54-64).
OUTPUT_LEN_KEYS = {
    "custom": "custom_output_len",  # datasets/datasets.py:1648
    "spec_bench": "spec_bench_output_len",  # datasets/datasets.py:1668
    "sharegpt": "sharegpt_output_len",  # datasets/datasets.py:1682
    "hf": "hf_output_len",  # datasets/datasets.py:1790
    "random": "random_output_len",  # datasets/datasets.py:1894
}
RANDOM_INPUT_LEN_KEY = "random_input_len"  # datasets/datasets.py:1888
DATASET_NAMES = tuple(name for name in OUTPUT_LEN_KEYS if name != "random")
RANDOM = "random"
WORKLOAD_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
CONTEXT_NAME = re.compile(r"^([1-9][0-9]*)K$")


class _Section(ListingSection):
    def __init__(self, data: object, where: str) -> None:
        super().__init__(data, where, root="benchmarks.plan")


@dataclass(frozen=True)
class PlanWorkload:
    """One workload: where its prompts come from and the cells it is measured in.

    `dataset` is a vLLM dataset name with its `path` (which holds `{context}` when the workload has
    contexts), or `random` with token lengths; a random workload with contexts takes each context's
    size (8K = 8192 tokens) as its input length.
    """

    id: str
    name: str
    dataset: str
    path: str | None
    input_len: int | None
    output_len: int
    contexts: tuple[str, ...]
    concurrencies: tuple[int, ...]
    num_prompts: int

    @property
    def is_random(self) -> bool:
        return self.dataset == RANDOM

    def path_for(self, context: str | None) -> str | None:
        if self.path is None:
            return None
        return self.path.replace("{context}", context) if context is not None else self.path

    @property
    def placeholders(self) -> tuple[str, ...]:
        contexts: tuple[str | None, ...] = self.contexts or (None,)
        paths = (self.path_for(context) for context in contexts)
        return tuple(path for path in paths if path is not None and path.startswith(PLACEHOLDER))


@dataclass(frozen=True)
class PlanSpec:
    """The whole `benchmarks.plan:` section."""

    image: str
    engine_version: str | None
    gpu: str | None
    gpu_count: int
    tp: int
    k: tuple[int, ...]
    method: str
    draft: str | None  # where vLLM loads the draft from; None: the recipe's destination repo
    runs_per_cell: int
    warmups: int
    temperature: float
    workloads: tuple[PlanWorkload, ...]
    results: str | None  # the folder under benchmarks/ that holds the sweep's output, for bench-import
    acceptance: str = "results"  # `results`: the runs' spec_decode_* keys; `metrics`: /metrics snapshots beside each run
    port: int = DEFAULT_PORT

    @property
    def scrapes_metrics(self) -> bool:
        return self.acceptance == "metrics"

    @property
    def matrix_workload(self) -> PlanWorkload | None:
        return next((w for w in self.workloads if w.contexts), None)

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(path for workload in self.workloads for path in workload.placeholders)


def context_tokens(context: str) -> int:
    """`8K` as the input length vLLM is asked for: 8 x 1024 tokens."""
    match = CONTEXT_NAME.match(context)
    assert match is not None  # parse_plan accepts only such names
    return int(match.group(1)) * 1024


def parse_plan(value: Any, path: str) -> PlanSpec:
    """Validate `benchmarks.plan`; errors start with the dotted field path."""
    section = _Section(value, path)
    engine = section.at("engine", _engine, None, required=True)
    gpu = section.at("gpu", _text, None)
    gpu_count = section.at("gpu_count", _positive, None, required=True)
    tp = section.at("tp", _positive, None, required=True)
    k = section.at("k", _k_values, None, required=True)
    method = section.at("method", _text, DEFAULT_METHOD)
    draft = section.at("draft", _text, None)
    runs = section.at("runs_per_cell", _positive, DEFAULT_RUNS_PER_CELL)
    prompts = section.at("num_prompts", _positive, DEFAULT_NUM_PROMPTS)
    warmups = section.at("warmups", _whole, DEFAULT_WARMUPS)
    temperature = section.at("temperature", _temperature, DEFAULT_TEMPERATURE)
    results = section.at("results", _folder, None)
    acceptance = section.at("acceptance", _acceptance, "results")
    port = section.at("port", _positive, DEFAULT_PORT)
    workloads = section.at("workloads", lambda v, p: _workloads(v, p, prompts), None, required=True)
    section.finish()
    if tp > gpu_count:
        raise ValueError(f"{path}.tp: {tp} is more than gpu_count {gpu_count}")
    if acceptance == "metrics" and warmups < 1:
        raise ValueError(f"{path}.warmups: must be at least 1 with acceptance: metrics (the warm-up run's snapshot opens the first run)")
    return PlanSpec(
        image=engine[0], engine_version=engine[1], gpu=gpu, gpu_count=gpu_count, tp=tp, k=k, method=method, draft=draft,
        runs_per_cell=runs, warmups=warmups, temperature=temperature, workloads=workloads, results=results,
        acceptance=acceptance, port=port,
    )  # fmt: skip


def _engine(value: Any, path: str) -> tuple[str, str | None]:
    section = _Section(value, path)
    image = section.at("image", _text, None, required=True)
    version = section.at("version", _text, None)
    section.finish()
    return image, version


def _acceptance(value: Any, path: str) -> str:
    if value not in ACCEPTANCE_SOURCES:
        raise ValueError(f"{path}: must be one of {', '.join(ACCEPTANCE_SOURCES)}, not {value!r}")
    return str(value)


def _text(value: Any, path: str) -> str:
    if isinstance(value, float):
        raise ValueError(f"{path}: must be a string, not the number {value!r}; quote it")
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
        raise ValueError(f"{path}: must be a non-empty string")
    return str(value).strip()


def _whole(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{path}: must be a whole number of at least 0, not {value!r}")
    return value


def _positive(value: Any, path: str) -> int:
    if _whole(value, path) < 1:
        raise ValueError(f"{path}: must be a positive integer, not {value!r}")
    return int(value)


def _temperature(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise ValueError(f"{path}: must be a number from 0 to 2, not {value!r}")
    return float(value)


def _folder(value: Any, path: str) -> str:
    text = _text(value, path)
    if text.startswith("/") or "\\" in text or ".." in text.split("/"):
        raise ValueError(f"{path}: must be a folder inside the benchmarks folder, using '/'")
    return text.strip("/")


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}: must be a non-empty list")
    return value


def _unique(items: list[Any], path: str) -> tuple[Any, ...]:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise ValueError(f"{path}[{i}]: {item!r} is listed twice")
    return tuple(items)


def _k_values(value: Any, path: str) -> tuple[int, ...]:
    return _unique([_positive(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))], path)


def _contexts(value: Any, path: str) -> tuple[str, ...]:
    items = []
    for i, item in enumerate(_list(value, path)):
        if not isinstance(item, str) or not CONTEXT_NAME.match(item):
            raise ValueError(f"{path}[{i}]: {item!r} is not a context size such as 1K, 8K or 128K")
        items.append(item)
    return _unique(items, path)


def _concurrencies(value: Any, path: str) -> tuple[int, ...]:
    return _unique([_positive(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))], path)


def _workload_id(value: Any, path: str) -> str:
    text = _text(value, path)
    if not WORKLOAD_ID.match(text):
        raise ValueError(f"{path}: {text!r} must be lower-case letters, digits and '-'")
    if BASELINE_NAME.search(text) or K_IN_NAME.search(text):
        # the sweep writes the combination name into every run; the importer reads these as mode or K
        raise ValueError(f"{path}: {text!r} reads as a mode or a K (baseline, no-spec, k<N>); choose another id")
    return text


def _workloads(value: Any, path: str, default_prompts: int) -> tuple[PlanWorkload, ...]:
    workloads: list[PlanWorkload] = []
    for i, item in enumerate(_list(value, path)):
        where = f"{path}[{i}]"
        section = _Section(item, where)
        ident = section.at("id", _workload_id, None, required=True)
        name = section.at("name", _text, ident)
        dataset = section.at("dataset", _dataset, None)
        random = section.at("random", _random, None)
        output_len = section.at("output_len", _positive, None)
        contexts = section.at("contexts", _contexts, ())
        concurrencies = section.at("concurrencies", _concurrencies, (1,))
        prompts = section.at("num_prompts", _positive, default_prompts)
        section.finish()
        if (dataset is None) == (random is None):
            raise ValueError(f"{where}: give either dataset (a vLLM dataset name and path) or random (token lengths)")
        if any(w.id == ident for w in workloads):
            raise ValueError(f"{where}.id: {ident!r} is listed twice")
        if contexts and any(w.contexts for w in workloads):
            raise ValueError(f"{where}.contexts: only one workload can have contexts (the card has one context x concurrency matrix)")
        if not contexts and concurrencies != (1,):
            raise ValueError(
                f"{where}.concurrencies: a workload without contexts is a single-stream row; give it contexts to sweep concurrency"
            )
        input_len = None
        if random is not None:
            input_len, random_output = random
            if output_len is not None and random_output is not None:
                raise ValueError(f"{where}.output_len: random.output_len is given too; keep one")
            output_len = output_len or random_output
            if (input_len is None) == (not contexts):
                raise ValueError(f"{where}.random.input_len: give it without contexts, leave it out with contexts (8K means 8192 tokens)")
            name_, path_ = RANDOM, None
        else:
            name_, path_ = dataset
            placeholder = path_.startswith(PLACEHOLDER)
            if contexts and "{context}" not in path_ and not placeholder:
                raise ValueError(f"{where}.dataset.path: must hold {{context}}, one prompt file per context")
        workload = PlanWorkload(
            id=ident, name=name, dataset=name_, path=path_, input_len=input_len, output_len=output_len or DEFAULT_OUTPUT_LEN,
            contexts=contexts, concurrencies=concurrencies, num_prompts=prompts,
        )  # fmt: skip
        workloads.append(workload)
    return tuple(workloads)


def _dataset(value: Any, path: str) -> tuple[str, str]:
    section = _Section(value, path)
    name = section.at("name", _text, None, required=True)
    location = section.at("path", _text, None, required=True)
    section.finish()
    if name not in DATASET_NAMES:
        hint = "; use random: for random prompts" if name.startswith(RANDOM) else ""
        raise ValueError(f"{path}.name: {name!r} is not a vLLM dataset read from a path ({', '.join(DATASET_NAMES)}){hint}")
    return name, location


def _random(value: Any, path: str) -> tuple[int | None, int | None]:
    section = _Section(value, path)
    input_len = section.at("input_len", _positive, None)
    output_len = section.at("output_len", _positive, None)
    section.finish()
    return input_len, output_len
