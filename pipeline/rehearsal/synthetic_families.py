"""Synthetic checkpoints for every family at tiny geometry: a BF16 source and an NVFP4-like target.

The source holds backbone and MTP tensors spread over several shards, a config with the family's
own keys, a LICENSE, a card with `license:` and tokenizer files. The target is a quantized export
of the same model; its variant (`TARGET_VARIANTS`) chooses the verdict inspect should give. MTP
tensor names and shapes come from the family's table, the backbone is a few tensors per layer.
Step-3.7 is delegated to `pipeline.rehearsal.synthetic`, which models its nested VLM config and arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.checkpoint.files import dump_json
from pipeline.families import FAMILIES, Family
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


@dataclass(frozen=True)
class FamilySpec:
    """Tiny geometry shared by every family; each config builder adds its family's own widths.

    For `step3p7` only hidden_size, vocab_size, shards, seed and license apply: the Step generator
    keeps its 45 backbone and 3 MTP layers so indices match the release.
    """

    hidden_size: int = 64
    vocab_size: int = 256
    num_hidden_layers: int = 4
    num_mtp_layers: int = 1
    experts: int = 4
    shards: int = 4
    seed: int = 0
    license: str = "apache-2.0"
    # False: a GLM-4.6-shaped source, whose MTP layer has no embed_tokens / shared_head.head of its own.
    per_layer_heads: bool = True
    # Nemotron-H only: the latent size its MoE experts work in (None: the hidden size).
    moe_latent_size: int | None = None


def _text(spec: FamilySpec) -> dict[str, Any]:
    return {
        "hidden_size": spec.hidden_size,
        "vocab_size": spec.vocab_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "rms_norm_eps": 1e-06,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
    }


def _mla_moe(spec: FamilySpec) -> dict[str, Any]:
    """DeepSeek's nextn MoE layer with multi-head latent attention: the widths both it and GLM-4.7-Flash read."""
    return {
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
    }


def _deepseek_v3(spec: FamilySpec) -> dict[str, Any]:
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "auto_map": {
            "AutoConfig": "configuration_deepseek.DeepseekV3Config",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
        },
        **_text(spec),
        **_mla_moe(spec),
        "num_key_value_heads": 4,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
    }


def _glm4_moe_lite(spec: FamilySpec) -> dict[str, Any]:
    """The fields vLLM 0.33.0's glm4_moe_lite.py / glm4_moe.py read; the model type puts it on the MLA list."""
    return {
        "architectures": ["Glm4MoeLiteForCausalLM"],
        "model_type": "glm4_moe_lite",
        **_text(spec),
        **_mla_moe(spec),
        "hidden_act": "silu",
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 1.0,
    }


def _deepseek_v32(spec: FamilySpec) -> dict[str, Any]:
    """DeepSeek-V3's fields plus the indexer's, which vLLM 0.33.0 reads (deepseek_v32/attention.py:65-68)."""
    config = {**_deepseek_v3(spec), "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32"}
    config.pop("auto_map")
    return {**config, "index_topk": 8, "index_n_heads": 2, "index_head_dim": 16}


def _glm4_moe(spec: FamilySpec) -> dict[str, Any]:
    return {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        **_text(spec),
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "attention_bias": True,
        "use_qk_norm": True,
        "partial_rotary_factor": 0.5,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
    }


def _qwen3_next(spec: FamilySpec) -> dict[str, Any]:
    config = {
        "architectures": ["Qwen3NextForCausalLM"],
        "model_type": "qwen3_next",
        **_text(spec),
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "full_attention_interval": 4,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 24,
        "num_experts": spec.experts,
        "num_experts_per_tok": 2,
    }
    # The released config appears to lack the count (facts §9), so the default case leaves it out too.
    if spec.num_mtp_layers != FAMILIES["qwen3_next"].count_default:
        config["num_nextn_predict_layers"] = spec.num_mtp_layers
    return config


def _qwen3_5(spec: FamilySpec, *, moe: bool) -> dict[str, Any]:
    """The multimodal release's shape: the text model, MTP count included, under `text_config`
    (vLLM 0.33.0 reads it there: qwen3_5_mtp.py:75-82, speculative.py:987-1008). No vision tower."""
    text = {
        "model_type": "qwen3_5_moe_text" if moe else "qwen3_5_text",
        **_text(spec),
        "mtp_num_hidden_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "full_attention_interval": 4,
        "layer_types": ["linear_attention"] * (spec.num_hidden_layers - 1) + ["full_attention"],
    }
    if moe:
        text.update(moe_intermediate_size=24, shared_expert_intermediate_size=24, num_experts=spec.experts, num_experts_per_tok=2)
    else:
        text["intermediate_size"] = 96
    name = "Qwen3_5MoeForConditionalGeneration" if moe else "Qwen3_5ForConditionalGeneration"
    return {"architectures": [name], "model_type": "qwen3_5_moe" if moe else "qwen3_5", "tie_word_embeddings": False, "text_config": text}


def _mimo(spec: FamilySpec) -> dict[str, Any]:
    return {
        "architectures": ["MiMoForCausalLM"],
        "model_type": "mimo",
        **_text(spec),
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
    }


def _glm5_next(spec: FamilySpec) -> dict[str, Any]:
    """GLM-5.3-Flash's multimodal shape, the text model under `text_config` (no vision tower): NoPE MLA
    as transformers 5.20.2 requires, and the fields vLLM 0.33.0 reads that transformers does not declare."""
    text = {**_mla_moe(spec), "qk_rope_head_dim": 0, "mlp_layer_types": ["dense"] + ["sparse"] * (spec.num_hidden_layers - 1)}
    del text["first_k_dense_replace"]
    text.update(model_type="glm5_next_text", num_key_value_heads=4, hidden_act="silu", n_group=1, topk_group=1, norm_topk_prob=True)
    text.update(topk_method="noaux_tc", scoring_func="sigmoid", mhc=False, mla_use_nope=True, indexer_rope_interleave=False)
    text.update(index_topk=8, index_n_heads=2, index_head_dim=16, index_kpool=4, routed_scaling_factor=1.0)
    config = {"architectures": ["Glm5NextForConditionalGeneration"], "model_type": "glm5_next", "tie_word_embeddings": False}
    return {**config, "text_config": {**_text(spec), **text}}


def _kimi_k3(spec: FamilySpec) -> dict[str, Any]:
    """The multimodal release's shape: a `KimiLinearConfig` under `text_config` (vLLM 0.33.0
    transformers_utils/configs/kimi_k3.py:86-111, speculative.py:785-793), KDA backbone layers with
    the last one MLA, gated NoPE MLA and a latent MoE. No vision tower."""
    mla = {
        key: value for key, value in _mla_moe(spec).items() if key not in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok")
    }
    text = {
        "model_type": "kimi_linear",
        **_text(spec),
        **mla,
        "mla_use_nope": True,
        "mla_use_output_gate": True,
        "routed_expert_hidden_size": 32,
        "latent_moe_use_norm": True,
        "num_experts": spec.experts,
        "num_experts_per_token": 2,
        "num_shared_experts": 1,
        "moe_layer_freq": 1,
        "hidden_act": "silu",
        "linear_attn_config": {
            "kda_layers": list(range(1, spec.num_hidden_layers)),
            "full_attn_layers": [spec.num_hidden_layers],
            "use_full_rank_gate": True,
        },
    }
    return {"architectures": ["KimiK3ForConditionalGeneration"], "model_type": "kimi_k3", "tie_word_embeddings": False, "text_config": text}


def _minimax_m3(spec: FamilySpec) -> dict[str, Any]:
    """The VL release's shape: the text model, MTP count and indexer widths included, under `text_config`
    (vLLM 0.33.0 promotes it: speculative.py:1117-1133; fields read by minimax_m3/nvidia/model.py). No vision tower."""
    text = {
        "model_type": "minimax_m3_text",
        **_text(spec),
        "num_mtp_modules": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "swigluoai",
        "intermediate_size": 24,
        "num_local_experts": spec.experts,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "scoring_func": "sigmoid",
        "use_routing_bias": True,
        "sparse_attention_config": {"sparse_index_dim": 16, "sparse_num_index_heads": 2, "sparse_topk_blocks": 4, "sparse_block_size": 16},
    }
    return {
        "architectures": ["MiniMaxM3SparseForConditionalGeneration"],
        "model_type": "minimax_m3_vl",
        "tie_word_embeddings": False,
        "text_config": text,
    }


def _nemotron_h(spec: FamilySpec) -> dict[str, Any]:
    """The fields vLLM 0.33.0's nemotron_h.py / nemotron_h_mtp.py read, in the legacy pattern form
    (`hybrid_override_pattern`, `mtp_hybrid_override_pattern`) that transformers still accepts."""
    config = {
        "architectures": ["NemotronHForCausalLM"],
        "model_type": "nemotron_h",
        **_text(spec),
        "layer_norm_epsilon": 1e-05,
        "hybrid_override_pattern": ("M*ME" * spec.num_hidden_layers)[: spec.num_hidden_layers],
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "mtp_hybrid_override_pattern": "*E",
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "mamba_num_heads": 8,
        "mamba_head_dim": 16,
        "ssm_state_size": 16,
        "n_groups": 1,
        "mlp_hidden_act": "relu2",
        "mlp_bias": False,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "moe_intermediate_size": 24,
        "moe_shared_expert_intermediate_size": 24,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 1.0,
    }
    config.pop("rms_norm_eps")
    if spec.moe_latent_size is not None:
        config["moe_latent_size"] = spec.moe_latent_size
    return config


def _deepseek_v4(spec: FamilySpec) -> dict[str, Any]:
    """The fields transformers 5.20.2's DeepseekV4Config declares and vLLM 0.33.0's V4 MTP layer reads
    (nvidia/mtp.py:90-134, nvidia/model.py:220-339, 595-621, attention.py:216-243), plus `topk_method`."""
    return {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        **_text(spec),
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "q_lora_rank": 32,
        "partial_rotary_factor": 0.25,
        "o_groups": 2,
        "o_lora_rank": 8,
        "moe_intermediate_size": 24,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "scoring_func": "sqrtsoftplus",
        "topk_method": "noaux_tc",
        "norm_topk_prob": True,
        "routed_scaling_factor": 1.5,
        "swiglu_limit": 10.0,
        "hidden_act": "silu",
        "hc_mult": 2,
        "hc_sinkhorn_iters": 20,
        "hc_eps": 1e-06,
        "sliding_window": 128,
        "layer_types": ["heavily_compressed_attention", "compressed_sparse_attention"] * (spec.num_hidden_layers // 2)
        + ["heavily_compressed_attention"] * (spec.num_hidden_layers % 2),
        "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        "mlp_layer_types": ["hash_moe"] + ["moe"] * (spec.num_hidden_layers - 1),
        "index_n_heads": 2,
        "index_head_dim": 16,
        "index_topk": 8,
    }


CONFIGS: dict[str, Callable[[FamilySpec], dict[str, Any]]] = {
    "deepseek_v3": _deepseek_v3,
    "deepseek_v32": _deepseek_v32,
    "glm4_moe": _glm4_moe,
    "glm4_moe_lite": _glm4_moe_lite,
    "qwen3_next": _qwen3_next,
    "mimo": _mimo,
    "qwen3_5": lambda spec: _qwen3_5(spec, moe=False),
    "qwen3_5_moe": lambda spec: _qwen3_5(spec, moe=True),
    "glm5_next": _glm5_next,
    "kimi_k3": _kimi_k3,
    "minimax_m3": _minimax_m3,
    "nemotron_h": _nemotron_h,
    "deepseek_v4": _deepseek_v4,
}
NVFP4_CONFIG = {
    "quant_method": "modelopt",
    "quant_algo": "NVFP4",
    "group_size": 16,
    "kv_cache_quant_algo": "FP8",
    "ignore": ["lm_head"],
}
# The exclude entry that keeps each family's MTP unquantized, in vLLM module names (the form
# nvidia/DeepSeek-R1-FP4 uses, `model.layers.61*`); MiMo's modules are `model.layers.{nh+i}`.
MTP_EXCLUDES = {
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
}
QUANT_FORMS = ("modelopt", "compressed-tensors", "fp8")


def quantization_config(family_name: str, spec: FamilySpec, *, form: str = "modelopt", mtp_excluded: bool = True) -> dict[str, Any]:
    """A target's `quantization_config` in one of vLLM's three exclude-list forms, covering the MTP or not."""
    pattern = MTP_EXCLUDES[family_name].format(nh=spec.num_hidden_layers)
    if form == "modelopt":
        return {**NVFP4_CONFIG, "ignore": ["lm_head", *([pattern] if mtp_excluded else [])]}
    if form == "compressed-tensors":
        regex = "re:" + pattern.replace(".", "\\.").replace("*", ".*")
        return {
            "quant_method": "compressed-tensors",
            "format": "nvfp4-pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "float", "group_size": 16}}},
            "ignore": ["lm_head", *([regex] if mtp_excluded else [])],
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
    family_name: str, spec: FamilySpec = FamilySpec(), *, quantized: bool = False, form: str = "modelopt", mtp_excluded: bool = True
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


def write_family_source(folder: Path, family_name: str, spec: FamilySpec = FamilySpec()) -> Path:
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
    spec: FamilySpec = FamilySpec(),
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
