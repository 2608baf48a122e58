"""Synthetic checkpoints for every family at tiny geometry: a BF16 source and an NVFP4-like target.

The source holds backbone and MTP tensors spread over several shards, a config with the family's
own keys, a LICENSE, a card with `license:` and tokenizer files. The target is a quantized export
of the same model; its variant (`TARGET_VARIANTS`) chooses the verdict inspect should give. MTP
tensor names and shapes come from the family's table, the backbone is a few tensors per layer.
Step-3.7 is delegated to `pipeline.rehearsal.synthetic`, which models its nested VLM config and arrays.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.checkpoint.files import dump_json
from pipeline.families import FAMILIES, Family
from pipeline.rehearsal.family_configs import CONFIGS, FamilySpec
from pipeline.rehearsal.synthetic import (
    LICENSE_TEXT,
    TARGET_VARIANTS,
    TOKENIZER_FILES,
    SyntheticSpec,
    SyntheticTensor,
    scatter,
    shard_names,
    write_shards,
    write_source,
    write_target,
)

MTP_SHARD = "model-mtp-bf16.safetensors"  # where a re-export puts restored BF16 MTP layers (facts §7)
MTP_SEED_BASE = 50_000
DEFAULT_SPEC = FamilySpec()


NVFP4_CONFIG = {
    "quant_method": "modelopt",
    "quant_algo": "NVFP4",
    "group_size": 16,
    "kv_cache_quant_algo": "FP8",
    "ignore": ["lm_head"],
}
# The exclude entry that keeps each family's MTP unquantized, in vLLM module names (the form
# nvidia/DeepSeek-R1-FP4 uses, `model.layers.61*`); MiMo's modules are `model.layers.{nh+i}`.
MTP_EXCLUDES: dict[str, str | tuple[str, ...]] = {
    "deepseek_v3": "model.layers.{nh}*",
    "deepseek_v32": "model.layers.{nh}*",
    "glm4_moe": "model.layers.{nh}*",
    "glm4_moe_lite": "model.layers.{nh}*",
    "qwen3_next": "mtp*",
    "mimo": "model.layers.{nh}*",
    "qwen3_5": "mtp*",
    "qwen3_5_moe": "mtp*",
    "glm5_next": "model.layers.{nh}*",
    "kimi_k3": "model.layers.{nh}*",
    # vLLM builds MiniMax M3's MTP as model.layers.{i} from 0; a VL target's own layers are language_model.model.layers.
    "minimax_m3": "model.layers.*",
    "nemotron_h": "mtp*",  # read by no vLLM code: NemotronHMTP takes the draft's own quantization
    "deepseek_v4": "model.layers.{nh}*",
    "mimo_v2": "model.mtp*",  # vLLM builds the MTP as model.mtp.layers.0, the checkpoint's own name
    "qwen4_exp": "mtp*",  # read by no vLLM code: Qwen4ExpMTP takes the draft's own quantization
    "step5": "model.layers.{nh}*",
    # LongCat-Flash's block is model.layers.{2 * num_layers}; its eh_proj is built under the bare name eh_proj.
    "longcat_flash": ("model.layers.{nh}*", "eh_proj"),
}
QUANT_FORMS = ("modelopt", "compressed-tensors", "fp8")


def quantization_config(family_name: str, spec: FamilySpec, *, form: str = "modelopt", mtp_excluded: bool = True) -> dict[str, Any]:
    """A target's `quantization_config` in one of vLLM's three exclude-list forms, covering the MTP or not."""
    entry = MTP_EXCLUDES[family_name]
    patterns = [pattern.format(nh=spec.num_hidden_layers) for pattern in ((entry,) if isinstance(entry, str) else entry)]
    if form == "modelopt":
        return {**NVFP4_CONFIG, "ignore": ["lm_head", *(patterns if mtp_excluded else [])]}
    if form == "compressed-tensors":
        regexes = ["re:" + pattern.replace(".", "\\.").replace("*", ".*") for pattern in patterns]
        return {
            "quant_method": "compressed-tensors",
            "format": "nvfp4-pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "float", "group_size": 16}}},
            "ignore": ["lm_head", *(regexes if mtp_excluded else [])],
        }
    if form == "fp8":
        family = FAMILIES[family_name]
        modules = family.quant_module_prefixes(family.read_geometry(CONFIGS[family_name](spec)))
        return {
            "quant_method": "fp8",
            "activation_scheme": "dynamic",
            "weight_block_size": [128, 128],
            "modules_to_not_convert": ["lm_head", *([m.prefix for m in modules if m.kind != "head"] if mtp_excluded else [])],
        }
    raise ValueError(f"form must be one of {', '.join(QUANT_FORMS)}")


def family_config(
    family_name: str, spec: FamilySpec = DEFAULT_SPEC, *, quantized: bool = False, form: str = "modelopt", mtp_excluded: bool = True
) -> dict[str, Any]:
    """The tiny config.json of a non-Step family's source (or, quantized, its target)."""
    if family_name not in CONFIGS:
        raise ValueError(f"family must be one of {', '.join(CONFIGS)}")
    config = CONFIGS[family_name](spec)
    if quantized:
        config["quantization_config"] = quantization_config(family_name, spec, form=form, mtp_excluded=mtp_excluded)
    return config


def mtp_tensors(family: Family, config: dict[str, Any], *, per_layer_heads: bool = True) -> list[SyntheticTensor]:
    """Every MTP tensor the family knows (shared copies included) under its first source name, BF16;
    the extras are backbone tensors. Without `per_layer_heads` the layer's own shared copies are left out."""
    full = family.with_shared_weights("copy") if "copy" in family.shared_weights_choices else family
    extras = {extra.name for extra in family.extra_tensors}
    expected = [
        t for t in full.expected_tensors(family.read_geometry(config)) if t.name not in extras and (per_layer_heads or not t.shared)
    ]
    return [SyntheticTensor(t.source_names[0], "BF16", t.shape, MTP_SEED_BASE + i) for i, t in enumerate(expected)]


def _backbone(spec: FamilySpec, *, quantized: bool) -> list[SyntheticTensor]:
    """Embedding, final norm, lm_head and two tensors per layer; the projection NVFP4-packed when quantized."""
    h = spec.hidden_size
    tensors = [
        SyntheticTensor("model.embed_tokens.weight", "BF16", (spec.vocab_size, h), 1),
        SyntheticTensor("model.norm.weight", "BF16", (h,), 2),
        SyntheticTensor("lm_head.weight", "BF16", (spec.vocab_size, h), 3),
    ]
    for layer in range(spec.num_hidden_layers):
        base, seed = f"model.layers.{layer}.", 1000 + layer * 10
        tensors.append(SyntheticTensor(base + "input_layernorm.weight", "BF16", (h,), seed))
        if quantized:
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight", "U8", (h, h // 2), seed + 1))
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight_scale", "F8_E4M3", (h, h // 16), seed + 2))
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight_scale_2", "F32", (), seed + 3))
        else:
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight", "BF16", (h, h), seed + 1))
    return tensors


def _write_files(folder: Path, family_name: str, config: dict[str, Any], spec: FamilySpec, base_model: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(dump_json(config))
    (folder / "LICENSE").write_text(LICENSE_TEXT)
    front = f"license: {spec.license}\nlibrary_name: transformers\n" + (f"base_model: {base_model}\n" if base_model else "")
    (folder / "README.md").write_text(f"---\n{front}---\n\n# Synthetic {family_name} model\n\nGenerated for tests.\n")
    for name, text in TOKENIZER_FILES.items():
        (folder / name).write_text(text)
    for reference in (config.get("auto_map") or {}).values():
        module = reference.rsplit(".", 1)[0]
        (folder / f"{module}.py").write_text(f"# {reference} of the synthetic {family_name} model.\n")


def _step_spec(spec: FamilySpec) -> SyntheticSpec:
    return SyntheticSpec(hidden_size=spec.hidden_size, vocab_size=spec.vocab_size, shards=spec.shards, seed=spec.seed, license=spec.license)


def write_family_source(folder: Path, family_name: str, spec: FamilySpec = DEFAULT_SPEC) -> Path:
    """A BF16 source of `family_name`: backbone and MTP tensors scattered over `spec.shards` shards."""
    if family_name == "step3p7":
        return write_source(folder, _step_spec(spec))
    config = family_config(family_name, spec)
    _write_files(folder, family_name, config, spec, None)
    tensors = _backbone(spec, quantized=False) + mtp_tensors(FAMILIES[family_name], config, per_layer_heads=spec.per_layer_heads)
    write_shards(folder, scatter(tensors, spec.shards, spec.seed), spec.seed, shard_names(spec.shards))
    return folder


def write_family_target(
    folder: Path,
    family_name: str,
    spec: FamilySpec = DEFAULT_SPEC,
    variant: str = "no-mtp",
    source_repo: str | None = None,
    *,
    form: str = "modelopt",
    mtp_excluded: bool = True,
) -> Path:
    """An NVFP4-like target of `family_name`; `variant` chooses which inspect verdict it should get.

    `no-mtp` ships no MTP tensors (its config still declares them), `mtp-shard` adds the complete
    BF16 MTP in its own shard, `incomplete-mtp` the same minus one tensor, and `other-vocab` /
    `other-hidden` double the vocabulary or the hidden size. `form` picks the quantization config's
    exclude-list form (ModelOpt, compressed-tensors or FP8) and `mtp_excluded` whether that list
    covers the MTP layer (without it, vLLM would quantize the MTP: `incompatible`). Step ignores both.
    """
    if variant not in TARGET_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(TARGET_VARIANTS)}")
    if family_name == "step3p7":
        return write_target(folder, _step_spec(spec), variant, *([source_repo] if source_repo else []))
    if variant == "other-vocab":
        spec = replace(spec, vocab_size=spec.vocab_size * 2)
    if variant == "other-hidden":
        spec = replace(spec, hidden_size=spec.hidden_size * 2)
    config = family_config(family_name, spec, quantized=True, form=form, mtp_excluded=mtp_excluded)
    _write_files(folder, family_name, config, spec, source_repo)
    if form == "modelopt":
        (folder / "hf_quant_config.json").write_bytes(
            dump_json(
                {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16}}
            )
        )
    backbone = _backbone(spec, quantized=True)
    count = max(2, spec.shards - 1)
    groups, names = [backbone[i::count] for i in range(count)], shard_names(count)
    if variant in ("mtp-shard", "incomplete-mtp"):
        mtp = mtp_tensors(FAMILIES[family_name], config)
        groups.append(mtp[:-1] if variant == "incomplete-mtp" else mtp)
        names.append(MTP_SHARD)
    write_shards(folder, groups, spec.seed + 7, names)
    return folder


__all__ = ["CONFIGS", "QUANT_FORMS", "TARGET_VARIANTS", "FamilySpec", "family_config", "write_family_source", "write_family_target"]
