"""config-fix: the draft's config.json is the source's, verbatim, minus `quantization_config`.

Reads `<workdir>/fetch/source/` (config, licence files, `auto_map` files). Writes `config.json`
and byte-for-byte copies of those files into `<workdir>/draft/`: the source's LICENSE and NOTICE
travel with every release, as Apache-2.0 §4(a) and §4(d) ask. Per-layer arrays must already cover
every MTP layer index in the source: tails are only ever taken from the source, never invented, so
a short array is a refusal naming the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checkpoint.files import atomic_write_bytes, atomic_write_json
from pipeline.checkpoint.readers import CONFIG_FILE, LICENSE_FILES, QUANTIZATION_KEY, auto_map_files
from pipeline.errors import InputError
from pipeline.families import Family
from pipeline.families.arrays import refuse_short_arrays
from pipeline.recipe.layout import Workdir
from pipeline.stages.context import Context, Stage, StageOutcome, file_digest


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


def _inputs(ctx: Context) -> dict[str, Any]:
    return {"fetch": file_digest(ctx.workdir.fetch_manifest), "family": ctx.recipe.family}


def _run(ctx: Context) -> StageOutcome:
    result = run(ConfigFixInputs(ctx.workdir, ctx.family))
    removed = ", ".join(result.removed) or "nothing"
    ctx.out.info(f"config-fix: config.json written, removed {removed}; carried {len(result.sha256) - 1} file(s)")
    return [ctx.workdir.draft / name for name in result.sha256], {"files": result.sha256, "removed": list(result.removed)}


STAGE = Stage("config-fix", "write the draft config.json and carry licence and auto_map files", _inputs, _run)
