"""Qwen3-Next: one MTP block under `mtp.` (fc, two pre-fc norms, a final norm) and `mtp.layers.{i}.`.

Facts: shared/facts/step3p7-mtp.md §9 (Qwen3-Next row). vLLM's `Qwen3NextMTP` renames `mtp.` to
`model.` and reads the embedding and `lm_head` by name; both are shared with the target, so the
draft ships BF16 copies of the source's (as Step ships its embedding) for a loader that insists
on every parameter. The MTP layers count from 0, and vLLM assumes one layer when the config lacks
`num_nextn_predict_layers`, as the released config appears to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.families.base import Attention, ExtraTensor, Family, Geometry, LayerTensor, LoaderRules, optional_flag, require_int
from pipeline.families.common import (
    EMBED_AND_HEAD_COPIES,
    EXPERT_FUSION_EXEMPT,
    EXPERT_RENAMES,
    GATE_UP_FUSIONS,
    QKV_FUSIONS,
    gqa_attention,
    layer_norms,
    routed_experts,
    shared_experts,
)

FULL = "full_attention"
COUNT_KEY = "num_nextn_predict_layers"
COUNT_DEFAULT = 1  # vLLM's hf_config_override default (facts §9)


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat Qwen3-Next config; the MTP layer is full attention with a gated query."""
    heads = require_int(config, "num_attention_heads")
    hidden_size = require_int(config, "hidden_size")
    flags = {"qk_norm"} | ({"attn_output_gate"} if optional_flag(config, "attn_output_gate", True) else set())
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, COUNT_KEY, default=COUNT_DEFAULT),
        intermediate_size=require_int(config, "intermediate_size"),
        attention={
            FULL: Attention(
                heads, require_int(config, "num_key_value_heads"), require_int(config, "head_dim", default=hidden_size // heads)
            )
        },
        layer_types=(),
        first_mtp_layer=0,
        num_experts=require_int(config, "num_experts"),
        sizes={
            "moe_intermediate_size": require_int(config, "moe_intermediate_size"),
            "shared_intermediate_size": require_int(config, "shared_expert_intermediate_size"),
        },
        flags=frozenset(flags),
    )


def _block(name: str, shape: Callable[[Geometry], tuple[int, ...]]) -> ExtraTensor:
    """A tensor of the MTP block outside its layers; the loader reads `mtp.X` into `model.X`."""
    return ExtraTensor(f"mtp.{name}", shape, (f"mtp.{name}",), f"model.{name}")


def _width(g: Geometry) -> tuple[int, ...]:
    return (g.hidden_size,)


def _fc(g: Geometry) -> tuple[int, ...]:
    return (g.hidden_size, 2 * g.hidden_size)  # over [embedding, hidden]


QWEN3_NEXT = Family(
    name="qwen3_next",
    summary="Qwen3-Next: the mtp.* block (fc, norms, 1 MoE layer) plus copies of embed_tokens and lm_head",
    vllm_class="Qwen3NextMTP",
    route_model_types=("qwen3_next",),
    route_architectures=(),
    source_prefixes=("mtp.layers.{layer}.",),
    output_prefix="mtp.layers.{layer}.",
    layer_tensors=(
        *layer_norms(""),
        *gqa_attention("", gated_query=True),
        *routed_experts("", router_bias=False),
        *shared_experts("", "shared_expert"),
        LayerTensor("mlp.shared_expert_gate.weight", lambda g, a: (1, g.hidden_size), "mlp.shared_expert_gate.weight"),
    ),
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    loader=LoaderRules(
        skip_substrings=("rotary_emb.inv_freq",),
        layer_prefixes=(),
        keep_substrings=("embed_tokens", "lm_head"),
        block_exempt=(),
        block_infix="",
        fusions=QKV_FUSIONS + GATE_UP_FUSIONS,
        fusion_exempt=EXPERT_FUSION_EXEMPT,
        renames=(),
        embed_marker="embed_tokens",
        embed_param="model.embed_tokens.weight",
        keep_prefixes=("mtp.",),
        pattern_renames=EXPERT_RENAMES,
        prefix_renames=(("mtp.", "model."),),
    ),
    read_geometry=read_geometry,
    block_tensors=(
        _block("fc.weight", _fc),
        _block("pre_fc_norm_embedding.weight", _width),
        _block("pre_fc_norm_hidden.weight", _width),
        _block("norm.weight", _width),
    ),
    block_prefix="mtp.",
    param_prefix="model.layers.{layer}.",
    count_key=COUNT_KEY,
    count_default=COUNT_DEFAULT,
    facts=(
        "facts §9: model_type qwen3_next routes to qwen3_next_mtp (Qwen3NextMTP); mtp. is remapped to model.",
        "facts §9: vLLM reads num_nextn_predict_layers with default 1; the released config appears to lack it (unverified), so 1 is assumed",
        "facts §9: tensors mtp.fc [H, 2H], mtp.pre_fc_norm_{embedding,hidden}, mtp.norm and mtp.layers.0.* (full attention, routed and shared experts)",
        "facts §9: embedding and lm_head are shared with the target; the copies ship for the loader's name check",
        "unverified: q_proj projects query and gate together (2 x heads x head_dim rows) when attn_output_gate is true, its default",
        "unverified: a checkpoint with more than one MTP layer numbers them mtp.layers.{0..n-1} under one shared fc and norms",
    ),
    card_notes=(
        "vLLM assumes one MTP layer when the config has no `num_nextn_predict_layers`; set `num_speculative_tokens` explicitly.",
        "`mtp.fc` must stay unquantized; vLLM already forces it so under `modelopt_fp4`.",
        "The draft ships BF16 copies of the source's `embed_tokens` and `lm_head`; the MTP block shares both with the target at run time.",
    ),
)
