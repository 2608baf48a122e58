"""Tiny config.json builders, one per non-Step family: the fields vLLM 0.33.0 reads, at toy widths.

Each builder takes the shared `FamilySpec` and adds its family's own keys; the sources cite the
files that read them. `pipeline.rehearsal.synthetic_families` writes checkpoints around them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.families import FAMILIES


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


def _mimo_v2(spec: FamilySpec) -> dict[str, Any]:
    """MiMo-V2-Flash's flat shape: the fields vLLM 0.33.0's MTP layer reads (mimo_v2_mtp.py:72-119), with
    values narrower than keys and the attention sink on; the backbone's global-attention widths are left out."""
    return {
        "architectures": ["MiMoV2FlashForCausalLM"],
        "model_type": "mimo_v2_flash",
        **_text(spec),
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "layernorm_epsilon": 1e-05,
        "hidden_act": "silu",
        "intermediate_size": 96,
        "attention_bias": False,
        "swa_num_attention_heads": 4,
        "swa_num_key_value_heads": 2,
        "swa_head_dim": 16,
        "swa_v_head_dim": 8,
        "add_swa_attention_sink_bias": True,
        "sliding_window_size": 128,
    }


def _qwen4_exp(spec: FamilySpec) -> dict[str, Any]:
    """The multimodal release's shape, the text model under `text_config` (no vision tower): the fields
    vLLM 0.33.0's qwen4_exp/nvidia/mtp.py, model.py, qsa.py and indexer_qsa.py read, and the count
    speculative.py:915-935 reads. Two hyper-connection streams; PLE on backbone layer 1 only."""
    text = {
        "model_type": "qwen4_exp_text",
        **_text(spec),
        "mtp_num_hidden_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "layer_types": ["linear_attention"] * (spec.num_hidden_layers - 1) + ["qwen_sparse_attention"],
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 24,
        "num_experts": spec.experts,
        "num_experts_per_tok": 2,
        "hc_count": 2,
        "hc_lowrank": 8,
        "indexer_n_heads": 2,
        "indexer_kv_heads": 1,
        "indexer_head_dim": 16,
        "indexer_budget": 8,
        "indexer_compress_ratio": 4,
        "ple_layer_ids": [1],
    }
    return {
        "architectures": ["Qwen4ExpForConditionalGeneration"],
        "model_type": "qwen4_exp",
        "tie_word_embeddings": False,
        "text_config": text,
    }


def _step5(spec: FamilySpec) -> dict[str, Any]:
    """The fields vLLM 0.33.0's Step5Config (transformers_utils/configs/step5.py:55-208) and the Step5
    decoder (vllm/models/step5/nvidia/model.py:1826-1972) read. Every fourth layer is full attention,
    so MTP layer 4 takes the sparse indexer (whose widths config.py:140-177 and model.py:372-431 fix:
    proxy 256, one index key head, one provider group per KV head, 4 query heads per KV head) and a
    second MTP layer, 5, sliding attention with its own head count."""
    total = spec.num_hidden_layers + spec.num_mtp_layers
    layer_types = ["full_attention" if layer % 4 == 0 else "sliding_attention" for layer in range(total)]
    return {
        "architectures": ["Step5ForCausalLM"],
        "model_type": "step5",
        **_text(spec),
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "intermediate_size": 96,
        "num_attention_heads": 4,
        "num_attention_groups": 1,
        "head_dim": 128,
        "att_impl_type": "GQA",
        "use_head_wise_attn_gate": True,
        "zero_centered": True,
        "norm_dtype": "bf16",
        "fp32_residual_connection": False,
        "rope_theta": 10000.0,
        "sliding_window": 128,
        "attention_other_setting": {
            "attention_type": "sliding_attention",
            "num_attention_heads": 8,
            "num_attention_groups": 2,
            "head_dim": 16,
        },
        "layer_types": layer_types[: spec.num_hidden_layers],
        "layer_types_with_mtp": layer_types,
        "partial_rotary_factors": [0.5] * total,
        "use_moe": True,
        "moe_layers_enum": ",".join(str(layer) for layer in range(1, spec.num_hidden_layers)),
        "moe_num_experts": spec.experts,
        "moe_intermediate_size": 24,
        "moe_top_k": 2,
        "sparse_config": {
            "proxy_dim": 256,
            "sparse_indexer_num_heads": 2,
            "sparse_indexer_num_k_heads": 1,
            "index_tp_size": 1,
            "sparse_indexer_rope_dim": 32,
            "topk": 512,
            "region_block_size": 8,
        },
    }


def _longcat_flash(spec: FamilySpec) -> dict[str, Any]:
    """The fields transformers 5.20.2's LongcatFlashConfig declares (configuration_longcat_flash.py:85-115)
    and vLLM 0.33.0 reads (longcat_flash.py:91-101, 148-322; longcat_flash_mtp.py:38-150). The spec's
    num_hidden_layers counts attention sublayers, as transformers derives it: num_layers is half."""
    text = {key: value for key, value in _text(spec).items() if key != "num_hidden_layers"}
    config: dict[str, Any] = {
        "architectures": ["LongcatFlashForCausalLM"],
        "model_type": "longcat_flash",
        **text,
        "num_layers": spec.num_hidden_layers // 2,
        **{
            key: _mla_moe(spec)[key]
            for key in ("num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        },
        "mla_scale_q_lora": True,
        "mla_scale_kv_lora": True,
        "hidden_act": "silu",
        "ffn_hidden_size": 96,
        "expert_ffn_hidden_size": 24,
        "n_routed_experts": spec.experts,
        "zero_expert_num": 2,
        "zero_expert_type": "identity",
        "moe_topk": 2,
        "routed_scaling_factor": 6.0,
    }
    if spec.num_mtp_layers != FAMILIES["longcat_flash"].count_default:
        config["num_nextn_predict_layers"] = spec.num_mtp_layers
    return config


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
    "mimo_v2": _mimo_v2,
    "qwen4_exp": _qwen4_exp,
    "step5": _step5,
    "longcat_flash": _longcat_flash,
}
