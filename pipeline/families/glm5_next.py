"""GLM-5 next (`glm5_next`, GLM-5.3-Flash): DeepSeek-V3.2's nextn layers from `num_hidden_layers` on, no head of their own.

Facts: vLLM 0.33.0's `vllm/models/glm5next/common/` (`mtp.py`, `model.py`, `attention.py`; the
backend folders hold only kernels). The MTP layer is DeepSeek's nextn head (embedding copy,
`enorm`, `hnorm`, `eh_proj`, `shared_head.norm`) around a decoder layer with MLA attention and
DeepSeek-V3.2's sparse-attention indexer, plus two bare kpool parameters on that indexer, and
the MoE block (router, routed and shared experts). What differs from DeepSeek-V3.2: the layer
builds no `shared_head.head` (the target's LM head is set in after loading), the attention and
indexer are always unquantized, a top-level embedding is skipped, and names under the multimodal
release's `model.language_model.` load as `model.`. No public checkpoint has been read here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from pipeline.families.base import Attention, Geometry, LayerTensor, config_value, field_path, require_int
from pipeline.families.common import layer_norms, moe_quant_modules, nextn_head, read_sizes, routed_experts, shared_experts
from pipeline.families.deepseek_v3 import BLOCK, FULL, LAYER, MLA, MLA_SIZES
from pipeline.families.deepseek_v32 import DEEPSEEK_V32, INDEX_SIZES, INDEXER
from pipeline.families.loader_names import DEEPSEEK_STACKED, nextn_rewrite, nextn_tail, spec_layer

# Fields vLLM 0.33.0 reads from the draft's text config that transformers 5.20.2's Glm5NextTextConfig
# does not declare (configuration_glm5_next.py:100-153), so config.json must carry them: mtp.py:317;
# model.py:256, :312, :380; attention.py:514. The count, num_nextn_predict_layers (mtp.py:114), is read below.
UNDECLARED = {
    "topk_method": str,
    "scoring_func": str,
    "mhc": bool,
    "mla_use_nope": bool,
    "indexer_rope_interleave": bool,
}
NOAUX_TC = "noaux_tc"  # the router's e_score_correction_bias exists only under this topk_method (model.py:256-261)
SHARED = "shared_experts"  # geometry flag: n_shared_experts is not null, so the layer has a shared expert


def _require_present(config: Mapping[str, Any], key: str, kind: type) -> Any:
    try:
        where, value = config_value(config, key)
    except KeyError:
        raise ValueError(
            f"{field_path(config, key)}: is required (vLLM 0.33.0 reads it; transformers' Glm5NextTextConfig does not declare it)"
        ) from None
    if not isinstance(value, kind):
        raise ValueError(f"{where}: must be a {kind.__name__}, found {value!r}")
    return value


def _require_sparse_mtp_mlps(config: Mapping[str, Any], num_hidden_layers: int, num_mtp_layers: int) -> None:
    """Each MTP layer's MLP must be the MoE: layer L takes `mlp_layer_types[L]` when the list is that long,
    else its last entry, else "sparse" (model.py:414-422); transformers' default list is 3 dense layers
    then sparse ones, one per hidden layer (configuration_glm5_next.py:159-162)."""
    try:
        where, types = config_value(config, "mlp_layer_types")
    except KeyError:
        where, types = field_path(config, "mlp_layer_types"), None
    if types is None:
        types = ["dense"] * min(3, num_hidden_layers) + ["sparse"] * (num_hidden_layers - 3)
    if not isinstance(types, list) or not all(isinstance(kind, str) for kind in types):
        raise ValueError(f"{where}: must be a list of strings")
    for layer in range(num_hidden_layers, num_hidden_layers + num_mtp_layers):
        entry, kind = (f"entry {layer}", types[layer]) if layer < len(types) else ("the last entry", types[-1] if types else "sparse")
        if kind != "sparse":
            raise ValueError(
                f"{where}: MTP layer {layer} takes {entry}, {kind!r}, as its MLP; this family knows only the MoE ('sparse') layer"
            )


def _shared_experts(config: Mapping[str, Any]) -> int:
    """The shared-expert count; an explicit null builds none (model.py:279-284)."""
    try:
        if config_value(config, "n_shared_experts")[1] is None:
            return 0
    except KeyError:
        pass
    return require_int(config, "n_shared_experts")


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a GLM-5 next config, flat or under `text_config`; every width must be in config.json."""
    for key, kind in UNDECLARED.items():
        _require_present(config, key, kind)
    num_hidden_layers = require_int(config, "num_hidden_layers")
    num_mtp_layers = require_int(config, "num_nextn_predict_layers")
    _require_sparse_mtp_mlps(config, num_hidden_layers, num_mtp_layers)
    require_int(config, "index_topk")  # sizes the layer's top-k buffer (mtp.py:56-61, model.py:106-112)
    heads = require_int(config, "num_attention_heads")
    sizes = read_sizes(config, {key: value for key, value in MLA_SIZES.items() if key != "qk_rope_head_dim"})
    # NoPE: transformers 5.20.2 refuses a RoPE width above 0 (configuration_glm5_next.py:223-226).
    sizes["qk_rope_head_dim"] = require_int(config, "qk_rope_head_dim", minimum=0)
    sizes.update(read_sizes(config, {**INDEX_SIZES, "index_kpool": "index_kpool"}))
    sizes["shared_intermediate_size"] = sizes["moe_intermediate_size"] * _shared_experts(config)
    topk_method = config_value(config, "topk_method")[1]
    flags = {NOAUX_TC} if topk_method == NOAUX_TC else set()
    if sizes["shared_intermediate_size"]:
        flags.add(SHARED)
    return Geometry(
        hidden_size=require_int(config, "hidden_size"),
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=num_hidden_layers,
        num_mtp_layers=num_mtp_layers,
        intermediate_size=sizes["moe_intermediate_size"],
        attention={FULL: Attention(heads, heads, sizes["v_head_dim"])},
        layer_types=(),
        num_experts=require_int(config, "n_routed_experts"),
        sizes=sizes,
        flags=frozenset(flags),
    )


# The indexer's two bare parameters, loaded under their own names, no `.weight` (attention.py:218-226).
KPOOL = (
    LayerTensor(
        "self_attn.indexer.index_kpool_compress_ape",
        lambda g, a: (g.sizes["index_kpool"], g.sizes["index_head_dim"]),
        f"{BLOCK}self_attn.indexer.index_kpool_compress_ape",
    ),
    LayerTensor(
        "self_attn.indexer.index_kpool_compress_gate",
        lambda g, a: (g.sizes["index_head_dim"], g.hidden_size),
        f"{BLOCK}self_attn.indexer.index_kpool_compress_gate",
    ),
)
# SharedHead(defer_lm_head=True) builds no head (mtp.py:62-66, deepseek_mtp.py:62-63): a shipped one is a KeyError.
HEAD = tuple(tensor for tensor in nextn_head() if tensor.suffix != "shared_head.head.weight")
MOE = tuple(
    replace(tensor, when=NOAUX_TC) if tensor.suffix.endswith("e_score_correction_bias") else tensor
    for tensor in routed_experts(BLOCK, router_bias=True)
)


def glm5_next_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Glm5NextMTP.load_weights` (vllm/models/glm5next/common/mtp.py:290-434): GLM-4.7-Flash's rules with
    DeepSeek-V3.2's indexer fusion (:291-298), after a leading `model.language_model.` becomes `model.`
    (:326-327). Its layer matcher (model.py:1282-1294) takes `model.layers.L.` and `layers.L.`, as
    `spec_layer` does once that prefix is gone. Block-FP8 attention and indexer tensors are
    dequantized on the way (:335-357); their `weight_scale_inv` names are not replayed here."""
    if "rotary_emb.inv_freq" in name:
        return None
    if name.startswith("model.language_model."):
        name = name.replace("model.language_model.", "model.", 1)
    layer = spec_layer(name, geometry)
    if layer is None:
        return None  # :328-330: a top-level embedding too
    return nextn_tail(nextn_rewrite(name, layer), layer, geometry, params, DEEPSEEK_STACKED)


GLM5_NEXT = replace(
    DEEPSEEK_V32,
    name="glm5_next",
    summary="GLM-5 next (GLM-5.3-Flash): MoE MTP layers with MLA and the kpool sparse-attention indexer from num_hidden_layers on; their embed_tokens is an optional copy",
    vllm_class="Glm5NextMTP",
    route_model_types=("glm5_next",),
    route_architectures=(),
    # The multimodal release keeps its text tower under `model.language_model.`; a text-only one under `model.`.
    source_prefixes=("model.layers.{layer}.", "model.language_model.layers.{layer}."),
    output_prefix="model.layers.{layer}.",
    layer_tensors=(
        *HEAD,
        *layer_norms(BLOCK),
        *MLA,
        *INDEXER,
        *KPOOL,
        *MOE,
        *(replace(tensor, when=SHARED) for tensor in shared_experts(BLOCK, "shared_experts")),
    ),
    replay=glm5_next_mtp,
    read_geometry=read_geometry,
    # Attention and indexer are built with quant_config=None (model.py:408, attention.py:519-528), the head not at all.
    quant_modules=tuple(
        replace(module, when=SHARED) if ".shared_experts." in module.prefix else module
        for module in moe_quant_modules(LAYER, "shared_experts")
    ),
    vllm_file="vllm/models/glm5next/common/mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:1146-1158: model_type glm5_next routes to Glm5NextMTP (architecture Glm5NextMTPModel, registry.py:732); n_predict is the text config's num_nextn_predict_layers",
        "transformers 5.20.2 configuration_glm5_next.py:268-312: model_type glm5_next is the multimodal Glm5NextConfig; a flat config's fields are forwarded into its text_config, which vLLM reads",
        "vLLM 0.33.0 vllm/models/glm5next/common/mtp.py:45-78: enorm, hnorm, eh_proj (a plain nn.Linear), SharedHead(defer_lm_head=True) with no head, and a Glm5NextDecoderLayer under the layer's prefix with is_mtp_layer (MLA attention, never KDA, no mHC parameters: model.py:381, :453)",
        "vLLM 0.33.0 glm5next/common/attention.py:507-528 and :218-246: the MTP layer always builds the indexer (index_topk is required, mtp.py:56-61): wq_b, wk_weights_proj, k_norm weight and bias, and the bare index_kpool_compress_ape [index_kpool, index_head_dim] and index_kpool_compress_gate [index_head_dim, hidden]",
        "vLLM 0.33.0 glm5next/common/model.py:414-439: MTP layer L's MLP is mlp_layer_types[L] when the list is that long, else its last entry; sparse builds Glm5NextMoE (router bias only under topk_method noaux_tc, :256-261; no shared expert when n_shared_experts is null, :279-284)",
        "vLLM 0.33.0 vllm/models/glm5next/common/mtp.py:290-434: model.language_model. becomes model. (:326-327); model.layers.{num_hidden_layers+i}. is read (model.py:1282-1294), everything else skipped, a top-level embedding included; DeepSeek-V3.2's fusions and .mtp_block. insertion; a shipped shared_head.head is a KeyError; at least one tensor per MTP layer (:420-433)",
        "vLLM 0.33.0 glm5next/common/model.py:408 and attention.py:519-528: attention and indexer are built with quant_config=None; the MoE takes the target's quant_config (llm_base_proposer.py:1265-1315), so only the experts and shared experts need the target's exclude list",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens is replaced by the target's (pipeline parallelism 1) and each layer's empty shared_head.head is set to the target's lm_head",
        "vLLM 0.33.0 glm5next/common/model.py:1297-1353: on ROCm gfx950 at TP 4 or 8 the shared expert loads into the fused MoE's slot n_routed_experts; the checkpoint names are the same",
        "unverified: checkpoint layout unverified (no public checkpoint read); a block-FP8 source's weight_scale_inv tensors (dequantized by vLLM, model.py:1356-1488) are refused as unknown MTP tensors",
    ),
    card_notes=(
        "vLLM reads `model.layers.{num_hidden_layers + i}.*` (one layer per `num_nextn_predict_layers`) from this draft (or the same names under `model.language_model.`) and builds their MoE with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers those layers' experts.",
        "vLLM replaces the layer's `embed_tokens` with the target's after loading and gives the layer the target's LM head.",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
