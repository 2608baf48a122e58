"""Qwen3.5 / Qwen3.6, dense and MoE: Qwen3-Next's `mtp.*` block, counted by `mtp_num_hidden_layers`.

Facts: vLLM 0.33.0's `qwen3_5_mtp.py` and `qwen3_5.py`. `Qwen3_5MTP` and `Qwen3_5MoeMTP` build the
predictor Qwen3-Next has (`mtp.fc`, two pre-fc norms, a final norm, full-attention layers
`mtp.layers.{i}` counted from 0) from the target's text config; the MoE layer is Qwen3-Next's
sparse block, the dense one a gate/up/down MLP. vLLM replaces the embedding and `lm_head` with
the target's, so copies ship only with `shared_weights: copy`. No public checkpoint of either
family has been read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import (
    Attention,
    ExtraTensor,
    Family,
    Geometry,
    LayerTensor,
    QuantModule,
    config_value,
    optional_flag,
    require_int,
)
from pipeline.families.common import cols, gqa_attention, layer_norms, rows
from pipeline.families.qwen3_next import LAYER, QWEN3_NEXT

FULL = "full_attention"
COUNT_KEY = "mtp_num_hidden_layers"
COUNT_DEFAULT = 1  # qwen3_5_mtp.py:82


def _geometry(config: Mapping[str, Any], *, moe: bool) -> Geometry:
    """Geometry from a Qwen3.5 config (the text config of the multimodal release, or a text-only one)."""
    if optional_flag(config, "layer_scale", False):
        where = config_value(config, "layer_scale")[0]
        raise ValueError(f"{where}: per-layer scales (vLLM 0.33.0 qwen3_5.py:195-210) are not in this family's tensor table")
    heads = require_int(config, "num_attention_heads")
    hidden_size = require_int(config, "hidden_size")
    flags = {"qk_norm"}
    if optional_flag(config, "attn_output_gate", True):  # qwen3_next.py:315
        flags.add("attn_output_gate")
    if optional_flag(config, "qkv_bias", False):  # qwen3_next.py:322
        flags.add("attention_bias")
    if moe:
        sizes = {
            "moe_intermediate_size": require_int(config, "moe_intermediate_size"),
            "shared_intermediate_size": require_int(config, "shared_expert_intermediate_size"),
        }
    else:
        sizes = {"intermediate_size": require_int(config, "intermediate_size")}
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, COUNT_KEY, default=COUNT_DEFAULT),
        intermediate_size=sizes.get("intermediate_size", sizes.get("moe_intermediate_size", 0)),
        attention={
            FULL: Attention(
                heads, require_int(config, "num_key_value_heads"), require_int(config, "head_dim", default=hidden_size // heads)
            )
        },
        layer_types=(),
        first_mtp_layer=0,
        num_experts=require_int(config, "num_experts") if moe else 0,
        sizes=sizes,
        flags=frozenset(flags),
    )


def read_moe_geometry(config: Mapping[str, Any]) -> Geometry:
    return _geometry(config, moe=True)


def read_dense_geometry(config: Mapping[str, Any]) -> Geometry:
    return _geometry(config, moe=False)


def _embedding(g: Geometry) -> tuple[int, ...]:
    return (g.vocab_size, g.hidden_size)


# The multimodal release keeps the embedding under `model.language_model.`; the loader drops that part.
EMBED_AND_HEAD_COPIES = (
    ExtraTensor(
        "model.embed_tokens.weight",
        _embedding,
        ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        "model.embed_tokens.weight",
        shared=True,
    ),
    ExtraTensor("lm_head.weight", _embedding, ("lm_head.weight",), "lm_head.weight", shared=True),
)
# Unlike Qwen3-Next's, this lm_head is built with the target's quant_config (qwen3_5_mtp.py:237-243).
LM_HEAD_MODULE = QuantModule("lm_head", "head", shared=True)
DENSE_QUANT_MODULES = (
    QuantModule(f"{LAYER}self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj")),
    QuantModule(f"{LAYER}self_attn.o_proj"),
    QuantModule(f"{LAYER}mlp.gate_up_proj", "linear", ("gate_proj", "up_proj")),
    QuantModule(f"{LAYER}mlp.down_proj"),
    QuantModule("mtp.fc", unquantized_under=("modelopt_fp4",)),  # qwen3_5_mtp.py:93-106
    LM_HEAD_MODULE,
)
DENSE_MLP = (
    LayerTensor("mlp.gate_proj.weight", rows("intermediate_size"), "mlp.gate_up_proj.weight"),
    LayerTensor("mlp.up_proj.weight", rows("intermediate_size"), "mlp.gate_up_proj.weight"),
    LayerTensor("mlp.down_proj.weight", cols("intermediate_size"), "mlp.down_proj.weight"),
)

FACTS = (
    "vLLM 0.33.0 config/speculative.py:987-1008: model_type qwen3_5 / qwen3_5_text routes to Qwen3_5MTP, qwen3_5_moe / qwen3_5_moe_text to Qwen3_5MoeMTP; the count is mtp_num_hidden_layers, top level or text_config",
    "vLLM 0.33.0 qwen3_5_mtp.py:75-82: the module reads the target's text config; mtp_num_hidden_layers defaults to 1; the layers are mtp.layers.{0..n-1}, full attention (:118-125)",
    "vLLM 0.33.0 qwen3_5.py:142-185: the MTP layer's MLP is Qwen3-Next's sparse MoE block when the text config's model_type is qwen3_5_moe_text, a gate/up/down MLP when qwen3_5_text",
    "vLLM 0.33.0 qwen3_5_mtp.py:302-318: keeps mtp.* and names with embed_tokens or lm_head, renames mtp. to model., drops language_model. from the embedding; the predictor's mapper (qwen3_5.py:226-234 over qwen3_next.py:634-645) fuses q/k/v and gate/up; routed experts load into experts.routed_experts.{w13,w2}_weight; AutoWeightsLoader raises ValueError for a name it cannot place (utils.py:442-448)",
    "vLLM 0.33.0 qwen3_5_mtp.py:93-106: mtp.fc is forced unquantized under modelopt_fp4; every other MTP linear, and lm_head (:237-243), takes the target's quant_config",
    "vLLM 0.33.0 qwen3_5_mtp.py:108-126: a non-ModelOpt config whose `dynamic` has a '-:' key naming mtp builds the layers unquantized; that GPTQ rule is not replayed, so such a target is reported as not known to load",
    "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and lm_head are replaced by the target's",
    "unverified: checkpoint layout unverified (no public checkpoint read); mtp_use_dedicated_embeddings, named for these configs, is read nowhere in the vLLM 0.33.0 wheel",
)
CARD_NOTES = (
    "vLLM assumes one MTP layer when the config has no `mtp_num_hidden_layers`; set `num_speculative_tokens` explicitly.",
    "vLLM builds the `mtp.*` block with the target's quantization config: it loads in BF16 only if the target's exclude list covers `mtp.*` (`mtp.fc` is forced unquantized under `modelopt_fp4`).",
    "The checkpoint layout of this family has not been checked against a public checkpoint.",
)

QWEN3_5_MOE: Family = replace(
    QWEN3_NEXT,
    name="qwen3_5_moe",
    summary="Qwen3.5/3.6 MoE: the mtp.* block (fc, norms, MoE layers counted by mtp_num_hidden_layers); embed_tokens and lm_head are optional copies",
    vllm_class="Qwen3_5MoeMTP",
    route_model_types=("qwen3_5_moe", "qwen3_5_moe_text"),
    extra_tensors=EMBED_AND_HEAD_COPIES,
    replay=loader_names.qwen3_5_mtp,
    read_geometry=read_moe_geometry,
    count_key=COUNT_KEY,
    count_default=COUNT_DEFAULT,
    quant_modules=(*QWEN3_NEXT.quant_modules, LM_HEAD_MODULE),
    vllm_file="qwen3_5_mtp.py",
    facts=FACTS,
    card_notes=CARD_NOTES,
)

QWEN3_5: Family = replace(
    QWEN3_5_MOE,
    name="qwen3_5",
    summary="Qwen3.5/3.6 dense: the mtp.* block (fc, norms, dense layers counted by mtp_num_hidden_layers); embed_tokens and lm_head are optional copies",
    vllm_class="Qwen3_5MTP",
    route_model_types=("qwen3_5", "qwen3_5_text"),
    layer_tensors=(*layer_norms(""), *gqa_attention("", gated_query=True), *DENSE_MLP),
    read_geometry=read_dense_geometry,
    quant_modules=DENSE_QUANT_MODULES,
)
