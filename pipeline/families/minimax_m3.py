"""MiniMax M3: `num_mtp_modules` predictor layers `model.mtp.layers.{i}.*`, each a sparse-attention MoE decoder layer.

Facts: vLLM 0.33.0's `vllm/models/minimax_m3/` (the CUDA build, `nvidia/mtp.py` and
`nvidia/model.py`; ROCm's `amd/mtp.py` has the same `load_weights`). Each predictor layer holds
`enorm`, `hnorm`, `eh_proj` and `final_layernorm` around a `transformer_layer`: lightning-indexer
sparse attention (q/k/v and index_q/index_k fused into one `qkv_proj`, per-head Gemma norms) and
the sigmoid-routed MoE block `block_sparse_moe` (router, correction bias, shared expert, routed
experts stored as `w1`/`w2`/`w3`). The module reads the draft's config for its shapes and the
target's quantization config for its linears. Names the loader cannot place are dropped without
an error, so the replay reports them as skipped. No public checkpoint has been read here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
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
    require_int,
)
from pipeline.families.common import EMBED_AND_HEAD_COPIES as PLAIN_COPIES
from pipeline.families.common import cols, concat_proj, hidden, read_sizes, rows
from pipeline.families.common import head_dim as head_width

SPARSE = "sparse_attention"
COUNT_KEY = "num_mtp_modules"
COUNT_DEFAULT = 1  # speculative.py:1131, :1142; configs/minimax_m3.py:50
SPARSE_CONFIG = "sparse_attention_config"
INDEX_KEYS = {"index_heads": "sparse_num_index_heads", "index_dim": "sparse_index_dim"}
# vLLM builds the draft's config through MiniMaxM3TextConfig, so a field the config leaves out takes
# that class's default (transformers_utils/configs/minimax_m3.py:17-54); the flat minimax_m3_mtp
# config's class defaults to one hidden layer (:119). Every field read here takes its default.
TEXT_DEFAULTS = {
    "vocab_size": 200064,
    "hidden_size": 6144,
    "intermediate_size": 3072,
    "num_hidden_layers": 60,
    "num_attention_heads": 64,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_local_experts": 128,
    "n_shared_experts": 1,
    COUNT_KEY: COUNT_DEFAULT,
}
FLAT_HIDDEN_LAYERS = 1
# An absent or null sparse_attention_config becomes this default's indexer (configs/minimax_m3.py:89-104).
SPARSE_DEFAULTS = {"sparse_num_index_heads": 4, "sparse_index_dim": 128}


def _text_int(config: Mapping[str, Any], key: str) -> int:
    default = (
        FLAT_HIDDEN_LAYERS if key == "num_hidden_layers" and not isinstance(config.get("text_config"), Mapping) else TEXT_DEFAULTS[key]
    )
    return require_int(config, key, default=default)


def _index_sizes(config: Mapping[str, Any], kv_heads: int, head_dim: int) -> dict[str, int]:
    """The indexer's head count and width (model.py:438-441), which must match the KV heads and
    head_dim (linear.py:1406-1409 asserts the count; :1468-1487 place index_q by head_dim)."""
    try:
        where, section = config_value(config, SPARSE_CONFIG)
    except KeyError:
        where, section = field_path(config, SPARSE_CONFIG), None
    if section is not None and not isinstance(section, Mapping):
        raise ValueError(f"{where}: must be a mapping, found {section!r}")
    try:
        sizes = read_sizes(SPARSE_DEFAULTS if section is None else section, INDEX_KEYS)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
    for size, key, other, value in (
        ("index_heads", INDEX_KEYS["index_heads"], "num_key_value_heads", kv_heads),
        ("index_dim", INDEX_KEYS["index_dim"], "head_dim", head_dim),
    ):
        if sizes[size] == value:
            continue
        if section is None:
            raise ValueError(
                f"{where}: is absent or null, so vLLM 0.33.0 takes its default (configs/minimax_m3.py:89-104), "
                f"whose {key} {sizes[size]} must equal {other} ({value})"
            )
        raise ValueError(f"{where}.{key}: must equal {other} ({value}), found {sizes[size]}")
    return sizes


def _shared_experts(config: Mapping[str, Any]) -> int:
    """n_shared_experts: absent means 1 (configs/minimax_m3.py:46); null or 0, no shared expert (model.py:241-249)."""
    try:
        declared = config_value(config, "n_shared_experts")[1]
    except KeyError:
        return TEXT_DEFAULTS["n_shared_experts"]
    return 0 if declared is None else require_int(config, "n_shared_experts", minimum=0)


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a MiniMax M3 config: the VL release's `text_config` or a flat `minimax_m3_mtp` one."""
    if config.get("model_type") == "minimax_m3_vl" and not isinstance(config.get("text_config"), Mapping):
        # MiniMaxM3Config builds a default text config and ignores top-level fields (configs/minimax_m3.py:140-141).
        config = {"text_config": {}}
    hidden_size = _text_int(config, "hidden_size")
    kv_heads, head_dim = _text_int(config, "num_key_value_heads"), _text_int(config, "head_dim")
    sizes = _index_sizes(config, kv_heads, head_dim)
    expert_width = _text_int(config, "intermediate_size")
    sizes["expert_intermediate_size"] = expert_width
    flags = {"routing_bias"} if optional_flag(config, "use_routing_bias", True) else set()  # configs/minimax_m3.py:48
    shared = _shared_experts(config)
    if shared:
        # The shared expert is intermediate_size x n_shared_experts wide (model.py:241-249), a
        # MiniMaxM3MLP that refuses any activation but swigluoai (model.py:176-180, default configs/minimax_m3.py:35).
        sizes["shared_intermediate_size"] = expert_width * shared
        flags.add("shared_experts")
        try:
            act_where, act = config_value(config, "hidden_act")
        except KeyError:
            act_where, act = "", "swigluoai"
        if act != "swigluoai":
            raise ValueError(
                f"{act_where}: must be swigluoai with a shared expert (vLLM 0.33.0 minimax_m3 model.py:176-180), found {act!r}"
            )
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=_text_int(config, "vocab_size"),
        num_hidden_layers=_text_int(config, "num_hidden_layers"),
        num_mtp_layers=_text_int(config, COUNT_KEY),
        intermediate_size=expert_width,
        attention={SPARSE: Attention(_text_int(config, "num_attention_heads"), kv_heads, head_dim)},
        layer_types=(),
        first_mtp_layer=0,
        num_experts=_text_int(config, "num_local_experts"),
        sizes=sizes,
        flags=frozenset(flags),
    )


def _index_width(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.sizes["index_dim"],)


# The decoder layer is the predictor layer's `transformer_layer` attribute (nvidia/mtp.py:58-64), a
# part the loader never inserts: checkpoint names carry it. Parameters are under `model.layers.{i}.`.
DECODER = "transformer_layer."
ATTN = f"{DECODER}self_attn."
MOE = f"{DECODER}block_sparse_moe."
QKV = f"{ATTN}qkv_proj.weight"
LAYER_TENSORS = (
    LayerTensor("enorm.weight", hidden, "enorm.weight"),
    LayerTensor("hnorm.weight", hidden, "hnorm.weight"),
    LayerTensor("eh_proj.weight", concat_proj, "eh_proj.weight"),
    LayerTensor("final_layernorm.weight", hidden, "final_layernorm.weight"),
    LayerTensor(f"{DECODER}input_layernorm.weight", hidden, f"{DECODER}input_layernorm.weight"),
    LayerTensor(f"{DECODER}post_attention_layernorm.weight", hidden, f"{DECODER}post_attention_layernorm.weight"),
    # One fused projection [q | k | v | index_q | index_k] (linear.py:1435-1445); index_k is a single head.
    LayerTensor(f"{ATTN}q_proj.weight", lambda g, a: (a.heads * a.head_dim, g.hidden_size), QKV),
    LayerTensor(f"{ATTN}k_proj.weight", lambda g, a: (a.kv_groups * a.head_dim, g.hidden_size), QKV),
    LayerTensor(f"{ATTN}v_proj.weight", lambda g, a: (a.kv_groups * a.head_dim, g.hidden_size), QKV),
    LayerTensor(f"{ATTN}index_q_proj.weight", lambda g, a: (g.sizes["index_heads"] * g.sizes["index_dim"], g.hidden_size), QKV),
    LayerTensor(f"{ATTN}index_k_proj.weight", lambda g, a: (g.sizes["index_dim"], g.hidden_size), QKV),
    LayerTensor(f"{ATTN}o_proj.weight", lambda g, a: (g.hidden_size, a.heads * a.head_dim), f"{ATTN}o_proj.weight"),
    LayerTensor(f"{ATTN}q_norm.weight", head_width, f"{ATTN}q_norm.weight"),
    LayerTensor(f"{ATTN}k_norm.weight", head_width, f"{ATTN}k_norm.weight"),
    LayerTensor(f"{ATTN}index_q_norm.weight", _index_width, f"{ATTN}index_q_norm.weight"),
    LayerTensor(f"{ATTN}index_k_norm.weight", _index_width, f"{ATTN}index_k_norm.weight"),
    LayerTensor(f"{MOE}gate.weight", lambda g, a: (g.num_experts, g.hidden_size), f"{MOE}gate.weight"),
    LayerTensor(f"{MOE}e_score_correction_bias", lambda g, a: (g.num_experts,), f"{MOE}e_score_correction_bias", when="routing_bias"),
    LayerTensor(
        f"{MOE}shared_experts.gate_proj.weight",
        rows("shared_intermediate_size"),
        f"{MOE}shared_experts.gate_up_proj.weight",
        when="shared_experts",
    ),
    LayerTensor(
        f"{MOE}shared_experts.up_proj.weight",
        rows("shared_intermediate_size"),
        f"{MOE}shared_experts.gate_up_proj.weight",
        when="shared_experts",
    ),
    LayerTensor(
        f"{MOE}shared_experts.down_proj.weight",
        cols("shared_intermediate_size"),
        f"{MOE}shared_experts.down_proj.weight",
        when="shared_experts",
    ),
    # w1 = gate, w2 = down, w3 = up (nvidia/mtp.py:239-247), fused into routed_experts.{w13,w2}_weight.
    LayerTensor(f"{MOE}experts.{{expert}}.w1.weight", rows("expert_intermediate_size"), f"{MOE}experts.routed_experts.w13_weight"),
    LayerTensor(f"{MOE}experts.{{expert}}.w2.weight", cols("expert_intermediate_size"), f"{MOE}experts.routed_experts.w2_weight"),
    LayerTensor(f"{MOE}experts.{{expert}}.w3.weight", rows("expert_intermediate_size"), f"{MOE}experts.routed_experts.w13_weight"),
)


# The predictor's embedding and the LM head, replaced by the target's after loading; the VL
# release keeps them under `language_model.`, which the loader strips (nvidia/mtp.py:211-216).
EMBED_AND_HEAD_COPIES = tuple(replace(copy, source_names=(*copy.source_names, f"language_model.{copy.name}")) for copy in PLAIN_COPIES)

# vLLM module prefixes, in build order: the decoder layer gets the predictor layer's own prefix,
# without `transformer_layer` (nvidia/mtp.py:58-64, :112); the router is unquantized (model.py:232-239).
LAYER = "model.layers.{layer}."
QUANT_MODULES = (
    QuantModule(f"{LAYER}eh_proj"),
    QuantModule(f"{LAYER}self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj")),  # the target's packing (model.py:1124-1127)
    QuantModule(f"{LAYER}self_attn.o_proj"),
    QuantModule(f"{LAYER}block_sparse_moe.shared_experts.gate_up_proj", "linear", ("gate_proj", "up_proj"), when="shared_experts"),
    QuantModule(f"{LAYER}block_sparse_moe.shared_experts.down_proj", when="shared_experts"),
    QuantModule(f"{LAYER}block_sparse_moe.experts", "experts", ("gate_proj", "up_proj", "down_proj")),
    QuantModule("lm_head", "head", shared=True),  # nvidia/mtp.py:160-165
)

# (parameter part, checkpoint part) of `stacked_params_mapping` (nvidia/mtp.py:228-237), in order.
STACKED = (
    (".qkv_proj", ".q_proj"),
    (".qkv_proj", ".k_proj"),
    (".qkv_proj", ".v_proj"),
    (".qkv_proj", ".index_q_proj"),
    (".qkv_proj", ".index_k_proj"),
    (".gate_up_proj", ".gate_proj"),
    (".gate_up_proj", ".up_proj"),
)


def _checkpoint_name(name: str) -> str | None:
    """`_map_checkpoint_name` (nvidia/mtp.py:200-224): None for names outside the MTP module."""
    name = name.removeprefix("language_model.")
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return name
    if "model.mtp.layers" in name:
        return name.replace("weight_scale_inv", "weight_scale").replace(".mtp.", ".")
    return None


def _expert_mapping(geometry: Geometry) -> list[tuple[str, str]]:
    """(parameter part, checkpoint part) per expert, w1/w2/w3 in that order (routed_experts.py:1274-1290)."""
    fused = {"w1": "experts.routed_experts.w13_", "w2": "experts.routed_experts.w2_", "w3": "experts.routed_experts.w13_"}
    return [(fused[part], f"experts.{expert}.{part}.") for expert in range(geometry.num_experts) for part in ("w1", "w2", "w3")]


def minimax_m3_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`MiniMaxM3MTP.load_weights` (nvidia/mtp.py:226-311): every name that does not end on a
    declared parameter is skipped without an error (:255-257, :269-270, :286-287, :299-301).
    Each branch rewrites the name before testing it, and a failed test carries the rewrite on."""
    mapped = _checkpoint_name(name)
    if mapped is None:
        return None
    name = mapped
    for param, part in STACKED:
        if part not in name or ("block_sparse_moe.experts." in name and name not in params):
            continue
        name = name.replace(part, param)
        if name in params:
            return name
    for param, part in _expert_mapping(geometry):
        if part not in name:
            continue
        name = name.replace(part, param)
        if name in params:
            return name
    # maybe_remap_kv_scale_name (weight_utils.py:1722-1831) keeps a declared name; its k/v scale
    # renames end on `.attn.` parameters this module does not have.
    return name if name in params else None


FACTS = (
    "vLLM 0.33.0 config/speculative.py:1117-1133: model_type minimax_m3_vl or architectures[0] MiniMaxM3SparseForConditionalGeneration routes to MiniMaxM3MTP with text_config promoted; :1134-1145: a flat minimax_m3_mtp config or architecture MiniMaxM3MTP too; n_predict is num_mtp_modules, default 1",
    "vLLM 0.33.0 transformers_utils/configs/minimax_m3.py:17-104: every text-config field has a default that stands in for an absent one (num_mtp_modules 1, n_shared_experts 1, use_routing_bias true, hidden_act swigluoai, an indexer of 4 heads of width 128 when sparse_attention_config is absent or null); :119: the flat minimax_m3_mtp config defaults to 1 hidden layer; :140-143: a minimax_m3_vl config without text_config gets the defaults alone; config.py:155-156 registers minimax_m3_vl and minimax_m3_mtp",
    "vLLM 0.33.0 vllm/models/minimax_m3/__init__.py:14-27: CUDA loads nvidia/mtp.py, ROCm amd/mtp.py, whose load_weights is the same; amd/model.py:405-445 fuses the shared expert into the routed experts only with VLLM_ROCM_USE_AITER_FUSION_SHARED_EXPERTS, not covered",
    "vLLM 0.33.0 vllm/models/minimax_m3/nvidia/mtp.py:41-121: per predictor layer enorm, hnorm, eh_proj, final_layernorm and transformer_layer (a MiniMaxM3DecoderLayer forced to sparse attention and MoE, built from the draft's config); layers model.layers.{0..num_mtp_modules-1}; embed_tokens without quant_config",
    "vLLM 0.33.0 minimax_m3/nvidia/model.py:408-488: sparse attention fuses q, k, v, index_q, index_k into qkv_proj (linear.py:1365-1487: index heads must equal KV heads, index width head_dim, index_k one head); q/k/index_q/index_k norms; :195-272: e_score_correction_bias on block_sparse_moe, gate, experts, and shared_experts of intermediate_size x n_shared_experts only when n_shared_experts is set and not 0 (:241-249); its MLP alone checks hidden_act (:176-180)",
    "vLLM 0.33.0 minimax_m3/nvidia/mtp.py:200-311: language_model. is stripped, model.embed_tokens.weight and lm_head.weight kept, names containing model.mtp.layers lose .mtp.; q/k/v/index_q/index_k fuse into qkv_proj, gate/up into gate_up_proj, experts.{e}.w1/w3 into experts.routed_experts.w13_weight and w2 into w2_weight; every other name is dropped silently",
    "vLLM 0.33.0 minimax_m3/nvidia/mtp.py:313-321: at least one tensor per MTP layer is required",
    "vLLM 0.33.0 minimax_m3/nvidia/mtp.py:47, :156-165 and nvidia/model.py:696: eh_proj, the decoder layer's linears and lm_head take vllm_config.quant_config, the target's (llm_base_proposer.py:1265-1316), under the prefixes model.layers.{i}.*; the router is unquantized",
    "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and lm_head are replaced by the target's (with the V2 runner and pipeline parallelism above 1 a shipped embedding is kept, nvidia/mtp.py:150-152, :323-328)",
    "unverified: checkpoint layout unverified (no public checkpoint read); names follow the loader (language_model.model.mtp.layers.{i}.transformer_layer.* in the VL release per nvidia/mtp.py:208-210); FP8 weight_scale_inv tensors are refused as unknown MTP tensors; the attention module is registered as model.layers.{i}.self_attn.attn (model.py:552-556), a name a text-only target's layer i would also hold",
)
CARD_NOTES = (
    "vLLM assumes one MTP layer when the config has no `num_mtp_modules`; set `num_speculative_tokens` explicitly.",
    "vLLM builds this MTP with the target's quantization config under the module names `model.layers.{i}.*` (i counted from 0, not the checkpoint's `model.mtp.layers.{i}`): it loads in BF16 only if the target's exclude list covers those names.",
    "The checkpoint layout of this family has not been checked against a public checkpoint.",
)

MINIMAX_M3 = Family(
    name="minimax_m3",
    summary="MiniMax M3: MoE MTP layers model.mtp.layers.{i}.* with sparse attention, counted by num_mtp_modules; embed_tokens and lm_head are optional copies",
    vllm_class="MiniMaxM3MTP",
    route_model_types=("minimax_m3_vl", "minimax_m3_mtp"),
    route_architectures=("MiniMaxM3SparseForConditionalGeneration", "MiniMaxM3MTP"),
    source_prefixes=("model.mtp.layers.{layer}.", "language_model.model.mtp.layers.{layer}."),
    output_prefix="model.mtp.layers.{layer}.",
    layer_tensors=LAYER_TENSORS,
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=SPARSE,
    replay=minimax_m3_mtp,
    read_geometry=read_geometry,
    param_prefix=LAYER,
    count_key=COUNT_KEY,
    count_default=COUNT_DEFAULT,
    quant_modules=QUANT_MODULES,
    vllm_file="vllm/models/minimax_m3/nvidia/mtp.py",
    facts=FACTS,
    card_notes=CARD_NOTES,
)
