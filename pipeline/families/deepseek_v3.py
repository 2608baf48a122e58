"""DeepSeek-V3 / R1: one MTP layer stored as decoder layer `num_hidden_layers` (61), a full MoE layer.

Facts: shared/facts/vllm-loaders.md §1-§3, re-read in vLLM 0.33.0's `deepseek_mtp.py`. The layer
carries its own `embed_tokens` and `shared_head.head` [vocab, hidden] (both replaced by the
target's in vLLM), MLA attention and routed plus shared experts. The module is built with the
target's quantization config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import Attention, Family, Geometry, LayerTensor, QuantModule, require_int
from pipeline.families.common import (
    NEXTN_HEAD_MODULE,
    layer_norms,
    moe_quant_modules,
    nextn_head,
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


# Multi-head latent attention. vLLM 0.33.0 fuses q_a_proj and kv_a_proj_with_mqa into
# `fused_qkv_a_proj` when q_lora_rank is set (deepseek_v2.py:1051-1065, deepseek_mtp.py:305-310).
FUSED_QKV_A = f"{BLOCK}self_attn.fused_qkv_a_proj.weight"
MLA = (
    LayerTensor("self_attn.q_a_proj.weight", lambda g, a: (g.sizes["q_lora_rank"], g.hidden_size), FUSED_QKV_A),
    LayerTensor("self_attn.q_a_layernorm.weight", lambda g, a: (g.sizes["q_lora_rank"],), f"{BLOCK}self_attn.q_a_layernorm.weight"),
    LayerTensor("self_attn.q_b_proj.weight", _q_b, f"{BLOCK}self_attn.q_b_proj.weight"),
    LayerTensor("self_attn.kv_a_proj_with_mqa.weight", _kv_a, FUSED_QKV_A),
    LayerTensor("self_attn.kv_a_layernorm.weight", lambda g, a: (g.sizes["kv_lora_rank"],), f"{BLOCK}self_attn.kv_a_layernorm.weight"),
    LayerTensor("self_attn.kv_b_proj.weight", _kv_b, f"{BLOCK}self_attn.kv_b_proj.weight"),
    LayerTensor(
        "self_attn.o_proj.weight", lambda g, a: (g.hidden_size, a.heads * g.sizes["v_head_dim"]), f"{BLOCK}self_attn.o_proj.weight"
    ),
)

# vLLM module prefixes of the layer's quantizable modules: the decoder layer gets the layer's own
# prefix, without `.mtp_block.` (deepseek_mtp.py:106-111).
LAYER = "model.layers.{layer}."
MLA_MODULES = (
    QuantModule(f"{LAYER}self_attn.fused_qkv_a_proj", "linear", ("q_a_proj", "kv_a_proj_with_mqa")),
    QuantModule(f"{LAYER}self_attn.q_b_proj"),
    QuantModule(f"{LAYER}self_attn.kv_b_proj"),
    QuantModule(f"{LAYER}self_attn.o_proj"),
)
QUANT_MODULES = (*MLA_MODULES, *moe_quant_modules(LAYER, "shared_experts"), NEXTN_HEAD_MODULE)

DEEPSEEK_V3 = Family(
    name="deepseek_v3",
    summary="DeepSeek-V3/R1: 1 MoE MTP layer at num_hidden_layers (61); its embed_tokens and shared_head.head are optional copies",
    vllm_class="DeepSeekMTP",
    route_model_types=("deepseek_v3",),
    route_architectures=(),
    source_prefixes=("model.layers.{layer}.",),
    output_prefix="model.layers.{layer}.",
    layer_tensors=(
        *nextn_head(),
        *layer_norms(BLOCK),
        *MLA,
        *routed_experts(BLOCK, router_bias=True),
        *shared_experts(BLOCK, "shared_experts"),
    ),
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=loader_names.deepseek_mtp,
    read_geometry=read_geometry,
    quant_modules=QUANT_MODULES,
    vllm_file="deepseek_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:747-763: model_type deepseek_v3 routes to DeepSeekMTP (architecture DeepSeekMTPModel); deepseek_v32 and glm_moe_dsa route to DeepseekV32MTPModel, which this family does not cover",
        "vLLM 0.33.0 utils.py:575-601 and deepseek_mtp.py:341-359: model.layers.{num_hidden_layers+i}. is read; layers.L. and model.language_model.layers.L. are matched too but never renamed, so they end in KeyError",
        "vLLM 0.33.0 deepseek_mtp.py:305-310: q_a_proj and kv_a_proj_with_mqa fuse into fused_qkv_a_proj, gate/up into gate_up_proj; routed experts load into experts.routed_experts.{w13,w2}_weight",
        "vLLM 0.33.0 deepseek_mtp.py:541-570: the layer's embed_tokens becomes model.embed_tokens (first MTP layer only); the rest of the decoder gets .mtp_block.",
        "vLLM 0.33.0 deepseek_mtp.py:345-355: a top-level model.embed_tokens.weight loads as well (facts sheet vllm-loaders.md §3 says only model.layers.N.* loads; the wheel wins)",
        "vLLM 0.33.0 deepseek_mtp.py:520-537: at least one tensor per MTP layer must load",
        "vLLM 0.33.0 v1/spec_decode/llm_base_proposer.py:1265-1315: the module is built with the target's quant_config, so the target's exclude list must cover model.layers.{num_hidden_layers}",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and shared_head.head are replaced by the target's (the embedding only with pipeline parallelism 1)",
        "unverified: the official release stores FP8 weights with weight_scale_inv tensors; the family expects a BF16 source and refuses those as unknown MTP tensors",
    ),
    card_notes=(
        "vLLM reads only `model.layers.{num_hidden_layers}.*` from this draft and builds it with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers that layer.",
        "vLLM replaces the layer's `embed_tokens` and `shared_head.head` with the target's after loading.",
    ),
)
