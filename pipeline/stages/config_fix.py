"""config-fix: the draft's config.json is the source's, verbatim, minus `quantization_config`.

Reads `<workdir>/fetch/source/` (config, licence files, `auto_map` files). Writes `config.json`
and byte-for-byte copies of those files into `<workdir>/draft/`: the source's LICENSE and NOTICE
travel with every release, as Apache-2.0 §4(a) and §4(d) ask. Per-layer arrays must already cover every MTP
layer index in the source: tails are only ever taken from the source, never invented, so a short
array is a refusal naming the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checkpoint.files import atomic_write_bytes, atomic_write_json
from pipeline.checkpoint.readers import CONFIG_FILE, LICENSE_FILES, auto_map_files
from pipeline.errors import CheckFailed, InputError
from pipeline.families import Family, Geometry
from pipeline.recipe.layout import Workdir

QUANTIZATION_KEY = "quantization_config"


@dataclass(frozen=True)
class ConfigFixInputs:
    workdir: Workdir
    family: Family


@dataclass(frozen=True)
class ConfigFixResult:
    config: Path
    sha256: dict[str, str]
    removed: tuple[str, ...]


def draft_config(source_config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The source config minus every `quantization_config`; returns it and the removed field paths."""
    config = copy.deepcopy(dict(source_config))
    removed = []
    if config.pop(QUANTIZATION_KEY, None) is not None:
        removed.append(QUANTIZATION_KEY)
    text = config.get("text_config")
    if isinstance(text, dict) and text.pop(QUANTIZATION_KEY, None) is not None:
        removed.append(f"text_config.{QUANTIZATION_KEY}")
    return config, removed


def config_changes(source: Mapping[str, Any], draft: Mapping[str, Any], scope: str = "") -> list[dict[str, str]]:
    """Every field in which the draft config differs from the source's: `{"change": removed|added|changed, "field": dotted path}`.

    Computed from the two files, not from what this stage meant to do, so the card's list of changes
    stays true whatever a stage alters. Nested objects are compared field by field; lists as values.
    """
    changes = []
    for key in [*source, *(k for k in draft if k not in source)]:
        path = f"{scope}{key}"
        if key not in draft:
            changes.append({"change": "removed", "field": path})
        elif key not in source:
            changes.append({"change": "added", "field": path})
        elif isinstance(source[key], Mapping) and isinstance(draft[key], Mapping):
            changes += config_changes(source[key], draft[key], f"{path}.")
        elif source[key] != draft[key] or type(source[key]) is not type(draft[key]):
            changes.append({"change": "changed", "field": path})
    return changes


def short_arrays(config: Mapping[str, Any], family: Family, geometry: Geometry) -> list[tuple[str, int]]:
    """Per-layer arrays that do not reach the last MTP layer: (dotted field, length)."""
    short = []
    for scope, mapping in (("", config), ("text_config.", config.get("text_config"))):
        if not isinstance(mapping, Mapping):
            continue
        for key in family.per_layer_arrays:
            value = mapping.get(key)
            # An empty list means "applies to every layer" (use_rope_layers); a scalar is not per-layer.
            if isinstance(value, list) and value and len(value) < geometry.total_layers:
                short.append((scope + key, len(value)))
    return short


def refuse_short_arrays(where: str, config: Mapping[str, Any], family: Family, geometry: Geometry) -> None:
    """Refuse arrays that stop short of the last MTP layer: their tails may only come from the source."""
    short = short_arrays(config, family, geometry)
    if short:
        field, length = short[0]
        raise CheckFailed(
            f"{where}: {field} has {length} entries, MTP layers up to {geometry.total_layers - 1} need {geometry.total_layers}",
            hint="array tails are copied only from the source release, never invented; use the BF16 source",
        )


def run(inputs: ConfigFixInputs) -> ConfigFixResult:
    """Write the draft config and carry the licence and `auto_map` files."""
    source_dir, draft = inputs.workdir.source_files, inputs.workdir.draft
    try:
        source_config = json.loads((source_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{source_dir / CONFIG_FILE}: missing", hint="run the fetch stage first") from None
    try:
        geometry = inputs.family.read_geometry(source_config)
    except ValueError as exc:
        raise InputError(f"source {CONFIG_FILE}: {exc}") from None
    config, removed = draft_config(source_config)
    refuse_short_arrays(f"source {CONFIG_FILE}", config, inputs.family, geometry)
    digests = {CONFIG_FILE: atomic_write_json(draft / CONFIG_FILE, config)}
    for name in [*LICENSE_FILES, *auto_map_files(config)]:
        carried = source_dir / name
        if carried.is_file():
            data = carried.read_bytes()
            digests[name] = atomic_write_bytes(draft / name, data)
        elif name in LICENSE_FILES:
            # A licence or notice file left by an earlier run must not outlive its removal from the source.
            (draft / name).unlink(missing_ok=True)
    return ConfigFixResult(draft / CONFIG_FILE, digests, tuple(removed))
