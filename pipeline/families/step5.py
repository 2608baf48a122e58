"""StepFun Step5 (`Step5ForCausalLM` / `Step5ForConditionalGeneration`): dense MTP layers after the backbone.

Facts: vLLM 0.33.0's `vllm/models/step5/nvidia/mtp.py` and `model.py`. The MTP layer keeps Step-3.7's
shape (enorm, hnorm, eh_proj, a per-layer head, `.transformer.` names, `.mtp_block.` inserted), so the
tensors Step-3.7 has are reused from its table. What differs: the attention of a full-attention MTP
layer carries the sparse (DSA) indexer, fused with q/k/v and the head gate into `qkv_indexer_proj`;
other layers fuse q/k/v with the gate into `qkvg_proj`; the module is built with the target's
quantization config; `layers.N.*` loads; names the loader cannot place are skipped with a warning,
never a KeyError. No public checkpoint of this family has been read here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import (
    Attention,
    Family,
    Geometry,
    LayerTensor,
    QuantModule,
    field_path,
    optional_flag,
    optional_value,
    require_int,
)
from pipeline.families.step3p7 import FULL, SLIDING, STEP3P7, other_attention
from pipeline.families.step3p7 import LAYER_TENSORS as STEP3P7_TENSORS

BLOCK = "mtp_block."
ATTN = f"{BLOCK}self_attn."
# What Step5Config (transformers_utils/configs/step5.py:163-186) keeps the MTP-inclusive layer types under.
LAYER_TYPES_WITH_MTP = "layer_types_with_mtp"
PROXY_DIM = 256  # vllm/models/step5/nvidia/config.py:140-142: the only width DSA accepts
VL_ARCHITECTURE = "Step5ForConditionalGeneration"
STEP5_ARCHITECTURES = ("Step5ForCausalLM", VL_ARCHITECTURE)
VL_TARGET = "vl_target"  # geometry flag: vLLM builds the target as the VLM class and renames its exclude list
# Step5ForConditionalGeneration.hf_to_vllm_mapper's prefix rules (step5/nvidia/vl.py:16-18 over
# model_executor/models/step3p7.py:22-32), applied in order, each to the result of the one before
# (models/utils.py:131-137). Its substring and share_expert rules name no module of a dense MTP layer.
VL_PREFIXES = (
    ("model.vision_model.", "vision_model."),
    ("model.vit_large_projector.", "vit_large_projector."),
    ("model.vit_large_projector", "vit_large_projector"),
    ("model.language_model.", "language_model.model."),
    ("model.language_model", "language_model.model"),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("lm_head", "language_model.lm_head"),
)


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a Step5 config (flat, or the VLM's `text_config`).

    Refuses what fixes the MTP's tensors and that vLLM 0.33.0 cannot build: non-GQA attention,
    attention biases, plain norms, a missing sparse section, a proxy width or index key head count
    DSA rejects, a sparse layer without the head gate, MoE MTP layers. The sparse section's other
    limits (indexer heads per provider group, topk, region block size, apply_to_layer_types, the
    fixed options, config.py:110-197), DSA's head_dim 128 or 192 and its tensor-parallel geometry
    (model.py:372-431, 1040-1044) are left to vLLM: they do not change a tensor name or shape."""
    hidden = require_int(config, "hidden_size")
    heads = require_int(config, "num_attention_heads")
    num_hidden = require_int(config, "num_hidden_layers")
    num_mtp = require_int(config, "num_nextn_predict_layers", minimum=0)
    head_dim = require_int(config, "head_dim", default=hidden // heads)
    attention = {FULL: Attention(heads, require_int(config, "num_attention_groups"), head_dim)}
    # model.py:1867-1878 reads the section's head_dim with no fallback.
    attention.update(other_attention(config, head_dim=None))
    attention.setdefault(SLIDING, attention[FULL])
    swa_heads = optional_value(config, "swa_num_attention_heads")
    if swa_heads is not None and optional_value(config, "sliding_window") is not None:
        # model.py:907-911: sliding layers take swa_num_attention_heads over any other head count.
        attention[SLIDING] = replace(attention[SLIDING], heads=require_int(config, "swa_num_attention_heads"))
    _refuse_unbuildable(config)
    layer_types = _layer_types(config, num_hidden + num_mtp)
    flags, sizes = _sparse(config, layer_types[num_hidden:])
    _refuse_moe_mtp(config, num_hidden, num_mtp)
    return Geometry(
        hidden_size=hidden,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=num_hidden,
        num_mtp_layers=num_mtp,
        intermediate_size=require_int(config, "intermediate_size"),
        attention=attention,
        layer_types=layer_types,
        sizes=sizes,
        flags=frozenset(
            flags
            | ({"gate"} if optional_flag(config, "use_head_wise_attn_gate", False) else set())
            | ({VL_TARGET} if _is_vl(config) else set())
        ),
    )


def _is_vl(config: Mapping[str, Any]) -> bool:
    """Whether vLLM builds this config as the VLM class: the first Step5 architecture listed picks the
    class (model_executor/models/registry.py:211, 632-635); without one, model_type step5_vl does."""
    architectures = config.get("architectures") or []
    listed = [name for name in architectures if name in STEP5_ARCHITECTURES]
    return listed[0] == VL_ARCHITECTURE if listed else config.get("model_type") == "step5_vl"


def target_module_rename(name: str, geometry: Geometry) -> str:
    """An entry of the target's exclude list as the MTP sees it: a VLM target's class first maps
    `model.language_model.` and `model.` to `language_model.model.` (model_loader/utils.py:379-387),
    then Step5MTP drops `language_model.` (mtp.py:274-281), so `model.language_model.layers.N` names
    the MTP's `model.layers.N`."""
    if VL_TARGET in geometry.flags:
        for old, new in VL_PREFIXES:
            if name.startswith(old):
                name = new + name[len(old) :]
    return name.removeprefix("language_model.")


def _refuse_unbuildable(config: Mapping[str, Any]) -> None:
    """The switches that make vLLM 0.33.0 refuse to build any Step5 decoder layer."""
    if (optional_value(config, "att_impl_type") or "GQA") != "GQA":
        raise ValueError(f"{field_path(config, 'att_impl_type')}: vLLM 0.33.0 builds only GQA attention for Step5 (model.py:1927-1930)")
    if optional_flag(config, "attention_bias", False):
        raise ValueError(f"{field_path(config, 'attention_bias')}: vLLM 0.33.0 does not support Step5 attention biases (model.py:886-887)")
    if not optional_flag(config, "zero_centered", True):
        raise ValueError(f"{field_path(config, 'zero_centered')}: vLLM 0.33.0 requires zero-centred Step5 norms (layernorm.py:164-165)")


def _layer_types(config: Mapping[str, Any], total: int) -> tuple[str, ...]:
    """Every layer's attention type, MTP layers included (model.py:226-236 reads layer_types_with_mtp first)."""
    key = LAYER_TYPES_WITH_MTP if optional_value(config, LAYER_TYPES_WITH_MTP) else "layer_types"
    types = optional_value(config, key)
    if not types:
        raise ValueError(
            f"{field_path(config, LAYER_TYPES_WITH_MTP)}: is required to know each MTP layer's attention "
            "(vLLM 0.33.0 picks sparse or sliding attention per layer from it, model.py:451-465)"
        )
    if not isinstance(types, list) or not all(isinstance(item, str) for item in types):
        raise ValueError(f"{field_path(config, key)}: must be a list of strings")
    if len(types) < total:
        raise ValueError(f"{field_path(config, key)}: has {len(types)} entries, the MTP layers need {total} (configs/step5.py:173-178)")
    return tuple(types[:total])


def _sparse(config: Mapping[str, Any], mtp_types: tuple[str, ...]) -> tuple[set[str], dict[str, int]]:
    """The sparse section's flag and indexer widths (vllm/models/step5/nvidia/config.py:74-198)."""
    section = optional_value(config, "sparse_config")
    where = field_path(config, "sparse_config")
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: is required: vLLM 0.33.0 refuses Step5 checkpoints without a sparse section (model.py:1853-1858)")
    if section.get("enabled") is False:
        return set(), {}
    for key, allowed in (("proxy_dim", PROXY_DIM), ("sparse_indexer_num_k_heads", 1)):
        if _sparse_int(section, key, allowed, where) != allowed:
            raise ValueError(f"{where}.{key}: vLLM 0.33.0 requires {allowed} (config.py:140-156)")
    if FULL in mtp_types and not optional_flag(config, "use_head_wise_attn_gate", False):
        raise ValueError(
            f"{field_path(config, 'use_head_wise_attn_gate')}: must be true: a full-attention MTP layer uses sparse attention, "
            "which vLLM 0.33.0 builds only with the head-wise gate (model.py:1052-1055)"
        )
    indexer_heads = _sparse_int(section, "sparse_indexer_num_heads", 16, where)
    if indexer_heads < 1:
        raise ValueError(f"{where}.sparse_indexer_num_heads: must be a positive integer, found {indexer_heads!r}")
    return {"sparse"}, {"proxy_dim": PROXY_DIM, "indexer_heads": indexer_heads, "indexer_k_heads": 1}


def _sparse_int(section: Mapping[str, Any], key: str, default: int, where: str) -> int:
    """An integer of the sparse section as vLLM reads it: null or "" is the default, else int(value) (config.py:110-123)."""
    value = section.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}.{key}: must be an integer, found {value!r}") from None


def _refuse_moe_mtp(config: Mapping[str, Any], num_hidden: int, num_mtp: int) -> None:
    """mtp.py:300-301: Step5MTP builds dense MTP layers only; MoE layers are listed by index (model.py:256-285)."""
    for key in ("moe_layers_enum", "moe_layer_list"):
        value = optional_value(config, key)
        if value is None:
            continue
        items = value.split(",") if isinstance(value, str) else value
        try:
            indices = {int(item) for item in items if str(item).strip()}
        except (TypeError, ValueError):
            raise ValueError(f"{field_path(config, key)}: must list integer layer indices") from None
        moe = sorted(indices & set(range(num_hidden, num_hidden + num_mtp)))
        if moe:
            raise ValueError(
                f"{field_path(config, key)}: names MTP layer {moe[0]}, but vLLM 0.33.0 Step5MTP supports dense MTP layers only"
            )


def _layer_type(g: Geometry, layer: int) -> str:
    return g.layer_types[layer] if layer < len(g.layer_types) else FULL


def is_sparse_layer(g: Geometry, layer: int) -> bool:
    """model.py:1859-1862, 1017: a full-attention layer under an enabled sparse section uses the DSA indexer."""
    return "sparse" in g.flags and _layer_type(g, layer) == FULL


def _fused_gate(g: Geometry, layer: int) -> bool:
    """model.py:990-1016, 1076-1090: q/k/v and the head gate fuse into qkvg_proj (tensor parallelism 1, BF16)."""
    return not is_sparse_layer(g, layer) and "gate" in g.flags


def _plain(g: Geometry, layer: int) -> bool:
    return not is_sparse_layer(g, layer) and "gate" not in g.flags


def _proxy_rows(count: str) -> Any:
    return lambda g, a: (g.sizes[count] * g.sizes["proxy_dim"], g.hidden_size)


def _proxy(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.sizes["proxy_dim"],)


# model.py:1057-1070 (qkv_indexer_proj), 1217-1240 (indexer weights, ssmax_s, norms), config.py:12-29.
SPARSE_INDEXER = (
    LayerTensor(
        "self_attn.sparse_indexer_q.weight", _proxy_rows("indexer_heads"), f"{ATTN}qkv_indexer_proj.weight", in_layer=is_sparse_layer
    ),
    LayerTensor(
        "self_attn.sparse_indexer_k.weight", _proxy_rows("indexer_k_heads"), f"{ATTN}qkv_indexer_proj.weight", in_layer=is_sparse_layer
    ),
    LayerTensor(
        "self_attn.sparse_indexer_z.weight", _proxy_rows("indexer_k_heads"), f"{ATTN}qkv_indexer_proj.weight", in_layer=is_sparse_layer
    ),
    LayerTensor(
        "self_attn.sparse_indexer_w.weight",
        lambda g, a: (g.sizes["indexer_heads"], g.hidden_size),
        f"{ATTN}sparse_indexer_w.weight",
        in_layer=is_sparse_layer,
    ),
    LayerTensor("self_attn.ssmax_s", lambda g, a: (a.heads,), f"{ATTN}ssmax_s", in_layer=is_sparse_layer),
    LayerTensor("self_attn.sparse_indexer_q_norm.weight", _proxy, f"{ATTN}sparse_indexer_q_norm.weight", in_layer=is_sparse_layer),
    LayerTensor("self_attn.sparse_indexer_k_norm.weight", _proxy, f"{ATTN}sparse_indexer_k_norm.weight", in_layer=is_sparse_layer),
    LayerTensor("self_attn.sparse_indexer_k_norm.bias", _proxy, f"{ATTN}sparse_indexer_k_norm.bias", in_layer=is_sparse_layer),
)
GATE = "self_attn.g_proj.weight"
QKV = tuple(f"self_attn.{p}_proj.weight" for p in "qkv")


def _layer_tensors() -> tuple[LayerTensor, ...]:
    """Step-3.7's table, its q/k/v and gate loading into the parameter each kind of layer declares."""
    table: list[LayerTensor] = []
    for tensor in STEP3P7_TENSORS:
        if tensor.suffix not in (*QKV, GATE):
            table.append(tensor)
            continue
        table.append(replace(tensor, param=f"{ATTN}qkv_indexer_proj.weight", in_layer=is_sparse_layer))
        table.append(replace(tensor, param=f"{ATTN}qkvg_proj.weight", in_layer=_fused_gate))
        if tensor.suffix != GATE:
            table.append(replace(tensor, param=f"{ATTN}qkv_proj.weight", in_layer=_plain))
        else:
            table.extend(SPARSE_INDEXER)
    return tuple(table)


LAYER_TENSORS = _layer_tensors()

# vLLM module prefixes the target's quantization config sees: the decoder under `.mtp_block.`
# (mtp.py:108-114), the head as `shared_head.head` (mtp.py:81-86); eh_proj is a plain nn.Linear
# (mtp.py:107) and sparse_indexer_w is built without a quantization config (model.py:708-744).
LAYER = "model.layers.{layer}."
SPARSE_SHARDS = ("q_proj", "k_proj", "v_proj", "sparse_indexer_q", "sparse_indexer_k", "sparse_indexer_z", "g_proj")
QUANT_MODULES = (
    # Refuses any quantization (model.py:505-512): the exclude list must cover it.
    QuantModule(f"{LAYER}{ATTN}qkv_indexer_proj", "linear", SPARSE_SHARDS, in_layer=is_sparse_layer),
    # qkvg_proj keeps the qkv_proj prefix (model.py:1086-1088); fusing needs both it and g_proj unquantized.
    QuantModule(
        f"{LAYER}{ATTN}qkv_proj", "linear", ("q_proj", "k_proj", "v_proj"), in_layer=lambda g, layer: not is_sparse_layer(g, layer)
    ),
    QuantModule(f"{LAYER}{ATTN}g_proj", in_layer=_fused_gate),
    QuantModule(f"{LAYER}{ATTN}o_proj"),
    QuantModule(f"{LAYER}{BLOCK}mlp.gate_up_proj", "linear", ("gate_proj", "up_proj")),
    QuantModule(f"{LAYER}{BLOCK}mlp.down_proj"),
    QuantModule(f"{LAYER}shared_head.head", "head"),
)

# model.py:206-223: (packed parameter, checkpoint part), tried in this order; a part whose packed
# name the module does not declare falls through to the next (mtp.py:376-386).
STEP5_SHARDS = (
    ("qkvg_proj", "q_proj"),
    ("qkvg_proj", "k_proj"),
    ("qkvg_proj", "v_proj"),
    ("qkvg_proj", "g_proj"),
    ("qkv_proj", "q_proj"),
    ("qkv_proj", "k_proj"),
    ("qkv_proj", "v_proj"),
    ("qkv_indexer_proj", "q_proj"),
    ("qkv_indexer_proj", "k_proj"),
    ("qkv_indexer_proj", "v_proj"),
    ("qkv_indexer_proj", "sparse_indexer_q"),
    ("qkv_indexer_proj", "sparse_indexer_k"),
    ("qkv_indexer_proj", "sparse_indexer_z"),
    ("qkv_indexer_proj", "g_proj"),
    ("gate_up_proj", "gate_proj"),
    ("gate_up_proj", "up_proj"),
)


def step5_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Step5MTP.load_weights` (mtp.py:353-421, rewrite :423-443). A name with no parameter is
    skipped with a warning (:402-406), so None here is also a tensor vLLM drops."""
    if "rotary_emb.inv_freq" in name:
        return None
    if name.startswith("layers."):
        name = f"model.{name}"  # :370-371
    layer = loader_names.spec_layer(name, geometry)
    if "embed_tokens" not in name and layer is None:
        return None
    if layer is not None and not any(part in name for part in loader_names.SPEC_LAYER_WEIGHTS):
        name = name.replace(f"model.layers.{layer}.", f"model.layers.{layer}.{BLOCK}")
    for param, part in STEP5_SHARDS:
        if part not in name or "experts" in name or "moe" in name:
            continue
        packed = name.replace(part, param)
        if packed in params:
            return packed
    plain = loader_names.step_plain_name(name, layer, params)
    return plain if plain in params else None


STEP5 = Family(
    name="step5",
    summary="StepFun Step5: dense MTP layers at num_hidden_layers.., sparse-attention indexer in full-attention ones, plus the embedding",
    vllm_class="Step5MTP",
    route_model_types=("step5", "step5_vl"),
    route_architectures=STEP5_ARCHITECTURES,
    route_any_architecture=True,
    source_prefixes=STEP3P7.source_prefixes,
    output_prefix=STEP3P7.output_prefix,
    layer_tensors=LAYER_TENSORS,
    extra_tensors=STEP3P7.extra_tensors,
    # model.py:434-448: each of these, when a non-empty list, must reach the MTP layer or vLLM raises ValueError.
    per_layer_arrays=(LAYER_TYPES_WITH_MTP, "rope_theta", "partial_rotary_factors", "swiglu_limits_shared", "use_rope_layers"),
    mtp_layer_type=FULL,
    replay=step5_mtp,
    read_geometry=read_geometry,
    quantization_from="target",
    quant_modules=QUANT_MODULES,
    shared_weights="copy",
    shared_weights_choices=("copy",),
    vllm_file="vllm/models/step5/nvidia/mtp.py",
    target_module_rename=target_module_rename,
    facts=(
        "vLLM 0.33.0 config/speculative.py:1053-1068: model_type step5/step5_vl, or any architecture Step5ForCausalLM/Step5ForConditionalGeneration, routes to Step5MTP; the text config is used, n_predict = num_nextn_predict_layers",
        "vLLM 0.33.0 vllm/models/step5/nvidia/mtp.py:94-114, 171-197: layers num_hidden_layers.. each hold enorm, hnorm, eh_proj (plain nn.Linear), shared_head.{norm,head} and a Step5DecoderLayer under .mtp_block.; num_nextn_predict_layers must be > 0",
        "vLLM 0.33.0 vllm/models/step5/nvidia/mtp.py:300-301: a MoE MTP layer raises NotImplementedError; model.py:1942-1960 builds a gate_up/down MLP otherwise",
        "vLLM 0.33.0 vllm/models/step5/nvidia/model.py:1017-1100, 1154-1160, 1217-1240: a full-attention layer under an enabled sparse_config fuses q/k/v, sparse_indexer_q/k/z and g_proj into qkv_indexer_proj and adds sparse_indexer_w, ssmax_s, sparse_indexer_q_norm and sparse_indexer_k_norm (weight and bias); other gated layers fuse q/k/v/g into qkvg_proj when tensor parallelism does not exceed the KV heads and both are unquantized (assumed here), else qkv_proj and g_proj",
        "vLLM 0.33.0 vllm/models/step5/nvidia/mtp.py:353-443: layers.N. gains model.; .mtp_block. is inserted except for embed_tokens/enorm/hnorm/eh_proj/shared_head; packed names are used only when declared (:376-386); .transformer. is dropped, shared_head.output becomes shared_head.head; any other undeclared name is skipped with a warning (:402-406), never a KeyError",
        "vLLM 0.33.0 vllm/models/step5/nvidia/mtp.py:411-420: every parameter must load (completeness on by default, model_loader/mtp_validation.py:9-16), the embedding and every per-layer head included",
        "vLLM 0.33.0 vllm/models/step5/nvidia/mtp.py:104 and v1/spec_decode/llm_base_proposer.py:1265-1315: the module is built with the target's quant_config: a VLM target's class first maps model.language_model. and model. to language_model.model. (vl.py:16-18, step3p7.py:22-32, model_loader/utils.py:379-387), then the exclude list loses language_model. (mtp.py:274-281); qkv_indexer_proj refuses any quantization (model.py:505-512)",
        "vLLM 0.33.0 vllm/models/step5/nvidia/mtp.py:269, 289-291 and llm_base_proposer.py:1438-1470, 1516-1560: has_own_lm_head; only the first MTP layer's head is compared with the target's lm_head, and if equal the target's head replaces every layer's shared_head.head, else each layer keeps its own; the embedding is replaced by the target's",
        "vLLM 0.33.0 transformers_utils/configs/step5.py:157-186 and vllm/models/step5/nvidia/model.py:226-236, 434-448: layer_types_with_mtp spans backbone and MTP layers; per-layer arrays shorter than the MTP layer raise ValueError",
        "unverified: checkpoint layout unverified (no public checkpoint read); the MTP head is assumed stored as Step-3.7's transformer.shared_head.{norm,output} (the loader also reads shared_head.head)",
    ),
    card_notes=(
        "Norm weights are zero-centred: vLLM computes `x * (1 + w)`. A consumer that applies a plain RMSNorm must add 1 to these weights.",
        "Each MTP layer has its own head (`transformer.shared_head.output`). vLLM compares only the first MTP layer's head with the target's `lm_head`: if they are equal, the target's head replaces every layer's head; otherwise each layer keeps its own. The draft ships the embedding because vLLM's completeness check requires it.",
        "vLLM builds this MTP with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers `model.layers.{num_hidden_layers}.*`; a sparse-attention layer cannot be quantized at all.",
        "vLLM 0.33.0 drops draft tensors it has no parameter for with only a warning; `verify` replays its loader and refuses any.",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
