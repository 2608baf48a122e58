"""Xiaomi MiMo-V2-Flash: MTP layers `model.mtp.layers.{i}.*`, of which vLLM 0.33.0 builds and loads only the first.

Facts: vLLM 0.33.0's `mimo_v2_mtp.py` and `mimo_v2.py`. Each MTP layer is `enorm`, `hnorm`,
`eh_proj` and a dense decoder block: sliding-window attention with the `swa_*` widths (values may
be narrower than keys, an optional per-head attention sink), `pre_mlp_layernorm`, a gate/up/down
MLP and `final_layernorm`. The module reads the target's config and quantization config and
declares exactly one layer (`mimo_v2_mtp.py:51-54, 177`), so the draft ships layer 0 whatever
the config declares; names the loader cannot place are dropped without an error. The Pro release
(`MiMoV2ForCausalLM`) stores a fused `qkv_proj` whose row order the wheel describes two ways; it is
not covered. No public checkpoint has been read here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pipeline.families.base import (
    Attention,
    Family,
    Geometry,
    LayerTensor,
    QuantModule,
    config_value,
    field_path,
    optional_flag,
    require_flag,
    require_int,
)
from pipeline.families.common import EMBED_AND_HEAD_COPIES, cols, concat_proj, hidden, rows

SWA = "sliding_attention"
# `_MIMO_V2_FLASH_NUM_MTP_LAYERS` (mimo_v2_mtp.py:51-54): the override's n_predict (speculative.py:831-846)
# and the one layer the predictor builds (:177), whatever the config's count.
VLLM_MTP_LAYERS = 1


def _require_epsilon(config: Mapping[str, Any]) -> None:
    """The RMSNorm epsilon, read without a default (`config.layernorm_epsilon`, mimo_v2_mtp.py:73-74, 88, 110, 119)."""
    try:
        where, value = config_value(config, "layernorm_epsilon")
    except KeyError:
        raise ValueError(
            f"{field_path(config, 'layernorm_epsilon')}: is required (vLLM 0.33.0 mimo_v2_mtp.py:73 reads it without a default)"
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{where}: must be a positive number, found {value!r}")


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat MiMo-V2-Flash config: the MTP layer takes the `swa_*` attention widths (mimo_v2_mtp.py:89-108)."""
    require_int(config, "num_nextn_predict_layers", default=VLLM_MTP_LAYERS)  # a declared count must be a positive integer
    try:
        where, act = config_value(config, "hidden_act")
    except KeyError:
        raise ValueError(f"{field_path(config, 'hidden_act')}: is required (vLLM 0.33.0 mimo_v2_mtp.py:115)") from None
    if act != "silu":
        raise ValueError(f"{where}: must be silu (vLLM 0.33.0 mimo_v2.py:104-107), found {act!r}")
    head_dim = require_int(config, "swa_head_dim")
    intermediate = require_int(config, "intermediate_size")
    _require_epsilon(config)
    flags = {"attention_bias"} if require_flag(config, "attention_bias", "vLLM 0.33.0 mimo_v2_mtp.py:97") else set()
    if optional_flag(config, "add_swa_attention_sink_bias", False):
        flags.add("attention_sink")
    return Geometry(
        hidden_size=require_int(config, "hidden_size"),
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=VLLM_MTP_LAYERS,
        intermediate_size=intermediate,
        attention={
            SWA: Attention(require_int(config, "swa_num_attention_heads"), require_int(config, "swa_num_key_value_heads"), head_dim)
        },
        layer_types=(),
        first_mtp_layer=0,
        sizes={"intermediate_size": intermediate, "v_head_dim": require_int(config, "swa_v_head_dim", default=head_dim)},
        flags=frozenset(flags),
    )


def _kv_rows(a: Attention) -> int:
    return a.kv_groups * a.head_dim


def _v_rows(g: Geometry, a: Attention) -> int:
    return a.kv_groups * g.sizes["v_head_dim"]


QKV = "self_attn.qkv_proj."
LAYER_TENSORS = (
    LayerTensor("enorm.weight", hidden, "enorm.weight"),
    LayerTensor("hnorm.weight", hidden, "hnorm.weight"),
    LayerTensor("eh_proj.weight", concat_proj, "eh_proj.weight"),
    LayerTensor("input_layernorm.weight", hidden, "input_layernorm.weight"),
    # QKVParallelLinear with v_head_size (mimo_v2.py:284-292): K and V may differ in width.
    LayerTensor("self_attn.q_proj.weight", lambda g, a: (a.heads * a.head_dim, g.hidden_size), f"{QKV}weight"),
    LayerTensor("self_attn.k_proj.weight", lambda g, a: (_kv_rows(a), g.hidden_size), f"{QKV}weight"),
    LayerTensor("self_attn.v_proj.weight", lambda g, a: (_v_rows(g, a), g.hidden_size), f"{QKV}weight"),
    LayerTensor("self_attn.q_proj.bias", lambda g, a: (a.heads * a.head_dim,), f"{QKV}bias", when="attention_bias"),
    LayerTensor("self_attn.k_proj.bias", lambda g, a: (_kv_rows(a),), f"{QKV}bias", when="attention_bias"),
    LayerTensor("self_attn.v_proj.bias", lambda g, a: (_v_rows(g, a),), f"{QKV}bias", when="attention_bias"),
    LayerTensor("self_attn.o_proj.weight", lambda g, a: (g.hidden_size, a.heads * g.sizes["v_head_dim"]), "self_attn.o_proj.weight"),
    # make_attention_sink (model_loader/weight_utils.py:1584-1592): one bare parameter per head.
    LayerTensor("self_attn.attention_sink_bias", lambda g, a: (a.heads,), "self_attn.attention_sink_bias", when="attention_sink"),
    LayerTensor("pre_mlp_layernorm.weight", hidden, "pre_mlp_layernorm.weight"),
    LayerTensor("mlp.gate_proj.weight", rows("intermediate_size"), "mlp.gate_up_proj.weight"),
    LayerTensor("mlp.up_proj.weight", rows("intermediate_size"), "mlp.gate_up_proj.weight"),
    LayerTensor("mlp.down_proj.weight", cols("intermediate_size"), "mlp.down_proj.weight"),
    LayerTensor("final_layernorm.weight", hidden, "final_layernorm.weight"),
)

# vLLM module prefixes (mimo_v2_mtp.py:186-192, :159-164): the layer is `model.mtp.layers.{i}`, as in
# the checkpoint. eh_proj (:75-77), embed_tokens (:181-184) and lm_head (:230-234) get no quant_config;
# o_proj is built unquantized under any `mtp.layers` prefix (mimo_v2.py:295-302).
LAYER = "model.mtp.layers.{layer}."
QUANT_MODULES = (
    QuantModule(f"{LAYER}self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj")),
    QuantModule(f"{LAYER}mlp.gate_up_proj", "linear", ("gate_proj", "up_proj")),
    QuantModule(f"{LAYER}mlp.down_proj"),
)

# (parameter part, checkpoint part) of `stacked_params_mapping` (mimo_v2_mtp.py:263-270), in order.
STACKED = (
    ("gate_up_proj", "gate_proj"),
    ("gate_up_proj", "up_proj"),
    ("qkv_proj", "q_proj"),
    ("qkv_proj", "k_proj"),
    ("qkv_proj", "v_proj"),
)


def mimo_v2_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`MiMoV2MTP.load_weights` (mimo_v2_mtp.py:259-386) for a BF16 draft: keep names containing
    `model.mtp` or `model.embed_tokens` and those starting with `lm_head` (:285-291); a fused
    `qkv_proj` loads as it is (:339-345; the FP8 pairing at :300-338 needs a `weight_scale_inv`
    parameter a BF16 module lacks); q/k/v and gate/up stack (:349-372); every name that is not a
    parameter is dropped without an error (:345, :358-359, :374-377)."""
    if "rotary_emb.inv_freq" in name:
        return None
    if "model.mtp" not in name and "model.embed_tokens" not in name and not name.startswith("lm_head"):
        return None
    if "qkv_proj" in name:
        return name if name in params else None
    for param, part in STACKED:
        if part not in name:
            continue
        rewritten = name.replace(part, param)
        if rewritten in params:
            return rewritten
    return name if name in params else None


FACTS = (
    "vLLM 0.33.0 config/speculative.py:831-846: architectures[0] == MiMoV2FlashForCausalLM routes to MiMoV2MTP (architecture MiMoV2MTPModel) with num_hidden_layers 0 and n_predict = num_nextn_predict_layers = 1 (_MIMO_V2_FLASH_NUM_MTP_LAYERS, mimo_v2_mtp.py:51-54) whatever the config declares",
    "vLLM 0.33.0 mimo_v2_mtp.py:170-192: the predictor builds exactly one layer, model.mtp.layers.0, from the target's config (model_loader/utils.py:76-101 passes the target's VllmConfig, llm_base_proposer.py:1303-1316)",
    "vLLM 0.33.0 mimo_v2_mtp.py:57-119: the layer holds enorm, hnorm, eh_proj [hidden, 2 hidden], input_layernorm, self_attn with swa_num_attention_heads, swa_num_key_value_heads, swa_head_dim and swa_v_head_dim, pre_mlp_layernorm, a silu gate/up/down MLP of intermediate_size (mimo_v2.py:78-108) and final_layernorm; attention_bias (:97) and layernorm_epsilon (:73) are read without a default",
    "vLLM 0.33.0 mimo_v2.py:284-292 and :314-316: qkv_proj is a QKVParallelLinear with v_head_size, o_proj takes heads x v_head_dim; add_swa_attention_sink_bias adds the bare parameter self_attn.attention_sink_bias of one value per head (model_loader/weight_utils.py:1584-1592)",
    "vLLM 0.33.0 mimo_v2_mtp.py:259-386: names without model.mtp or model.embed_tokens that do not start with lm_head are skipped; q/k/v fuse into qkv_proj and gate/up into gate_up_proj; a shipped qkv_proj loads as it is; every other name that is no parameter (layers 1 and up included) is dropped without an error",
    "vLLM 0.33.0 mimo_v2_mtp.py:75-77, 181-184, 230-234 and mimo_v2.py:295-302: eh_proj, embed_tokens, lm_head and o_proj (under an mtp.layers prefix) are unquantized; qkv_proj and the MLP take vllm_config.quant_config, the target's, as model.mtp.layers.0.*",
    "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and lm_head are replaced by the target's",
    "unverified: checkpoint layout unverified (no public checkpoint read); names follow the loader and its docstring (mimo_v2_mtp.py:8-18, Flash stores q_proj, k_proj, v_proj apart); the Pro release (MiMoV2ForCausalLM, speculative.py:806-829) stores a fused qkv_proj, concatenated [Q;K;V] per the docstring (:13-15) but FP8 chunks of [Q_c|K_c|V_c] per num_key_value_heads per :293-299, loaded whole or cut into tp_size pieces when not FP8 (:339-344); it is not covered; FP8 weight_scale_inv tensors are refused as unknown MTP tensors",
)
CARD_NOTES = (
    "vLLM 0.33.0 builds and loads only the first MiMo-V2 MTP layer, so this draft ships `model.mtp.layers.0.*` alone.",
    "vLLM builds this MTP with the target's quantization config under the module names `model.mtp.layers.0.*`: it loads in BF16 only if the target's exclude list covers them.",
    "The checkpoint layout of this family has not been checked against a public checkpoint.",
)

MIMO_V2 = Family(
    name="mimo_v2",
    summary="MiMo-V2-Flash: model.mtp.layers.0.* (vLLM loads the first MTP layer only), a dense SWA layer; embed_tokens and lm_head are optional copies",
    vllm_class="MiMoV2MTP",
    route_model_types=(),
    route_architectures=("MiMoV2FlashForCausalLM",),
    source_prefixes=(LAYER,),
    output_prefix=LAYER,
    layer_tensors=LAYER_TENSORS,
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=SWA,
    replay=mimo_v2_mtp,
    read_geometry=read_geometry,
    count_default=VLLM_MTP_LAYERS,
    mtp_layer_limit=VLLM_MTP_LAYERS,
    quant_modules=QUANT_MODULES,
    vllm_file="mimo_v2_mtp.py",
    facts=FACTS,
    card_notes=CARD_NOTES,
)
