"""GLM-4.5 / 4.7 (`Glm4MoeForCausalLM`): one MTP layer at `num_hidden_layers` (92; GLM-4.5-Air 46).

Facts: shared/facts/step3p7-mtp.md §9 (GLM row). The layout is DeepSeek's nextn layer with GQA
attention (q/k/v biases under `attention_bias`, q/k norms under `use_qk_norm`) and routed plus
shared experts. GLM-4.6 ships neither the layer's `embed_tokens` nor `shared_head.head`; vLLM
0.10.2 refused such a draft as missing parameters, so this family requires both, and a GLM-4.6
source is refused at fetch rather than built into a draft only newer vLLM loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families.base import Attention, Family, Geometry, optional_flag, require_int
from pipeline.families.common import (
    GATE_UP_FUSIONS,
    NEXTN_HEAD,
    QKV_FUSIONS,
    gqa_attention,
    layer_norms,
    nextn_loader,
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


GLM4_MOE = Family(
    name="glm4_moe",
    summary="GLM-4.5/4.7: 1 MoE MTP layer at num_hidden_layers (92) with its own embed_tokens and shared_head.head",
    vllm_class="Glm4MoeMTPModel",
    route_model_types=(),
    route_architectures=("Glm4MoeForCausalLM",),
    source_prefixes=("model.layers.{layer}.",),
    output_prefix="model.layers.{layer}.",
    layer_tensors=(
        *NEXTN_HEAD,
        *layer_norms(BLOCK),
        *gqa_attention(BLOCK),
        *routed_experts(BLOCK, router_bias=True),
        *shared_experts(BLOCK, "shared_experts"),
    ),
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    loader=nextn_loader(QKV_FUSIONS + GATE_UP_FUSIONS),
    read_geometry=read_geometry,
    facts=(
        "facts §9: SpeculativeConfig routes architectures[0] == Glm4MoeForCausalLM to glm4_moe_mtp",
        "facts §9: the GLM loader, like DeepSeek's, reads only model.layers.{num_hidden_layers+i}.",
        "facts §9: GLM-4.5 has the layer's embed_tokens and shared_head.head; GLM-4.6 lacks both and vLLM 0.10.2 refused it",
        "unverified: the class name Glm4MoeMTPModel, and that GLM-4.7 keeps GLM-4.5's layout",
        "unverified: the router's e_score_correction_bias in the MTP layer (as in DeepSeek-V3)",
    ),
    card_notes=(
        "vLLM reads only `model.layers.{num_hidden_layers}.*` from this draft; the layer's `embed_tokens` is loaded as the model embedding and then replaced by the target's.",
        "The draft keeps the layer's own `shared_head.head` and `embed_tokens`, which GLM-4.6 does not ship; vLLM 0.10.2 refused a draft without them.",
    ),
)
