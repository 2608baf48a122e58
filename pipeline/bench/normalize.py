"""One run as the document records it: labels resolved, acceptance attached, units normalized.

A label comes from the recipe (the run group, else the section's `labels:`) or from the file; when
both give one they must agree. Input and output lengths fall back to token totals / completed
requests, and the record says so. Rates are fractions and times are ms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.bench.inferred import infer_context, infer_mode
from pipeline.bench.prometheus import DRAFTS, PER_POSITION, SpecCounters
from pipeline.bench.records import Acceptance, Measured, Origin, RawRun
from pipeline.bench.spec import LABEL_NAMES, Labels, PrometheusPair, RunGroup, coerce_label
from pipeline.errors import InputError

# Labels every run needs, with the file key to name when one is missing.
REQUIRED_LABELS = {
    "workload": "workload",
    "mode": "mode",
    "concurrency": "max_concurrency",
    "target_model": "model_id",
    "input_len": "input_len",
    "output_len": "output_len",
}
_CONTEXT = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmM]?)$")


@dataclass(frozen=True)
class Run:
    """A measured run, ready to be paired and aggregated."""

    origin: Origin
    sha256: str
    tool: str
    engine: str
    labels: Labels
    measured: Measured
    acceptance: Acceptance | None
    synthetic: bool
    measured_lengths: tuple[str, ...]  # labels filled from token totals rather than declared
    inferred: tuple[tuple[str, str], ...]  # (label, record key) for labels read off other keys
    prometheus: PrometheusPair | None
    excluded: str | None  # why the run is left out of every figure

    @property
    def mode(self) -> str:
        return self.labels.mode or ""

    @property
    def decode_tok_s(self) -> float:
        """Decode tokens per second per user: 1000 / median TPOT."""
        return 1000.0 / self.measured.median_tpot_ms


def normalize_run(
    raw: RawRun,
    *,
    group: RunGroup,
    group_index: int,
    section_labels: Labels,
    sha256: str,
    counters: SpecCounters | None = None,
    pair: PrometheusPair | None = None,
) -> Run:
    """Resolve one run's labels and acceptance; raise InputError naming the file and the field."""
    origin = raw.origin
    values = _resolve(raw, group, group_index, section_labels)
    inferred = infer_mode(raw, values, group_index)
    inferred.update(infer_context(raw, values))
    measured_lengths = []
    for name, total in (("input_len", raw.measured.total_input_tokens), ("output_len", raw.measured.total_output_tokens)):
        if values[name] is None and total:
            values[name] = round(total / raw.measured.completed)
            measured_lengths.append(name)
    for name, key in REQUIRED_LABELS.items():
        if values[name] is None:
            raise InputError(
                f"{origin}: {key}: not found, and the recipe gives no {name}",
                hint=f"set {name} under benchmarks.runs[{group_index}]{_metadata_hint(raw, f'{name}=VALUE')}",
            )
    if values["engine_version"] is None and values["image"] is None:
        raise InputError(
            f"{origin}: engine_version: not found, and no image either",
            hint=f"set engine_version (or image) under benchmarks.labels{_metadata_hint(raw, 'vllm_version=X.Y.Z')}",
        )

    acceptance = raw.acceptance
    if counters is not None:
        acceptance = _from_counters(counters, origin)
    if values["mode"] == "baseline":
        evidence = _speculative_evidence(raw, acceptance, counters is not None)
        if evidence:
            raise InputError(f"{origin}: {evidence}: labeled baseline, but the run used speculative decoding")
        values["k"] = None
        acceptance = None
    else:
        if acceptance is None:
            if raw.engine == "sglang":
                key, hint = "accept_length", "bench_serving writes accept_length only with a --backend whose name contains sglang"
            else:
                key = "spec_decode_num_drafts"
                hint = (
                    f"declare /metrics snapshots under benchmarks.runs[{group_index}].prometheus, "
                    "or use a vLLM that writes spec_decode_* keys"
                )
            raise InputError(f"{origin}: {key}: missing; a speculative run needs acceptance data", hint=hint)
        if values["k"] is None:
            raise InputError(
                f"{origin}: k: not found, and the recipe gives no k",
                hint=f"set k under benchmarks.runs[{group_index}]{_metadata_hint(raw, 'k=N')}",
            )
        if acceptance.per_position and len(acceptance.per_position) != values["k"]:
            key = PER_POSITION if counters is not None else "spec_decode_per_position_acceptance_rates"
            raise InputError(f"{origin}: {key}: {len(acceptance.per_position)} positions, but K is {values['k']}")

    labels = Labels(**values)
    dataset = labels.dataset or ""
    return Run(
        origin=origin,
        sha256=sha256,
        tool=raw.tool,
        engine=raw.engine,
        labels=labels,
        measured=raw.measured,
        acceptance=acceptance,
        synthetic=raw.synthetic or dataset.startswith("random"),
        measured_lengths=tuple(measured_lengths),
        inferred=tuple(sorted(inferred.items())),
        prometheus=pair,
        excluded=_exclusion(raw.measured),
    )


def _metadata_hint(raw: RawRun, pair: str) -> str:
    """How the tool that wrote the file could have carried the label: SGLang has no --metadata."""
    if raw.engine == "vllm":
        return f", or pass --metadata {pair} to vllm bench serve"
    return ""


def _resolve(raw: RawRun, group: RunGroup, group_index: int, section_labels: Labels) -> dict[str, Any]:
    declared = group.labels.over(section_labels)
    values: dict[str, Any] = {}
    for name in LABEL_NAMES:
        recipe_value = getattr(declared, name)
        file_value = None
        found = raw.file_label(name)
        if found is not None:
            key, value = found
            try:
                file_value = coerce_label(name, value)
            except ValueError as exc:
                raise InputError(f"{raw.origin}: {key}: {exc}") from None
            if recipe_value is not None and file_value != recipe_value:
                where = f"runs[{group_index}].{name}" if getattr(group.labels, name) is not None else f"labels.{name}"
                raise InputError(
                    f"{raw.origin}: {key}: the file says {file_value!r}, the recipe's benchmarks.{where} says {recipe_value!r}",
                    hint="a label has one value; fix the recipe or drop the label there",
                )
        values[name] = recipe_value if recipe_value is not None else file_value
    return values


def _from_counters(counters: SpecCounters, origin: Origin) -> Acceptance | None:
    """Acceptance from /metrics deltas: rate = accepted / draft tokens, length = 1 + accepted / drafts."""
    if counters.num_draft_tokens == 0:
        return None
    if counters.num_drafts == 0 or counters.num_accepted_tokens > counters.num_draft_tokens:
        raise InputError(
            f"{origin}: {DRAFTS}: delta of {counters.num_drafts} drafts, {counters.num_draft_tokens} draft tokens "
            f"and {counters.num_accepted_tokens} accepted is not a possible combination"
        )
    return Acceptance(
        source="prometheus_delta",
        length=1 + counters.num_accepted_tokens / counters.num_drafts,
        num_drafts=counters.num_drafts,
        num_draft_tokens=counters.num_draft_tokens,
        num_accepted_tokens=counters.num_accepted_tokens,
        per_position=tuple(count / counters.num_drafts for count in counters.accepted_per_position),
    )


def _speculative_evidence(raw: RawRun, acceptance: Acceptance | None, from_metrics: bool) -> str | None:
    """The key that shows a run used speculative decoding, if any (a K of 0 shows none)."""
    found = raw.file_label("k")
    if found is not None and coerce_label("k", found[1]) != 0:
        return found[0]
    if acceptance is not None and acceptance.length > 1:
        if from_metrics:
            return DRAFTS
        return "accept_length" if acceptance.source == "sglang_server_cumulative" else "spec_decode_num_drafts"
    return None


def _exclusion(measured: Measured) -> str | None:
    """Runs with failed or missing requests measure something else (tune_speculative_k's policy)."""
    if measured.failed:
        return f"failed: {measured.failed} requests failed"
    if measured.num_prompts is not None and measured.completed < measured.num_prompts:
        return f"completed: {measured.completed} of {measured.num_prompts} requests"
    return None


def context_order(context: str | None) -> tuple[float, str]:
    """Sort key that puts 1K before 8K before 128K; unparsed labels go last, by name."""
    if context is None:
        return (-1.0, "")
    match = _CONTEXT.match(context.strip())
    if not match:
        return (float("inf"), context)
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return (float(match.group(1)) * scale, context)


def run_order(run: Run) -> tuple[object, ...]:
    """The document's order of runs: by workload, context, concurrency, mode, then file position."""
    labels = run.labels
    return (
        labels.workload or "",
        context_order(labels.context),
        labels.concurrency or 0,
        labels.mode or "",
        run.origin.file,
        run.origin.index,
    )
