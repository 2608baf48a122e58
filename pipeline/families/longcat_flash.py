"""LongCat-Flash (`LongcatFlashForCausalLM`): one MTP layer under `model.mtp.*`, a dense MLA decoder layer.

Facts: vLLM 0.33.0's `longcat_flash_mtp.py` and `longcat_flash.py`, with transformers 5.20.2's
`LongcatFlashConfig`. The checkpoint keeps the MTP module apart from the backbone: its own
`embed_tokens`, a final `norm`, and `layers.0` with DeepSeek's nextn inputs (`enorm.m`, `hnorm.m`,
`eh_proj`), MLA attention and a dense MLP under `transformer_layer.mlp`. vLLM builds exactly one
such layer, numbered after the backbone's attention sublayers (`2 * num_layers`), from the
target's config and quantization; its loader renames the names above through a fixed table, so
only `model.mtp.layers.0.*` loads. No public checkpoint has been read here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from pipeline.families.base import Attention, Family, Geometry, LayerTensor, QuantModule, config_value, require_int
from pipeline.families.common import cols, concat_proj, hidden, layer_norms, read_sizes, rows, vocab_rows
from pipeline.families.deepseek_v3 import BLOCK, MLA, MLA_SIZES

MLA_LAYER = "mla"
COUNT_KEY = "num_nextn_predict_layers"
COUNT_DEFAULT = 1  # speculative.py:1034 reads it with getattr(..., 1); transformers' LongcatFlashConfig does not declare it
LAYER_COUNT_KEY = "num_layers"  # decoder layers of two attention sublayers each (configuration_longcat_flash.py:87, 117-123)
LAYER = "layers.0."  # longcat_flash_mtp.py:86 builds one layer; the rename table (:183-210) names only layers.0
ATTENTION_SIZES = {key: value for key, value in MLA_SIZES.items() if key != "moe_intermediate_size"}  # the MTP layer has no experts
# transformers' attribute_map makes `intermediate_size` another name for `ffn_hidden_size`
# (configuration_longcat_flash.py:58-63); vLLM's dense MTP MLP reads it (deepseek_v2.py:1339-1345).
MLP_WIDTH_KEYS = ("ffn_hidden_size", "intermediate_size")


def _mlp_width(config: Mapping[str, Any]) -> int:
    found = {key: require_int(config, key) for key in MLP_WIDTH_KEYS if key in config}
    if not found:
        raise ValueError(f"{MLP_WIDTH_KEYS[0]}: is required (the MTP layer's dense MLP width)")
    if len(set(found.values())) > 1:
        raise ValueError(f"{MLP_WIDTH_KEYS[1]}: names {MLP_WIDTH_KEYS[0]} in transformers' LongcatFlashConfig, but the two differ: {found}")
    return next(iter(found.values()))


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat LongCat-Flash config; `num_hidden_layers` is `2 * num_layers`, as transformers derives it."""
    try:
        count_where, count = config_value(config, COUNT_KEY)
    except KeyError:
        count_where, count = COUNT_KEY, COUNT_DEFAULT
    if count != 1:
        raise ValueError(
            f"{count_where}: vLLM 0.33.0 LongCatFlashMTP builds exactly 1 MTP layer and loads only model.mtp.layers.0.* "
            f"(longcat_flash_mtp.py:86, 183-210), found {count!r}"
        )
    heads = require_int(config, "num_attention_heads")
    sizes = read_sizes(config, ATTENTION_SIZES)
    width = _mlp_width(config)
    sizes["intermediate_size"] = width
    return Geometry(
        hidden_size=require_int(config, "hidden_size"),
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=2 * require_int(config, LAYER_COUNT_KEY),
        num_mtp_layers=1,
        intermediate_size=width,
        attention={MLA_LAYER: Attention(heads, heads, sizes["v_head_dim"])},
        layer_types=(),
        first_mtp_layer=0,
        sizes=sizes,
    )


# The whole `model.mtp.` module is the family's one MTP layer: the checkpoint puts its embedding
# and final norm beside `layers.0`; vLLM loads the embedding as `model.embed_tokens` and the norm
# as the `final_layernorm` of the layer it numbers 2 * num_layers.
# Parameters are the checkpoint names after the rename table (longcat_flash_mtp.py:183-210) and
# `_rewrite_spec_layer_name` (:269-309); DeepSeek's MLA table keeps its `.mtp_block.` parameters.
LAYER_TENSORS = (
    LayerTensor("embed_tokens.weight", vocab_rows, "model.embed_tokens.weight", top_level=True, shared=True),
    LayerTensor(f"{LAYER}enorm.m.weight", hidden, "enorm.weight"),
    LayerTensor(f"{LAYER}hnorm.m.weight", hidden, "hnorm.weight"),
    LayerTensor(f"{LAYER}eh_proj.weight", concat_proj, "eh_proj.weight"),
    *(replace(tensor, suffix=LAYER + tensor.suffix) for tensor in (*layer_norms(BLOCK), *MLA)),
    LayerTensor(f"{LAYER}transformer_layer.mlp.gate_proj.weight", rows("intermediate_size"), f"{BLOCK}mlp.gate_up_proj.weight"),
    LayerTensor(f"{LAYER}transformer_layer.mlp.up_proj.weight", rows("intermediate_size"), f"{BLOCK}mlp.gate_up_proj.weight"),
    LayerTensor(f"{LAYER}transformer_layer.mlp.down_proj.weight", cols("intermediate_size"), f"{BLOCK}mlp.down_proj.weight"),
    LayerTensor("norm.weight", hidden, "final_layernorm.weight"),
)

# vLLM module prefixes. `eh_proj` is built under the bare prefix `eh_proj` (longcat_flash_mtp.py:40-46)
# with the MTP's quant_config, None when the target config's `disable_quant_module` lists `mtp`
# (:134-138). The decoder layer takes `vllm_config.quant_config` itself (deepseek_v2.py:1264), so
# that switch leaves it quantized; it is built under `model.layers.{2 * num_layers}` (:91, :47).
# `fused_qkv_a_proj` has no shards: the target's packed_modules_mapping (longcat_flash.py:554-564)
# does not fuse q_a_proj / kv_a_proj_with_mqa, so exclude lists must name the fused module.
# The MTP's own `lm_head` (:145-150) is never loaded from the draft and always replaced.
VLLM_LAYER = "model.layers.{layer}."
QUANT_MODULES = (
    QuantModule("eh_proj", unquantized_if=("disable_quant_module", "mtp")),
    QuantModule(f"{VLLM_LAYER}self_attn.fused_qkv_a_proj"),
    QuantModule(f"{VLLM_LAYER}self_attn.q_b_proj"),
    QuantModule(f"{VLLM_LAYER}self_attn.kv_b_proj"),
    QuantModule(f"{VLLM_LAYER}self_attn.o_proj"),
    QuantModule(f"{VLLM_LAYER}mlp.gate_up_proj", "linear", ("gate_proj", "up_proj")),
    QuantModule(f"{VLLM_LAYER}mlp.down_proj"),
)

# The rename table `load_weights` applies first (longcat_flash_mtp.py:183-210), all 26 entries: the
# linears' `weight_scale_inv` (an FP8 checkpoint's scales) are renamed beside their weights.
_MTP = "model.mtp.layers.0."
_WEIGHT_AND_SCALE = ("weight", "weight_scale_inv")
_ATTENTION = ("q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj")
_SCALED_ATTENTION = ("kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "q_a_proj", "q_b_proj")
RENAMES: dict[str, str] = {
    "model.mtp.embed_tokens.weight": "model.layers.0.embed_tokens.weight",
    **{f"{_MTP}eh_proj.{kind}": f"eh_proj.{kind}" for kind in _WEIGHT_AND_SCALE},
    f"{_MTP}enorm.m.weight": "enorm.weight",
    f"{_MTP}hnorm.m.weight": "hnorm.weight",
    **{f"{_MTP}{norm}.weight": f"model.layers.0.{norm}.weight" for norm in ("input_layernorm", "post_attention_layernorm")},
    **{f"{_MTP}self_attn.{part}.weight": f"model.layers.0.self_attn.{part}.weight" for part in _ATTENTION},
    **{f"{_MTP}self_attn.{part}.weight_scale_inv": f"model.layers.0.self_attn.{part}.weight_scale_inv" for part in _SCALED_ATTENTION},
    **{
        f"{_MTP}transformer_layer.mlp.{part}_proj.{kind}": f"model.layers.0.mlp.{part}_proj.{kind}"
        for part in ("down", "gate", "up")
        for kind in _WEIGHT_AND_SCALE
    },
    "model.mtp.norm.weight": "final_layernorm.weight",
}
# (parameter part, checkpoint part) of `stacked_params_mapping` (:176-181), in order.
STACKED = (
    ("gate_up_proj", "gate_proj"),
    ("gate_up_proj", "up_proj"),
    ("fused_qkv_a_proj", "q_a_proj"),
    ("fused_qkv_a_proj", "kv_a_proj_with_mqa"),
)
SPEC_LAYER_WEIGHTS = ("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head")  # :278-284


def _rewrite(name: str, layer: int) -> str:
    """`_rewrite_spec_layer_name` (longcat_flash_mtp.py:269-309) for vLLM layer `layer` (2 * num_layers)."""
    name = RENAMES.get(name, name)
    if name.startswith(("enorm", "hnorm", "eh_proj", "final_layernorm")):
        name = f"model.layers.{layer}." + name
    part = next((part for part in SPEC_LAYER_WEIGHTS if part in name), None)
    if part is None:
        return name.replace("model.layers.0.", f"model.layers.{layer}.mtp_block.")
    if part == "embed_tokens":
        return name.replace("model.layers.0.", "model.")
    return name


def longcat_flash_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`LongCatFlashMTP.load_weights` (longcat_flash_mtp.py:175-267): only names containing
    `model.mtp` are read (:311-316). Each stacked entry rewrites the name before its checks, and a
    failed check carries the rewrite on to the next entry and the plain branch (:223-265)."""
    if "rotary_emb.inv_freq" in name or "model.mtp" not in name:
        return None
    name = _rewrite(name, geometry.num_hidden_layers)
    for param, part in STACKED:
        if part not in name or ("mlp.experts." in name and name not in params):
            continue
        name = name.replace(part, param)
        if param == "fused_qkv_a_proj" and name not in params:
            continue
        if name.endswith(".bias") and name not in params:
            continue
        return name
    if name.endswith(".bias") and name not in params:
        return None
    # :257-261 skips shared weights of later MTP layers; get_spec_layer_idx_from_weight_name
    # (:311-316) gives every name the first layer, so nothing is skipped there.
    return name


FACTS = (
    "vLLM 0.33.0 config/speculative.py:1032-1037: model_type longcat_flash routes to LongCatFlashMTP (architecture LongCatFlashMTPModel); n_predict is num_nextn_predict_layers, default 1",
    "vLLM 0.33.0 transformers_utils/config.py:180-184, 368-369, 411-415: a config.json without model_type whose architectures[0] is LongcatFlashForCausalLM or LongcatFlashNgramForCausalLM is read as longcat_flash",
    "vLLM 0.33.0 longcat_flash_mtp.py:84-100: one MTP layer (num_mtp_layers = 1), numbered num_layers * 2 from the module's config; transformers 5.20.2 configuration_longcat_flash.py:87, 117-123: num_hidden_layers is 2 * num_layers",
    "vLLM 0.33.0 model_loader/utils.py:74-103 and v1/spec_decode/llm_base_proposer.py:1265-1315: the module is built with the target's VllmConfig, so its config (layer number, disable_quant_module) and quant_config are the target's",
    "vLLM 0.33.0 longcat_flash_mtp.py:29-49: enorm, hnorm, eh_proj (ReplicatedLinear, prefix eh_proj), final_layernorm and mtp_block, a DeepseekV2DecoderLayer; :129-132 clears n_routed_experts, so the block's MLP is dense (deepseek_v2.py:1293-1345, intermediate_size, which transformers maps to ffn_hidden_size)",
    "vLLM 0.33.0 transformers_utils/model_arch_config_convertor.py:294-327: longcat_flash uses MLA, so the block's attention is DeepseekV2MLAAttention; deepseek_v2.py:1051-1112: q_a_proj and kv_a_proj_with_mqa fuse into fused_qkv_a_proj",
    "vLLM 0.33.0 longcat_flash_mtp.py:175-316: only names containing model.mtp are read; a fixed table (:183-210) renames model.mtp.embed_tokens, model.mtp.norm, model.mtp.layers.0.{enorm.m,hnorm.m,eh_proj,input_layernorm,post_attention_layernorm,self_attn.*,transformer_layer.mlp.*}; any other model.mtp name keeps its name and fails at params_dict[name] (KeyError)",
    "vLLM 0.33.0 longcat_flash_mtp.py:134-138: eh_proj and lm_head are unquantized when the target config's disable_quant_module lists mtp; the decoder layer reads vllm_config.quant_config itself (deepseek_v2.py:1264), so its linears follow the target's exclude list under model.layers.{2 * num_layers}.*",
    "vLLM 0.33.0 longcat_flash.py:91-101 and longcat_flash_mtp.py:48: with mla_scale_q_lora / mla_scale_kv_lora the q/kv_a_layernorm weights are scaled while loading; the draft ships the checkpoint's bytes unchanged",
    "vLLM 0.33.0 llm_base_proposer.py:1418-1575: the MTP's embed_tokens (pipeline parallelism 1) and lm_head are replaced by the target's; the draft never fills lm_head (no model.mtp name maps to it)",
    "unverified: checkpoint layout unverified (no public checkpoint read); names follow the loader's rename table; an FP8 source's weight_scale_inv tensors are refused as unknown MTP tensors",
)
CARD_NOTES = (
    "vLLM builds this MTP with the target's quantization config as `model.layers.{2 * num_layers}.*` plus a bare `eh_proj`: it loads in BF16 only if the target's exclude list covers both (`eh_proj` is also left unquantized when the target config's `disable_quant_module` lists `mtp`).",
    "vLLM 0.33.0 builds exactly one LongCat-Flash MTP layer and reuses it for every speculative step.",
    "The checkpoint layout of this family has not been checked against a public checkpoint.",
)

LONGCAT_FLASH = Family(
    name="longcat_flash",
    summary="LongCat-Flash: the model.mtp.* module (embed_tokens, norm and one dense MLA layer layers.0); its embed_tokens is an optional copy",
    vllm_class="LongCatFlashMTP",
    route_model_types=("longcat_flash",),
    route_architectures=(),
    source_prefixes=("model.mtp.",),
    output_prefix="model.mtp.",
    layer_tensors=LAYER_TENSORS,
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=MLA_LAYER,
    replay=longcat_flash_mtp,
    read_geometry=read_geometry,
    param_prefix=VLLM_LAYER,
    param_layer_after_backbone=True,
    count_key=COUNT_KEY,
    count_default=COUNT_DEFAULT,
    layer_count_key=LAYER_COUNT_KEY,
    unfilled_params=("lm_head.weight",),  # longcat_flash_mtp.py:145-150; no model.mtp name maps to it (:183-316)
    quant_modules=QUANT_MODULES,
    vllm_file="longcat_flash_mtp.py",
    facts=FACTS,
    card_notes=CARD_NOTES,
)
