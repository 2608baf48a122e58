"""Model-card metadata the embedded Hub refuses, as the Hub's validator does for what matters here.

Checked: `license` against the Hub's licence identifiers (committed copy in
pipeline/recipe/hub_licenses.txt, with its source); `base_model` (one Hub id or a list of them);
`base_model_relation` (the four documented values, and only next to a `base_model`);
`model-index` (the shape in facts/hub-api.md §5: required keys marked there, plus `name` and
`results` on every entry, which is stricter than the table says). Each reason names the field
with its path, e.g. `model-index[0].results[0].dataset.type`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.recipe.loader import hub_license_ids

RELATIONS = ("adapter", "merge", "quantized", "finetune")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def _is_hub_id(value: object) -> bool:
    return isinstance(value, str) and bool(_HUB_ID.fullmatch(value)) and ".." not in value and "--" not in value


def metadata_errors(metadata: Mapping[str, Any], licenses: frozenset[str] | None = None) -> list[str]:
    """Why the Hub would refuse this card metadata; empty when it would accept it.

    `licenses` stands in for the Hub's licence list (default: the committed copy), e.g. to
    rehearse a Hub that has dropped an id since that copy was taken.
    """
    errors: list[str] = []
    license_id = metadata.get("license")
    known = hub_license_ids() if licenses is None else licenses
    if license_id is not None and (not isinstance(license_id, str) or license_id not in known):
        errors.append(f'"license" must be one of the Hub\'s licence identifiers, not {license_id!r}')
    base = metadata.get("base_model")
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        if not bases or not all(_is_hub_id(b) for b in bases):
            errors.append(f'"base_model" must be a Hub model id (namespace/name) or a list of them, not {base!r}')
    relation = metadata.get("base_model_relation")
    if relation is not None:
        if relation not in RELATIONS:
            errors.append(f'"base_model_relation" must be one of {", ".join(RELATIONS)}, not {relation!r}')
        elif base is None:
            errors.append('"base_model_relation" needs a "base_model"')
    if "model-index" in metadata:
        errors += _model_index_errors(metadata["model-index"])
    return errors


def _require(errors: list[str], node: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> bool:
    """Check that `node` is a mapping holding `required`; False when it is not a mapping at all."""
    if not isinstance(node, dict):
        errors.append(f'"{path}" must be a mapping')
        return False
    errors.extend(f'"{path}.{key}" is required' for key in required if node.get(key) in (None, ""))
    return True


def _model_index_errors(index: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    for i, entry in enumerate(index):
        where = f"model-index[{i}]"
        if not _require(errors, entry, where, ("name", "results")):
            continue
        results = entry.get("results")
        if results is not None and not isinstance(results, list):
            errors.append(f'"{where}.results" must be a list')
            continue
        for j, result in enumerate(results or []):
            at = f"{where}.results[{j}]"
            if not _require(errors, result, at, ("task", "dataset", "metrics")):
                continue
            if "task" in result:
                _require(errors, result["task"], f"{at}.task", ("type",))
            if "dataset" in result:
                _require(errors, result["dataset"], f"{at}.dataset", ("type", "name"))
            if "source" in result:
                _require(errors, result["source"], f"{at}.source", ("url",))
            metrics = result.get("metrics")
            if metrics is not None and not isinstance(metrics, list):
                errors.append(f'"{at}.metrics" must be a list')
                continue
            for k, metric in enumerate(metrics or []):
                _require(errors, metric, f"{at}.metrics[{k}]", ("type", "value"))
    return errors
