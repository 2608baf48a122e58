"""DeepSeek-V3 / R1: one MTP layer stored as decoder layer `num_hidden_layers` (61), a full MoE layer.

Facts: shared/facts/step3p7-mtp.md §9 (DeepSeek row and the `get_spec_layer_idx_from_weight_name`
note) and §6 (the `.mtp_block.` rule, shared embeddings). The layer carries its own `embed_tokens`
and `shared_head.head` [vocab, hidden], MLA attention and routed plus shared experts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families.base import Attention, Family, Geometry, LayerTensor, require_int
from pipeline.families.common import (
    GATE_UP_FUSIONS,
    NEXTN_HEAD,
    layer_norms,
    nextn_loader,
    read_sizes,
    routed_experts,
    shared_experts,
)

FULL = "full_attention"
BLOCK = "mtp_block."
MLA_SIZES = {
    "q_lora_rank": "q_lora_rank",
    "kv_lora_rank": "kv_lora_rank",
    "qk_nope_head_dim": "qk_nope_head_dim",
    "qk_rope_head_dim": "qk_rope_head_dim",
    "v_head_dim": "v_head_dim",
    "moe_intermediate_size": "moe_intermediate_size",
}


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat DeepSeek-V3 config; MLA ranks and expert sizes go into `sizes`."""
    heads = require_int(config, "num_attention_heads")
    sizes = read_sizes(config, MLA_SIZES)
    sizes["shared_intermediate_size"] = sizes["moe_intermediate_size"] * require_int(config, "n_shared_experts")
    return Geometry(
        hidden_size=require_int(config, "hidden_size"),
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, "num_nextn_predict_layers"),
        intermediate_size=require_int(config, "intermediate_size"),
        attention={FULL: Attention(heads, heads, sizes["v_head_dim"])},
        layer_types=(),
        num_experts=require_int(config, "n_routed_experts"),
        sizes=sizes,
    )


def _q_b(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.heads * (g.sizes["qk_nope_head_dim"] + g.sizes["qk_rope_head_dim"]), g.sizes["q_lora_rank"])


def _kv_a(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.sizes["kv_lora_rank"] + g.sizes["qk_rope_head_dim"], g.hidden_size)


def _kv_b(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.heads * (g.sizes["qk_nope_head_dim"] + g.sizes["v_head_dim"]), g.sizes["kv_lora_rank"])


# Multi-head latent attention (facts §9: q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj).
MLA = (
    LayerTensor("self_attn.q_a_proj.weight", lambda g, a: (g.sizes["q_lora_rank"], g.hidden_size), f"{BLOCK}self_attn.q_a_proj.weight"),
    LayerTensor("self_attn.q_a_layernorm.weight", lambda g, a: (g.sizes["q_lora_rank"],), f"{BLOCK}self_attn.q_a_layernorm.weight"),
    LayerTensor("self_attn.q_b_proj.weight", _q_b, f"{BLOCK}self_attn.q_b_proj.weight"),
    LayerTensor("self_attn.kv_a_proj_with_mqa.weight", _kv_a, f"{BLOCK}self_attn.kv_a_proj_with_mqa.weight"),
    LayerTensor("self_attn.kv_a_layernorm.weight", lambda g, a: (g.sizes["kv_lora_rank"],), f"{BLOCK}self_attn.kv_a_layernorm.weight"),
    LayerTensor("self_attn.kv_b_proj.weight", _kv_b, f"{BLOCK}self_attn.kv_b_proj.weight"),
    LayerTensor(
        "self_attn.o_proj.weight", lambda g, a: (g.hidden_size, a.heads * g.sizes["v_head_dim"]), f"{BLOCK}self_attn.o_proj.weight"
    ),
)

DEEPSEEK_V3 = Family(
    name="deepseek_v3",
    summary="DeepSeek-V3/R1: 1 MoE MTP layer at num_hidden_layers (61) with its own embed_tokens and shared_head.head",
    vllm_class="DeepSeekMTPModel",
    route_model_types=("deepseek_v3", "deepseek_v32", "glm_moe_dsa"),
    route_architectures=(),
    source_prefixes=("model.layers.{layer}.",),
    output_prefix="model.layers.{layer}.",
    layer_tensors=(
        *NEXTN_HEAD,
        *layer_norms(BLOCK),
        *MLA,
        *routed_experts(BLOCK, router_bias=True),
        *shared_experts(BLOCK, "shared_experts"),
    ),
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    loader=nextn_loader(GATE_UP_FUSIONS),
    read_geometry=read_geometry,
    facts=(
        "facts §9: SpeculativeConfig routes model_type deepseek_v3, deepseek_v32 or glm_moe_dsa to deepseek_mtp (DeepSeekMTPModel)",
        "facts §9: get_spec_layer_idx_from_weight_name reads only model.layers.{num_hidden_layers+i}.; the backbone and a bare layers. prefix are ignored",
        "facts §9: the MTP layer holds embed_tokens, enorm, hnorm, eh_proj, shared_head.{norm,head} and a full MoE decoder layer; the loader inserts .mtp_block. as for Step",
        "facts §9: the embedding is loaded from the first MTP layer only and becomes model.embed_tokens",
        "vLLM FusedMoE expert mapping: experts.{e}.{gate,up}_proj -> experts.w13_weight, down_proj -> experts.w2_weight (not in the facts sheet)",
        "unverified: newer vLLM fuses q_a_proj and kv_a_proj_with_mqa into fused_qkv_a_proj; the replay keeps them apart, which proves the same coverage",
        "unverified: the official release stores FP8 weights with weight_scale_inv tensors; the family expects a BF16 source and refuses those as unknown MTP tensors",
    ),
    card_notes=(
        "vLLM reads only `model.layers.{num_hidden_layers}.*` from this draft; the layer's `embed_tokens` is loaded as the model embedding and then replaced by the target's.",
        "The MTP layer is a full MoE decoder layer with its own `shared_head.head`; it must load unquantized behind a quantized target.",
    ),
)
