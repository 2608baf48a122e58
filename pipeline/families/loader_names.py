"""Replays a vLLM draft loader's name mapping, so verify can prove every tensor lands on a parameter."""

from __future__ import annotations

import re

from pipeline.families.base import LoaderRules


def vllm_param_name(rules: LoaderRules, name: str, mtp_layers: range) -> str | None:
    """The parameter the loader would fill with checkpoint tensor `name`, or None if it ignores it."""
    if any(marker in name for marker in rules.skip_substrings):
        return None
    layer_prefix = _matching_layer_prefix(rules, name, mtp_layers)
    kept = layer_prefix is not None or name.startswith(rules.keep_prefixes) or any(marker in name for marker in rules.keep_substrings)
    if not kept:
        return None
    if rules.embed_marker in name:
        return rules.embed_param
    mapped = name
    if layer_prefix is not None and not any(marker in name for marker in rules.block_exempt):
        mapped = layer_prefix + rules.block_infix + name[len(layer_prefix) :]
    if not any(marker in mapped for marker in rules.fusion_exempt):
        for part, fused in rules.fusions:
            if f".{part}." in mapped:
                mapped = mapped.replace(f".{part}.", f".{fused}.")
                break
    for pattern, replacement in rules.pattern_renames:
        mapped = re.sub(pattern, replacement, mapped)
    for old, new in rules.renames:
        mapped = mapped.replace(old, new)
    for old, new in rules.prefix_renames:
        if mapped.startswith(old):
            return new + mapped[len(old) :]
    return mapped


def _matching_layer_prefix(rules: LoaderRules, name: str, mtp_layers: range) -> str | None:
    for template in rules.layer_prefixes:
        pattern = re.escape(template).replace(re.escape("{layer}"), r"(\d+)")
        match = re.match(pattern, name)
        if match and int(match.group(1)) in mtp_layers:
            return match.group(0)
    return None
