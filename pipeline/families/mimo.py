"""Xiaomi MiMo-7B: MTP layers under `model.mtp_layers.{i}.*`, each a Qwen2 decoder layer plus input norms.

Facts: shared/facts/vllm-loaders.md §1-§2, re-read in vLLM 0.33.0's `mimo_mtp.py`. The
checkpoint counts the MTP layers from 0 (`model.mtp_layers.i.*`); vLLM 0.33.0 builds them from the
target's config and numbers its parameters `model.mtp_layers.{num_hidden_layers + i}.` with
`.mtp_block.` before the decoder part, and its modules `model.layers.{num_hidden_layers + i}.*`.
The embedding and `lm_head` are the target's; copies ship only with `shared_weights: copy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import Attention, Family, Geometry, LayerTensor, QuantModule, require_int
from pipeline.families.common import (
    EMBED_AND_HEAD_COPIES,
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


# vLLM module prefixes: each layer is built under `model.layers.{num_hidden_layers + i}` and its
# Qwen2 decoder gets that prefix (mimo_mtp.py:59-64, 104-118); lm_head has no quant_config (:160-164).
# Exclude lists are matched against these names, not against the checkpoint's `model.mtp_layers.i`.
LAYER = "model.layers.{layer}."
QUANT_MODULES = (
    QuantModule(f"{LAYER}self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj")),
    QuantModule(f"{LAYER}self_attn.o_proj"),
    QuantModule(f"{LAYER}mlp.gate_up_proj", "linear", ("gate_proj", "up_proj")),
    QuantModule(f"{LAYER}mlp.down_proj"),
)
BLOCK = "mtp_block."

MIMO = Family(
    name="mimo",
    summary="MiMo-7B: model.mtp_layers.{i}.* (dense Qwen2 layer plus input norms); embed_tokens and lm_head are optional copies",
    vllm_class="MiMoMTP",
    route_model_types=(),
    route_architectures=("MiMoForCausalLM",),
    source_prefixes=("model.mtp_layers.{layer}.",),
    output_prefix="model.mtp_layers.{layer}.",
    layer_tensors=(
        LayerTensor("token_layernorm.weight", hidden, "token_layernorm.weight"),
        LayerTensor("hidden_layernorm.weight", hidden, "hidden_layernorm.weight"),
        LayerTensor("input_proj.weight", concat_proj, "input_proj.weight"),
        LayerTensor("final_layernorm.weight", hidden, "final_layernorm.weight"),
        *layer_norms(BLOCK),
        *gqa_attention(BLOCK),
        LayerTensor("mlp.gate_proj.weight", rows("intermediate_size"), f"{BLOCK}mlp.gate_up_proj.weight"),
        LayerTensor("mlp.up_proj.weight", rows("intermediate_size"), f"{BLOCK}mlp.gate_up_proj.weight"),
        LayerTensor("mlp.down_proj.weight", cols("intermediate_size"), f"{BLOCK}mlp.down_proj.weight"),
    ),
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=loader_names.mimo_mtp,
    read_geometry=read_geometry,
    param_layer_after_backbone=True,
    quant_modules=QUANT_MODULES,
    unknown_name_error="ValueError",
    vllm_file="mimo_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:795-804: architectures[0] == MiMoForCausalLM routes to MiMoMTP (architecture MiMoMTPModel); the override's num_hidden_layers: 0 does not renumber the module, which reads the target's config",
        "vLLM 0.33.0 mimo_mtp.py:165-186 and :213-222: keeps names with mtp_layers, embed_tokens or lm_head; model.mtp_layers.i. becomes model.mtp_layers.{num_hidden_layers+i}. with .mtp_block. before self_attn, mlp and the two decoder norms; q/k/v and gate/up fuse",
        "vLLM 0.33.0 mimo_mtp.py:104-118: the modules are model.layers.{num_hidden_layers+i}.*, so the target's exclude list must name those, not model.mtp_layers.i",
        "vLLM 0.33.0 mimo_mtp.py:200: only the first MTP step (spec_step_idx 0) is supported",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and lm_head are replaced by the target's",
    ),
    card_notes=(
        "MiMo's MTP concatenates [hidden, embedding], the opposite order of DeepSeek and Step; a port to another runtime must keep it.",
        "vLLM supports only the first MTP step (`spec_step_idx == 0`) for MiMo.",
        "vLLM builds the MTP layers with the target's quantization config as `model.layers.{num_hidden_layers + i}.*`: they load in BF16 only if the target's exclude list covers those names.",
    ),
)
