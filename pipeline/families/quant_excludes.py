"""Would vLLM 0.33.0 build a family's MTP modules unquantized behind this target?

DeepSeek, GLM, Qwen3-Next and MiMo build their MTP module with the *target's* quantization config
(`v1/spec_decode/llm_base_proposer.py:1265-1315`), so a BF16 draft loads only if the target's
exclude list covers every quantizable MTP module. The matchers below replay vLLM's, against vLLM
*module prefixes* after fusion (`QuantModule.prefix`), as each quantization method does it:

- ModelOpt (`layers/quantization/modelopt.py:191-226`): exact (fused layers through their shards,
  experts by substring of an `experts` entry; `quant_utils.py:619-692`), then entry-in-prefix
  substring (also after removing `language_model.`), then `fnmatch`.
- compressed-tensors (`compressed_tensors/utils.py:53-70`, `utils/config_utils.py:384-452`): an
  entry equal to the prefix, or `re:X` with `re.match(X, prefix)`; fused layers: every shard;
  experts (`compressed_tensors_moe.py:35-57`): `<prefix>.0.{gate,up,down}_proj` all ignored.
- FP8 (`fp8.py:160-199`): `is_layer_skipped` exact only; the LM head is never FP8-quantized.

A compressed-tensors module that no `config_groups` target names would stay unquantized; the
check assumes the usual `Linear` target and counts every module it does not ignore as quantized.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from typing import Any

from pipeline.families.base import Family, Geometry, QuantModule

QUANT_CONFIG_FILE = "hf_quant_config.json"


@dataclass(frozen=True)
class TargetQuantization:
    """The target's quantization config as vLLM reads it: method, vLLM config name and exclude list."""

    method: str  # modelopt | compressed-tensors | fp8 | an unreplayed method's own name
    vllm_name: str  # e.g. modelopt_fp4 (what `QuantizationConfig.get_name()` returns)
    field: str  # where the exclude list was read, e.g. config.json quantization_config.ignore
    patterns: tuple[str, ...]

    @property
    def replayed(self) -> bool:
        return self.method in MATCHERS


@dataclass(frozen=True)
class Coverage:
    """Which MTP modules the target's quantization would quantize (empty: the MTP loads unquantized)."""

    quantization: TargetQuantization | None
    uncovered: tuple[str, ...]

    @property
    def covered(self) -> bool:
        return not self.uncovered and (self.quantization is None or self.quantization.replayed)

    def to_json(self) -> dict[str, Any]:
        q = self.quantization
        return {
            "method": q.method if q else None,
            "vllm_name": q.vllm_name if q else None,
            "field": q.field if q else None,
            "patterns": list(q.patterns) if q else [],
            "covered": self.covered,
            "uncovered": list(self.uncovered),
        }


def read_target_quantization(config: Mapping[str, Any], quant_file: Mapping[str, Any] | None) -> TargetQuantization | None:
    """config.json's `quantization_config`, else `hf_quant_config.json` (transformers_utils/config.py:951-962).

    ValueError names the field when the exclude list is not a list of strings."""
    section = config.get("quantization_config")
    if isinstance(section, Mapping):
        return _from_section(section, "config.json quantization_config")
    if isinstance(quant_file, Mapping):
        return _from_section(quant_file, QUANT_CONFIG_FILE)
    return None


def _from_section(section: Mapping[str, Any], where: str) -> TargetQuantization:
    nested = section.get("quantization")
    if isinstance(nested, Mapping):  # ModelOpt's legacy hf_quant_config.json (modelopt.py:330-342)
        return TargetQuantization(
            "modelopt",
            _modelopt_name(nested.get("quant_algo")),
            f"{where}.quantization.exclude_modules",
            _patterns(nested, "exclude_modules", f"{where}.quantization"),
        )
    method = str(section.get("quant_method", "")).lower()
    if method.startswith("modelopt"):
        key = "ignore" if "ignore" in section else "exclude_modules"  # modelopt.py:359
        return TargetQuantization("modelopt", _modelopt_name(section.get("quant_algo")), f"{where}.{key}", _patterns(section, key, where))
    if method == "compressed-tensors":
        return TargetQuantization(method, method, f"{where}.ignore", _patterns(section, "ignore", where))
    if method == "fp8":
        key = "ignored_layers" if section.get("ignored_layers") else "modules_to_not_convert"  # fp8.py:162-168
        return TargetQuantization(method, method, f"{where}.{key}", _patterns(section, key, where))
    return TargetQuantization(method or "unknown", method or "unknown", where, ())


def _modelopt_name(algo: Any) -> str:
    """ModelOpt's vLLM config names: NVFP4 is `modelopt_fp4`, FP8 `modelopt` (modelopt.py get_name)."""
    return "modelopt_fp4" if str(algo).upper() == "NVFP4" else "modelopt"


def _patterns(section: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}.{key}: must be a list of strings")
    return tuple(value)


def _shard_names(module: QuantModule) -> list[str]:
    """Fused layer -> the names of its parts (`prefix.replace(proj, shard)`, quant_utils.py:666-670)."""
    proj = module.prefix.rsplit(".", 1)[-1]
    return [module.prefix.replace(proj, shard) for shard in module.shards]


def _exact_skipped(module: QuantModule, patterns: Sequence[str]) -> bool:
    """`is_layer_skipped` in exact mode (quant_utils.py:619-692)."""
    if module.kind == "linear" and module.shards:
        if module.prefix in patterns:
            return True
        return all(name in patterns for name in _shard_names(module))
    if "experts" in module.prefix:
        return any(module.prefix in entry for entry in patterns if "experts" in entry)
    return module.prefix in patterns


def modelopt_excluded(module: QuantModule, patterns: Sequence[str]) -> bool:
    """`ModelOptQuantConfigBase.is_layer_excluded` (modelopt.py:191-226)."""
    if not patterns:
        return False
    if _exact_skipped(module, patterns):
        return True
    prefix = module.prefix
    for entry in patterns:
        if entry != prefix and (
            entry in prefix or (prefix.startswith("language_model.") and entry in prefix.removeprefix("language_model."))
        ):
            return True
    return any(fnmatch(prefix, entry) for entry in patterns)


def _ct_match(name: str, patterns: Sequence[str]) -> bool:
    """`is_equal_or_regex_match` without fnmatch (config_utils.py:432-452)."""
    return any(re.match(entry[3:], name) is not None if entry.startswith("re:") else entry == name for entry in patterns)


def compressed_tensors_ignored(module: QuantModule, patterns: Sequence[str]) -> bool:
    """`should_ignore_layer` (compressed_tensors/utils.py:53-70); experts per compressed_tensors_moe.py:35-57."""
    if module.kind == "experts":
        return all(_ct_match(f"{module.prefix}.0.{part}", patterns) for part in module.shards)
    if _ct_match(module.prefix, patterns):
        return True
    return bool(module.shards) and all(_ct_match(name, patterns) for name in _shard_names(module))


def fp8_skipped(module: QuantModule, patterns: Sequence[str]) -> bool:
    """`Fp8Config.get_quant_method` (fp8.py:176-199): linears and experts only, exact matching."""
    return module.kind == "head" or _exact_skipped(module, patterns)


MATCHERS = {"modelopt": modelopt_excluded, "compressed-tensors": compressed_tensors_ignored, "fp8": fp8_skipped}


def coverage(modules: Sequence[QuantModule], quantization: TargetQuantization | None) -> Coverage:
    """The MTP modules the target's quantization config would quantize (by vLLM module prefix)."""
    if quantization is None:
        return Coverage(None, ())
    matcher = MATCHERS.get(quantization.method)
    if matcher is None:
        return Coverage(quantization, tuple(module.prefix for module in modules))
    uncovered = tuple(
        module.prefix
        for module in modules
        if quantization.vllm_name not in module.unquantized_under and not matcher(module, quantization.patterns)
    )
    return Coverage(quantization, uncovered)


def mtp_coverage(family: Family, geometry: Geometry, config: Mapping[str, Any], quant_file: Mapping[str, Any] | None) -> Coverage | None:
    """The coverage of `family`'s MTP modules by the target's exclude list; None when the family
    builds its MTP from the draft's own config (Step-3.5/3.7, Qwen4 Exp, Nemotron-H), where the target's quantization does not apply."""
    if family.quantization_from == "draft":
        return None
    quantization = read_target_quantization(config, quant_file)
    modules = [module for module in family.quant_module_prefixes(geometry) if not _switched_off(module, config)]
    rename = family.target_module_rename
    if quantization is None or rename is None:
        return coverage(modules, quantization)
    renamed = replace(quantization, patterns=renamed_patterns(quantization, lambda name: rename(name, geometry)))
    return Coverage(quantization, coverage(modules, renamed).uncovered)


def _switched_off(module: QuantModule, config: Mapping[str, Any]) -> bool:
    """Whether the target config's own switch builds `module` unquantized (`"mtp" in disable_quant_module`)."""
    if module.unquantized_if is None:
        return False
    field, entry = module.unquantized_if
    listed = config.get(field)
    return isinstance(listed, (list, str)) and entry in listed


def renamed_patterns(quantization: TargetQuantization, rename: Callable[[str], str]) -> tuple[str, ...]:
    """The exclude list after vLLM hands it the target model's rename mapper (`apply_vllm_mapper`):
    ModelOpt first splits `X*` into `X` and `X.*` (modelopt.py:266-285), compressed-tensors renames
    dotted entries that are not `re:` (compressed_tensors.py:129-155), FP8 renames every entry (fp8.py:153-155)."""
    patterns = quantization.patterns
    if quantization.method == "modelopt":
        split = [(p[:-1], p[:-1] + ".*") if len(p) >= 2 and p[-1] == "*" and p[-2] != "." else (p,) for p in patterns]
        return tuple(rename(part) for parts in split for part in parts)
    if quantization.method == "compressed-tensors":
        return tuple(rename(p) if "." in p and not p.startswith("re:") else p for p in patterns)
    if quantization.method == "fp8":
        return tuple(rename(p) for p in patterns)
    return patterns


def missing_patterns(result: Coverage) -> tuple[str, ...]:
    """Exclude entries that would cover the uncovered modules, in the target's own pattern form."""
    quantization = result.quantization
    if quantization is None or quantization.method == "fp8":
        return result.uncovered  # FP8 matches exact names only
    scopes = dict.fromkeys(_scope(prefix) for prefix in result.uncovered)
    if quantization.method == "compressed-tensors":
        return tuple("re:" + re.escape(scope) + (r"\." if "layers." in scope else "$") for scope in scopes)
    return tuple(f"{scope}*" if "layers." in scope else scope for scope in scopes)


def _scope(prefix: str) -> str:
    """`model.layers.4.self_attn.o_proj` -> `model.layers.4`; a module outside a layer stays whole."""
    match = re.match(r"^(.*?layers\.\d+)\.", prefix)
    return match.group(1) if match else prefix


def describe(family: Family, result: Coverage) -> str:
    """One line: why the MTP would or would not load unquantized behind this target."""
    quantization = result.quantization
    if quantization is None:
        return "the target has no quantization config, so vLLM builds the MTP unquantized"
    if not quantization.replayed:
        return (
            f"vLLM builds the {family.name} MTP with the target's quantization ({quantization.method}), "
            f"whose exclude rules are not replayed here, so a BF16 draft is not known to load"
        )
    if result.covered:
        return f"the target's {quantization.field} covers every MTP module, so vLLM builds the MTP unquantized"
    shown = ", ".join(result.uncovered[:3]) + (f" and {len(result.uncovered) - 3} more" if len(result.uncovered) > 3 else "")
    return (
        f"vLLM builds the {family.name} MTP with the target's {quantization.vllm_name} config and its {quantization.field} "
        f"does not cover {shown}; missing: {', '.join(missing_patterns(result))}"
    )
