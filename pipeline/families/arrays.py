"""Per-layer config arrays against the MTP layers: one check for fetch, config-fix and verify."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import CheckFailed
from pipeline.families.base import Family, Geometry


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
