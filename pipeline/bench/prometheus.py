"""Spec-decode counters from Prometheus text snapshots of vLLM's `/metrics`.

The counters are cumulative since server start, so a run's acceptance is the after-minus-before
delta, summed over every label set (engines). See shared/facts/bench-formats.md §4.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline.errors import InputError

DRAFTS = "vllm:spec_decode_num_drafts_total"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
PER_POSITION = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
TOTALS = (DRAFTS, DRAFT_TOKENS, ACCEPTED)

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


@dataclass(frozen=True)
class SpecCounters:
    """The spec-decode counters of one snapshot, or the delta of two."""

    num_drafts: int
    num_draft_tokens: int
    num_accepted_tokens: int
    accepted_per_position: tuple[int, ...]


def read_snapshot(text: str, where: str) -> SpecCounters:
    """Sum the spec-decode counters of one scrape over engines; `_created` series are other names."""
    totals = dict.fromkeys(TOTALS, 0)
    seen: set[str] = set()
    per_position: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line.startswith("vllm:spec_decode_"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise InputError(f"{where}:{lineno}: not a Prometheus sample line")
        name = match["name"]
        if name not in TOTALS and name != PER_POSITION:
            continue
        value = _count(match["value"], f"{where}:{lineno}", name)
        if name == PER_POSITION:
            labels = _labels(match["labels"] or "", f"{where}:{lineno}")
            position = labels.get("position", "")
            if not position.isdigit():
                raise InputError(f"{where}:{lineno}: {name}: position label missing or not a number")
            per_position[int(position)] = per_position.get(int(position), 0) + value
        else:
            totals[name] += value
            seen.add(name)
    for name in TOTALS:
        if name not in seen:
            raise InputError(
                f"{where}: {name}: missing",
                hint="scrape /metrics of a server running with --speculative-config",
            )
    return SpecCounters(
        num_drafts=totals[DRAFTS],
        num_draft_tokens=totals[DRAFT_TOKENS],
        num_accepted_tokens=totals[ACCEPTED],
        accepted_per_position=_positions(per_position, where),
    )


def delta(before: SpecCounters, after: SpecCounters, before_where: str, after_where: str) -> SpecCounters:
    """after - before; a counter that went down means the server restarted in between."""

    def minus(name: str, a: int, b: int) -> int:
        if a < b:
            raise InputError(
                f"{after_where}: {name}: {a} is below {b} in {before_where}",
                hint="the server restarted between the snapshots; scrape again around one run",
            )
        return a - b

    width = max(len(before.accepted_per_position), len(after.accepted_per_position))
    pad_before = before.accepted_per_position + (0,) * (width - len(before.accepted_per_position))
    pad_after = after.accepted_per_position + (0,) * (width - len(after.accepted_per_position))
    return SpecCounters(
        num_drafts=minus(DRAFTS, after.num_drafts, before.num_drafts),
        num_draft_tokens=minus(DRAFT_TOKENS, after.num_draft_tokens, before.num_draft_tokens),
        num_accepted_tokens=minus(ACCEPTED, after.num_accepted_tokens, before.num_accepted_tokens),
        accepted_per_position=tuple(
            minus(f'{PER_POSITION}{{position="{i}"}}', a, b) for i, (a, b) in enumerate(zip(pad_after, pad_before, strict=True))
        ),
    )


def _count(text: str, where: str, name: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {name}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise InputError(f"{where}: {name}: {text} is not a counter value")
    return int(value)


def _labels(text: str, where: str) -> dict[str, str]:
    labels = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if not match:
            if text[pos:].strip(" ,"):
                raise InputError(f"{where}: malformed labels {{{text}}}")
            break
        labels[match[1]] = match[2]
        pos = match.end()
    return labels


def _positions(per_position: dict[int, int], where: str) -> tuple[int, ...]:
    if sorted(per_position) != list(range(len(per_position))):
        raise InputError(f"{where}: {PER_POSITION}: positions {sorted(per_position)} do not run 0..K-1")
    return tuple(per_position[i] for i in range(len(per_position)))
