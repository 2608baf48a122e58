"""Xiaomi MiMo-7B: MTP layers under `model.mtp_layers.{i}.*`, each a Qwen2 decoder layer plus input norms.

Facts: shared/facts/step3p7-mtp.md §9 (MiMo row). vLLM routes `architectures[0] ==
"MiMoForCausalLM"` to `mimo_mtp` and sets `num_hidden_layers: 0` in the draft config it builds, so
the MTP layers count from 0 and keep their checkpoint names. The embedding and `lm_head` are
shared with the target; the draft ships BF16 copies of the source's for the loader's name check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families.base import Attention, Family, Geometry, LayerTensor, LoaderRules, require_int
from pipeline.families.common import (
    EMBED_AND_HEAD_COPIES,
    GATE_UP_FUSIONS,
    QKV_FUSIONS,
    cols,
    concat_proj,
    gqa_attention,
    hidden,
    layer_norms,
    rows,
)

FULL = "full_attention"


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat MiMo config; Qwen2 attention has q/k/v biases and head_dim = hidden / heads."""
    hidden_size = require_int(config, "hidden_size")
    heads = require_int(config, "num_attention_heads")
    intermediate = require_int(config, "intermediate_size")
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, "num_nextn_predict_layers"),
        intermediate_size=intermediate,
        attention={
            FULL: Attention(
                heads, require_int(config, "num_key_value_heads"), require_int(config, "head_dim", default=hidden_size // heads)
            )
        },
        layer_types=(),
        first_mtp_layer=0,
        sizes={"intermediate_size": intermediate},
        flags=frozenset({"attention_bias"}),
    )


MIMO = Family(
    name="mimo",
    summary="MiMo-7B: model.mtp_layers.{i}.* (dense Qwen2 layer plus input norms) plus copies of embed_tokens and lm_head",
    vllm_class="MiMoMTPModel",
    route_model_types=(),
    route_architectures=("MiMoForCausalLM",),
    source_prefixes=("model.mtp_layers.{layer}.",),
    output_prefix="model.mtp_layers.{layer}.",
    layer_tensors=(
        LayerTensor("token_layernorm.weight", hidden, "token_layernorm.weight"),
        LayerTensor("hidden_layernorm.weight", hidden, "hidden_layernorm.weight"),
        LayerTensor("input_proj.weight", concat_proj, "input_proj.weight"),
        LayerTensor("final_layernorm.weight", hidden, "final_layernorm.weight"),
        *layer_norms(""),
        *gqa_attention(""),
        LayerTensor("mlp.gate_proj.weight", rows("intermediate_size"), "mlp.gate_up_proj.weight"),
        LayerTensor("mlp.up_proj.weight", rows("intermediate_size"), "mlp.gate_up_proj.weight"),
        LayerTensor("mlp.down_proj.weight", cols("intermediate_size"), "mlp.down_proj.weight"),
    ),
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    loader=LoaderRules(
        skip_substrings=("rotary_emb.inv_freq",),
        layer_prefixes=("model.mtp_layers.{layer}.",),
        keep_substrings=("embed_tokens", "lm_head"),
        block_exempt=(),
        block_infix="",
        fusions=QKV_FUSIONS + GATE_UP_FUSIONS,
        fusion_exempt=(),
        renames=(),
        embed_marker="embed_tokens",
        embed_param="model.embed_tokens.weight",
    ),
    read_geometry=read_geometry,
    facts=(
        "facts §9: architectures[0] == MiMoForCausalLM routes to mimo_mtp; the override sets num_hidden_layers: 0",
        "facts §9: tensors model.mtp_layers.{i}.{token_layernorm,hidden_layernorm,input_proj,final_layernorm} plus a Qwen2 decoder layer with q/k/v biases",
        "facts §9: embedding and lm_head are shared with the target; the copies ship for the loader's name check",
        "unverified: the class name MiMoMTPModel, and the loader's exact parameter names; the replay keeps model.mtp_layers.{i}.* and fuses q/k/v and gate/up only",
    ),
    card_notes=(
        "MiMo's MTP concatenates [hidden, embedding], the opposite order of DeepSeek and Step; a port to another runtime must keep it.",
        "vLLM supports only the first MTP step (`spec_step_idx == 0`) for MiMo.",
        "The draft ships BF16 copies of the source's `embed_tokens` and `lm_head`; the MTP layers share both with the target at run time.",
    ),
)
