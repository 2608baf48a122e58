"""GLM-4.5 / 4.7 (`Glm4MoeForCausalLM`): one MTP layer at `num_hidden_layers` (92; GLM-4.5-Air 46).

Facts: shared/facts/vllm-loaders.md §1-§3, re-read in vLLM 0.33.0's `glm4_moe_mtp.py`. The
layout is DeepSeek's nextn layer with GQA attention (q/k/v biases under `attention_bias`, q/k
norms under `use_qk_norm`) and routed plus shared experts. GLM-4.6 ships neither the layer's
`embed_tokens` nor `shared_head.head`; vLLM 0.33.0 does not need them (it uses the target's), and
with `shared_weights: copy` the top-level `model.embed_tokens` / `lm_head` stand in for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import Attention, Family, Geometry, QuantModule, optional_flag, require_int
from pipeline.families.common import (
    NEXTN_HEAD_MODULE,
    gqa_attention,
    layer_norms,
    moe_quant_modules,
    nextn_head,
    routed_experts,
    shared_experts,
)

FULL = "full_attention"
BLOCK = "mtp_block."


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat GLM-4.5 config (its `head_dim` is explicit: 128 with 96 heads of a 5120 width)."""
    hidden_size = require_int(config, "hidden_size")
    heads = require_int(config, "num_attention_heads")
    moe = require_int(config, "moe_intermediate_size")
    flags = {name for name, key in (("attention_bias", "attention_bias"), ("qk_norm", "use_qk_norm")) if optional_flag(config, key, False)}
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, "num_nextn_predict_layers"),
        intermediate_size=require_int(config, "intermediate_size"),
        attention={FULL: Attention(heads, require_int(config, "num_key_value_heads"), require_int(config, "head_dim"))},
        layer_types=(),
        num_experts=require_int(config, "n_routed_experts"),
        sizes={"moe_intermediate_size": moe, "shared_intermediate_size": moe * require_int(config, "n_shared_experts")},
        flags=frozenset(flags),
    )


# vLLM module prefixes: the decoder layer gets the layer's prefix, no `.mtp_block.` (glm4_moe_mtp.py:98-104).
LAYER = "model.layers.{layer}."
QUANT_MODULES = (
    QuantModule(f"{LAYER}self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj")),
    QuantModule(f"{LAYER}self_attn.o_proj"),
    *moe_quant_modules(LAYER, "shared_experts"),
    NEXTN_HEAD_MODULE,
)

GLM4_MOE = Family(
    name="glm4_moe",
    summary="GLM-4.5/4.6/4.7: 1 MoE MTP layer at num_hidden_layers (92); its embed_tokens and shared_head.head are optional copies",
    vllm_class="Glm4MoeMTP",
    route_model_types=(),
    route_architectures=("Glm4MoeForCausalLM",),
    source_prefixes=("model.layers.{layer}.",),
    output_prefix="model.layers.{layer}.",
    layer_tensors=(
        *nextn_head(top_level_fallbacks=True),
        *layer_norms(BLOCK),
        *gqa_attention(BLOCK),
        *routed_experts(BLOCK, router_bias=True),
        *shared_experts(BLOCK, "shared_experts"),
    ),
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=loader_names.glm4_moe_mtp,
    read_geometry=read_geometry,
    quant_modules=QUANT_MODULES,
    vllm_file="glm4_moe_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:848-856: architectures[0] == Glm4MoeForCausalLM routes to Glm4MoeMTP (architecture Glm4MoeMTPModel)",
        "vLLM 0.33.0 glm4_moe_mtp.py:273-283: model.layers.{num_hidden_layers+i}. is read, plus top-level lm_head.weight (into the layer's shared_head.head) and model.embed_tokens.weight (PR #27597), so a GLM-4.6 source works",
        "vLLM 0.33.0 glm4_moe_mtp.py:249-269: q/k/v fuse into qkv_proj, gate/up into gate_up_proj; routed experts load into experts.routed_experts.{w13,w2}_weight",
        "vLLM 0.33.0 glm4_moe.py:141-150: the router's e_score_correction_bias is always built",
        "vLLM 0.33.0 llm_base_proposer.py:1265-1315: the module is built with the target's quant_config, so the target's exclude list must cover model.layers.{num_hidden_layers}",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and shared_head.head are replaced by the target's",
        "unverified: that GLM-4.7 keeps GLM-4.5's layout",
    ),
    card_notes=(
        "vLLM reads only `model.layers.{num_hidden_layers}.*` from this draft and builds it with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers that layer.",
        "vLLM replaces the layer's `embed_tokens` and `shared_head.head` with the target's after loading; GLM-4.6, which ships neither, is a valid source.",
    ),
)
