"""Config builders for the families whose MTP layer uses grouped-query attention: GLM-4.x, Qwen3-Next,
Qwen3.5, MiMo, MiniMax-M3, Nemotron-H, MiMo-V2, Qwen4 Exp and Step 5; the sources cite the files that read each field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.families import FAMILIES
from pipeline.rehearsal.family_spec import FamilySpec, text_fields


def _glm4_moe(spec: FamilySpec) -> dict[str, Any]:
    return {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        **text_fields(spec),
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
        **text_fields(spec),
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
        **text_fields(spec),
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
        **text_fields(spec),
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
    }


def _minimax_m3(spec: FamilySpec) -> dict[str, Any]:
    """The VL release's shape: the text model, MTP count and indexer widths included, under `text_config`
    (vLLM 0.33.0 promotes it: speculative.py:1117-1133; fields read by minimax_m3/nvidia/model.py). No vision tower."""
    text = {
        "model_type": "minimax_m3_text",
        **text_fields(spec),
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
        **text_fields(spec),
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


def _mimo_v2(spec: FamilySpec) -> dict[str, Any]:
    """MiMo-V2-Flash's flat shape: the fields vLLM 0.33.0's MTP layer reads (mimo_v2_mtp.py:72-119), with
    values narrower than keys and the attention sink on; the backbone's global-attention widths are left out."""
    return {
        "architectures": ["MiMoV2FlashForCausalLM"],
        "model_type": "mimo_v2_flash",
        **text_fields(spec),
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
        **text_fields(spec),
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
        **text_fields(spec),
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


GROUPED_ATTENTION_CONFIGS: dict[str, Callable[[FamilySpec], dict[str, Any]]] = {
    "glm4_moe": _glm4_moe,
    "qwen3_next": _qwen3_next,
    "qwen3_5": lambda spec: _qwen3_5(spec, moe=False),
    "qwen3_5_moe": lambda spec: _qwen3_5(spec, moe=True),
    "mimo": _mimo,
    "minimax_m3": _minimax_m3,
    "nemotron_h": _nemotron_h,
    "mimo_v2": _mimo_v2,
    "qwen4_exp": _qwen4_exp,
    "step5": _step5,
}
