"""How a draft config differs from its source's, field by field, for the card's list of changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
