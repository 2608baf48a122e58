"""Labels a record shows without naming them: the mode, K and context real files imply.

Users label baselines with K=0, name sweep combinations "baseline" or "mtp-k3", and leave the
context to the prompt length; the importer reads those instead of asking for more recipe lines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pipeline.bench.records import Acceptance, RawRun
from pipeline.errors import InputError

# A sweep's `_benchmark_name` is the user's name for a combination: "baseline", "no-spec" or "k0"
# mean no speculation, "mtp-k3" or "k=3" name K (a "k" not inside a word, so "ctx8k" is no K).
BASELINE_NAME = re.compile(r"(?<![a-z0-9])(baseline|no[-_ ]?spec)(?![a-z0-9])", re.IGNORECASE)
K_IN_NAME = re.compile(r"(?<![a-z0-9])k=?(\d+)(?![0-9])", re.IGNORECASE)
BENCHMARK_NAME = "_benchmark_name"
CONTEXT_TOLERANCE = 0.15  # 8000 and 8192 tokens are both "8K"; 100000 is no usual name, declare it


def k_in_benchmark_name(record: Mapping[str, Any]) -> tuple[str, str, object] | None:
    """(label, key, value) for a K named in `_benchmark_name`, if any."""
    name = record.get(BENCHMARK_NAME)
    match = K_IN_NAME.search(name) if isinstance(name, str) else None
    return ("k", BENCHMARK_NAME, int(match.group(1))) if match else None


def mode_hint(record: Mapping[str, Any], acceptance: Acceptance | None, run_number: int | None) -> tuple[str, str] | None:
    """The mode a record shows without a mode or K label, and the key that shows it.

    - a `_benchmark_name` such as "baseline" or "no-spec";
    - acceptance data: only a server running speculation reports drafts (vLLM) or an accept length (SGLang);
    - SGLang's server dump with no `speculative_algorithm`;
    - a sweep run with neither `speculative_config` nor `spec_decode_*` keys: the sweep writes every
      serve override into the run, and vLLM's bench writes `spec_decode_*` whenever the server drafted.
    """
    name = record.get(BENCHMARK_NAME)
    if isinstance(name, str) and BASELINE_NAME.search(name):
        return ("baseline", BENCHMARK_NAME)
    if acceptance is not None:
        return ("speculative", "accept_length" if acceptance.source == "sglang_server_cumulative" else "spec_decode_num_drafts")
    server_info = record.get("server_info")
    if isinstance(server_info, Mapping) and "speculative_algorithm" in server_info and server_info["speculative_algorithm"] is None:
        return ("baseline", "server_info.speculative_algorithm")
    speculative_keys = any(key == "speculative_config" or key.startswith(("speculative_config.", "spec_decode_")) for key in record)
    if run_number is not None and not speculative_keys:
        return ("baseline", "speculative_config")
    return None


def infer_mode(raw: RawRun, values: dict[str, Any], group_index: int) -> dict[str, str]:
    """Fill `mode` from K (0 means no speculation) or from what the record shows; return what was inferred."""
    k = values["k"]
    if values["mode"] == "speculative" and k == 0:
        found = raw.file_label("k")
        key = found[0] if found is not None else "k"
        raise InputError(
            f"{raw.origin}: {key}: 0 means no speculation, but the run is labeled speculative",
            hint=f"label it mode: baseline under benchmarks.runs[{group_index}], or give the K it ran with",
        )
    if values["mode"] is not None:
        return {}
    if k is not None:
        values["mode"] = "baseline" if k == 0 else "speculative"
        found = raw.file_label("k")
        return {"mode": found[0] if found is not None else "k"}
    if raw.mode_hint is not None:
        values["mode"], key = raw.mode_hint
        return {"mode": key}
    return {}


def context_name(input_len: int) -> str | None:
    """An input length as the usual context name (1K, 8K, 32K, 128K ...), if it is within 15 % of one."""
    kib = input_len / 1024
    if kib < 0.85:
        return None
    nearest = 2 ** round(math.log2(kib))
    if abs(kib / nearest - 1) > CONTEXT_TOLERANCE:
        return None
    return f"{nearest}K"


def infer_context(raw: RawRun, values: dict[str, Any]) -> dict[str, str]:
    """Fill an undeclared `context` from the declared or file input length; return what was inferred."""
    if values["context"] is not None or values["input_len"] is None:
        return {}
    values["context"] = context_name(values["input_len"])
    if values["context"] is None:
        return {}
    found = raw.file_label("input_len")
    return {"context": found[0] if found is not None else "input_len"}
