"""Readers for benchmark result files; each record's format is told by the keys it holds.

Accepted (see shared/facts/bench-formats.md §2, §3, §5):
- `vllm bench serve --save-result`: one JSON object, or one per line with `--append-result`;
- the legacy `benchmarks/benchmark_serving.py` layout (no `endpoint_type`, `"request_goodput:"`);
- `vllm bench sweep serve`: `run=N.json`, a combination's `summary.json` (a list of runs) and the
  root `summary.csv` (one row per run, written by pandas);
- SGLang `bench_serving` JSONL, one line per run, bare `Infinity` included.

Upstream versions drift, so no declared version is trusted. Values a figure depends on must be
present and finite; anything else in a record is ignored.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.bench.inferred import k_in_benchmark_name, mode_hint
from pipeline.bench.records import Acceptance, Measured, Origin, RawRun
from pipeline.errors import InputError

RATE_TOLERANCE_PCT = 0.01  # vLLM writes accepted / draft * 100 at full precision
LENGTH_TOLERANCE = 1e-4
VLLM_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})$")

# Which record keys can carry each label, first match wins. Metadata keys are the label names
# themselves (`--metadata workload=code`); the rest are keys the tools or the sweep write.
LABEL_KEYS: dict[str, tuple[str, ...]] = {
    "workload": ("workload",),
    "mode": ("mode",),
    "k": ("k", "num_speculative_tokens", "speculative_config.num_speculative_tokens"),
    "context": ("context",),
    "concurrency": ("max_concurrency",),
    "input_len": ("input_len", "random_input_len", "sonnet_input_len"),
    "output_len": (
        "output_len", "random_output_len", "spec_bench_output_len", "custom_output_len",
        "sharegpt_output_len", "sonnet_output_len", "hf_output_len",
    ),
    "target_model": ("model_id",),
    "engine_version": ("engine_version", "vllm_version"),
    "image": ("image", "image_digest"),
    "gpu": ("gpu", "gpu_name", "hardware"),
    "gpu_count": ("gpu_count",),
    "tp": ("tp", "tensor_parallel_size"),
    "temperature": ("temperature",),
    "dataset": ("dataset", "dataset_path", "dataset_name"),
}  # fmt: skip

# SGLang writes its run arguments whatever the dataset, so `random_*` only mean something for a
# random dataset; the server dump (`server_info`, newer releases) carries model, version and TP.
SGLANG_LABEL_KEYS: dict[str, tuple[str, ...]] = {
    **LABEL_KEYS,
    "input_len": ("input_len",),
    "output_len": ("output_len",),
    "target_model": ("model_id", "server_info.model_path"),
    "engine_version": ("engine_version", "server_info.version"),
    "tp": ("tp", "server_info.tp_size"),
    "dataset": ("dataset", "dataset_name"),
}
SGLANG_RANDOM_LENGTH_KEYS = {"input_len": ("random_input_len",), "output_len": ("random_output_len",)}

VLLM_MARKERS = ("model_id", "tokenizer_id", "endpoint_type")
SGLANG_MARKERS = ("accept_length", "server_info", "total_output_tokens_retokenized", "total_output_retokenized")


Records = list[tuple[str, Any]]  # (position inside the file, record) pairs


def parse_records(path: Path, data: bytes) -> Records:
    """Every record of one result file, before any check: JSON, JSON lines, or a sweep summary.csv."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    return _csv_records(text, path) if path.suffix.lower() == ".csv" else _json_records(text, path)


def read_result_file(
    path: Path, file: str, data: bytes, match: tuple[tuple[str, object], ...] = (), records: Records | None = None
) -> list[RawRun]:
    """The measured runs in one file whose keys hold the `match` values (`records`: already parsed).

    Warm-up runs of a sweep (`run_number` -1) are not measured runs and are left out.
    """
    if records is None:
        records = parse_records(path, data)
    runs = []
    for index, (part, record) in enumerate(records):
        if match and not (isinstance(record, dict) and all(_equal(_lookup(record, key), value) for key, value in match)):
            continue
        run = _read_record(record, Origin(path, file, part, index))
        if run is not None:
            runs.append(run)
    return runs


def _json_records(text: str, path: Path) -> list[tuple[str, Any]]:
    """One object, a list of them (sweep summary.json), or objects one after another (JSONL)."""
    decoder = json.JSONDecoder()  # accepts SGLang's bare Infinity/NaN; NaN is refused per field
    found: list[tuple[int, Any]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg})",
                hint="expected a bench result: one JSON object, a list of them, or one object per line",
            ) from None
        found.append((text.count("\n", 0, pos) + 1, value))
        pos = end
    if not found:
        raise InputError(f"{path}: empty file")
    if len(found) == 1:
        value = found[0][1]
        if isinstance(value, list):
            return [(f"[{i}]", item) for i, item in enumerate(value)]
        return [("", value)]
    return [(f":{line}", value) for line, value in found]


def _csv_records(text: str, path: Path) -> list[tuple[str, Any]]:
    """Rows of a sweep summary.csv; pandas writes an unnamed index column and Python reprs."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InputError(f"{path}: empty file")
    rows = []
    for row in reader:
        record = {key: _csv_cell(value) for key, value in row.items() if key and value not in ("", None)}
        rows.append((f":{reader.line_num}", record))
    return rows


def _csv_cell(text: str) -> object:
    for convert in (int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        # pandas writes numbers with repr; text that does not round-trip ("0.10", "02") was a string
        return value if repr(value) == text else text
    if text in ("True", "False"):
        return text == "True"
    if text[:1] in "[{(":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def _read_record(record: object, origin: Origin) -> RawRun | None:
    if not isinstance(record, dict):
        raise InputError(f"{origin}: a result must be a JSON object, not {type(record).__name__}")
    if "error_type" in record and ("bench_overrides" in record or "serve_overrides" in record):
        raise InputError(
            f"{origin}: error_type: a failed sweep run ({record['error_type']}), not a result",
            hint="match only run=N.json files in the recipe's runs[].files",
        )
    if "avg_latency" in record and "median_tpot_ms" not in record:
        raise InputError(
            f"{origin}: avg_latency: a `vllm bench latency` result has no per-token timing and no usable acceptance",
            hint="benchmark with `vllm bench serve --save-result`",
        )
    if "median_tpot_ms" not in record:
        raise InputError(
            f"{origin}: median_tpot_ms: missing",
            hint="decode speed is 1000 / median TPOT; keep tpot in --percentile-metrics",
        )
    fields = _Fields(record, origin)
    run_number = fields.integer("run_number", minimum=-1)
    if run_number is not None and run_number < 0:
        return None
    if any(key in record for key in VLLM_MARKERS):
        engine, acceptance, keys = "vllm", _vllm_acceptance(fields), LABEL_KEYS
        if run_number is not None:
            tool = "vllm bench sweep serve"
        elif "endpoint_type" in record or "failed" in record:
            tool = "vllm bench serve"
        else:
            tool = "vllm benchmark_serving.py (legacy)"
    elif any(key in record for key in SGLANG_MARKERS):
        engine, tool, acceptance = "sglang", "sglang bench_serving", _sglang_acceptance(fields)
        keys = dict(SGLANG_LABEL_KEYS)
        dataset = str(record.get("dataset_name", ""))
        if dataset.startswith("random"):
            keys.update(SGLANG_RANDOM_LENGTH_KEYS)
        elif dataset == "sharegpt":
            keys["output_len"] = ("output_len", "sharegpt_output_len")
    else:
        raise InputError(f"{origin}: model_id: missing, and no SGLang keys either; cannot tell which tool wrote this record")
    file_labels = []
    for label, candidates in keys.items():
        for key in candidates:
            value = _lookup(record, key)
            if value is not None:
                file_labels.append((label, key, value))
                break
    if not any(label == "k" for label, _, _ in file_labels):
        named = k_in_benchmark_name(record)
        if named is not None:
            file_labels.append(named)
    dataset_name = record.get("dataset_name")
    return RawRun(
        origin=origin,
        tool=tool,
        engine=engine,
        measured=_measured(fields, run_number),
        acceptance=acceptance,
        file_labels=tuple(file_labels),
        synthetic=isinstance(dataset_name, str) and dataset_name.startswith("random"),
        mode_hint=mode_hint(record, acceptance, run_number),
    )


def _lookup(record: Mapping[str, Any], key: str) -> object:
    """A key, or a dotted path into nested dicts (the sweep writes both spellings)."""
    if key in record:
        return record[key]
    head, _, rest = key.partition(".")
    if not rest or head not in record:
        return None
    inner = record[head]
    if isinstance(inner, str) and inner.startswith("{"):
        try:
            inner = json.loads(inner)
        except ValueError:
            return None
    return _lookup(inner, rest) if isinstance(inner, Mapping) else None


def _equal(found: object, expected: object) -> bool:
    """Recipe values against record values: numbers by value, anything else by its text."""
    if found is None or expected is None:
        return found is expected
    numbers = (int, float)
    if isinstance(found, numbers) and isinstance(expected, numbers) and not isinstance(found, bool):
        return float(found) == float(expected)
    return str(found) == str(expected)


class _Fields:
    """Typed reads from one record, each failure naming the record and the key."""

    def __init__(self, record: Mapping[str, Any], origin: Origin) -> None:
        self.record = record
        self.origin = origin

    def _first(self, keys: tuple[str, ...]) -> tuple[str, object]:
        for key in keys:
            if self.record.get(key) is not None:
                return key, self.record[key]
        return keys[0], None

    def number(self, *keys: str, required: bool = False, positive: bool = False) -> float | None:
        key, value = self._first(keys)
        if value is None:
            if required:
                raise InputError(f"{self.origin}: {key}: missing")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{self.origin}: {key}: must be a number, not {value!r}")
        if not math.isfinite(value):
            raise InputError(f"{self.origin}: {key}: {value} is not a finite number")
        if positive and value <= 0:
            raise InputError(f"{self.origin}: {key}: must be above 0, not {value}")
        return float(value)

    def need_number(self, key: str, *, positive: bool = False) -> float:
        value = self.number(key, required=True, positive=positive)
        assert value is not None  # required=True raised otherwise
        return value

    def need_integer(self, key: str) -> int:
        value = self.integer(key, required=True)
        assert value is not None  # required=True raised otherwise
        return value

    def integer(self, *keys: str, required: bool = False, minimum: int = 0) -> int | None:
        key, _ = self._first(keys)
        value = self.number(*keys, required=required)
        if value is None:
            return None
        if value != int(value) or value < minimum:
            raise InputError(f"{self.origin}: {key}: must be a whole number of at least {minimum}, not {value}")
        return int(value)

    def fractions(self, key: str) -> tuple[float, ...]:
        value = self.record.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise InputError(f"{self.origin}: {key}: must be a list of fractions")
        for item in value:
            ok = isinstance(item, (int, float)) and not isinstance(item, bool) and 0 <= item <= 1
            if not ok:  # also catches NaN, which fails every comparison
                raise InputError(f"{self.origin}: {key}: {item!r} is not a fraction between 0 and 1")
        return tuple(float(item) for item in value)


def _measured(fields: _Fields, run_number: int | None) -> Measured:
    completed = fields.need_integer("completed")
    if completed == 0:
        raise InputError(f"{fields.origin}: completed: no request completed")
    return Measured(
        median_tpot_ms=fields.need_number("median_tpot_ms", positive=True),
        mean_tpot_ms=fields.number("mean_tpot_ms"),
        median_ttft_ms=fields.number("median_ttft_ms"),
        output_throughput=fields.number("output_throughput"),
        # legacy benchmark_serving.py misspells the key with a trailing colon
        request_goodput=fields.number("request_goodput", "request_goodput:"),
        completed=completed,
        failed=fields.integer("failed"),
        num_prompts=fields.integer("num_prompts"),
        total_input_tokens=fields.integer("total_input_tokens", "total_input"),
        total_output_tokens=fields.integer("total_output_tokens", "total_output"),
        duration=fields.number("duration"),
        request_rate=_request_rate(fields),
        date=_date(fields.record.get("date")),
        run_number=run_number,
    )


def _request_rate(fields: _Fields) -> float | None:
    """vLLM writes the string "inf", SGLang a bare Infinity; both mean "all at once"."""
    value = fields.record.get("request_rate")
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return math.inf
    return fields.number("request_rate")


def _date(value: object) -> str | None:
    """vLLM's `YYYYmmdd-HHMMSS` (local time, no zone) as ISO 8601; other strings as written."""
    if not isinstance(value, str):
        return None
    match = VLLM_DATE.match(value)
    if not match:
        return value
    y, mo, d, h, mi, s = match.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def _vllm_acceptance(fields: _Fields) -> Acceptance | None:
    """The `spec_decode_*` keys (vLLM PR #31739): deltas of the server's counters over the run."""
    if not any(key.startswith("spec_decode_") for key in fields.record):
        return None
    origin = fields.origin
    drafts = fields.need_integer("spec_decode_num_drafts")
    draft_tokens = fields.need_integer("spec_decode_draft_tokens")
    accepted = fields.need_integer("spec_decode_accepted_tokens")
    if draft_tokens == 0:
        return None
    if accepted > draft_tokens:
        raise InputError(f"{origin}: spec_decode_accepted_tokens: {accepted} is more than spec_decode_draft_tokens {draft_tokens}")
    if not 0 < drafts <= draft_tokens:
        raise InputError(f"{origin}: spec_decode_num_drafts: {drafts} is not between 1 and spec_decode_draft_tokens {draft_tokens}")
    percent = fields.number("spec_decode_acceptance_rate")
    expected = 100 * accepted / draft_tokens
    if percent is not None and abs(percent - expected) > RATE_TOLERANCE_PCT:
        raise InputError(
            f"{origin}: spec_decode_acceptance_rate: {percent} is not 100 x accepted / draft tokens ({expected:.2f})",
            hint="the field is a percent; check the file was not edited",
        )
    length = fields.number("spec_decode_acceptance_length")
    if length is not None and abs(length - (1 + accepted / drafts)) > LENGTH_TOLERANCE:
        raise InputError(f"{origin}: spec_decode_acceptance_length: {length} is not 1 + accepted / drafts ({1 + accepted / drafts:.4f})")
    return Acceptance(
        source="bench_result",
        length=1 + accepted / drafts,
        num_drafts=drafts,
        num_draft_tokens=draft_tokens,
        num_accepted_tokens=accepted,
        per_position=fields.fractions("spec_decode_per_position_acceptance_rates"),
    )


def _sglang_acceptance(fields: _Fields) -> Acceptance | None:
    """`accept_length`: the server's running average since start or the last cache flush."""
    length = fields.number("accept_length")
    if length is None or length < 0:  # null, or -1 for "unavailable"
        return None
    if length < 1:
        raise InputError(f"{fields.origin}: accept_length: {length} is below 1; it counts the bonus token")
    return Acceptance(source="sglang_server_cumulative", length=length)
