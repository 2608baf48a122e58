"""Config builders for the families whose MTP layer uses low-rank (latent) attention: DeepSeek-V3 and
V3.2, GLM-4.7-Flash, GLM-5 next, Kimi K3, DeepSeek-V4 and LongCat-Flash; the sources cite the files that read each field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.families import FAMILIES
from pipeline.rehearsal.family_spec import FamilySpec, mla_moe_fields, text_fields


def _deepseek_v3(spec: FamilySpec) -> dict[str, Any]:
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "auto_map": {
            "AutoConfig": "configuration_deepseek.DeepseekV3Config",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
        },
        **text_fields(spec),
        **mla_moe_fields(spec),
        "num_key_value_heads": 4,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
    }


def _glm4_moe_lite(spec: FamilySpec) -> dict[str, Any]:
    """The fields vLLM 0.33.0's glm4_moe_lite.py / glm4_moe.py read; the model type puts it on the MLA list."""
    return {
        "architectures": ["Glm4MoeLiteForCausalLM"],
        "model_type": "glm4_moe_lite",
        **text_fields(spec),
        **mla_moe_fields(spec),
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


def _glm5_next(spec: FamilySpec) -> dict[str, Any]:
    """GLM-5.3-Flash's multimodal shape, the text model under `text_config` (no vision tower): NoPE MLA
    as transformers 5.20.2 requires, and the fields vLLM 0.33.0 reads that transformers does not declare."""
    text = {**mla_moe_fields(spec), "qk_rope_head_dim": 0, "mlp_layer_types": ["dense"] + ["sparse"] * (spec.num_hidden_layers - 1)}
    del text["first_k_dense_replace"]
    text.update(model_type="glm5_next_text", num_key_value_heads=4, hidden_act="silu", n_group=1, topk_group=1, norm_topk_prob=True)
    text.update(topk_method="noaux_tc", scoring_func="sigmoid", mhc=False, mla_use_nope=True, indexer_rope_interleave=False)
    text.update(index_topk=8, index_n_heads=2, index_head_dim=16, index_kpool=4, routed_scaling_factor=1.0)
    config = {"architectures": ["Glm5NextForConditionalGeneration"], "model_type": "glm5_next", "tie_word_embeddings": False}
    return {**config, "text_config": {**text_fields(spec), **text}}


def _kimi_k3(spec: FamilySpec) -> dict[str, Any]:
    """The multimodal release's shape: a `KimiLinearConfig` under `text_config` (vLLM 0.33.0
    transformers_utils/configs/kimi_k3.py:86-111, speculative.py:785-793), KDA backbone layers with
    the last one MLA, gated NoPE MLA and a latent MoE. No vision tower."""
    mla = {
        key: value
        for key, value in mla_moe_fields(spec).items()
        if key not in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok")
    }
    text = {
        "model_type": "kimi_linear",
        **text_fields(spec),
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


def _deepseek_v4(spec: FamilySpec) -> dict[str, Any]:
    """The fields transformers 5.20.2's DeepseekV4Config declares and vLLM 0.33.0's V4 MTP layer reads
    (nvidia/mtp.py:90-134, nvidia/model.py:220-339, 595-621, attention.py:216-243), plus `topk_method`."""
    return {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        **text_fields(spec),
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


def _longcat_flash(spec: FamilySpec) -> dict[str, Any]:
    """The fields transformers 5.20.2's LongcatFlashConfig declares (configuration_longcat_flash.py:85-115)
    and vLLM 0.33.0 reads (longcat_flash.py:91-101, 148-322; longcat_flash_mtp.py:38-150). The spec's
    num_hidden_layers counts attention sublayers, as transformers derives it: num_layers is half."""
    text = {key: value for key, value in text_fields(spec).items() if key != "num_hidden_layers"}
    config: dict[str, Any] = {
        "architectures": ["LongcatFlashForCausalLM"],
        "model_type": "longcat_flash",
        **text,
        "num_layers": spec.num_hidden_layers // 2,
        **{
            key: mla_moe_fields(spec)[key]
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


LATENT_ATTENTION_CONFIGS: dict[str, Callable[[FamilySpec], dict[str, Any]]] = {
    "deepseek_v3": _deepseek_v3,
    "glm4_moe_lite": _glm4_moe_lite,
    "deepseek_v32": _deepseek_v32,
    "glm5_next": _glm5_next,
    "kimi_k3": _kimi_k3,
    "deepseek_v4": _deepseek_v4,
    "longcat_flash": _longcat_flash,
}
