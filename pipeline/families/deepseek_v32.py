"""DeepSeek-V3.2 (`deepseek_v32`): DeepSeek-V3's nextn layer plus the sparse-attention "lightning indexer".

Facts: vLLM 0.33.0's `vllm/models/deepseek_v32/` (the CUDA build, `nvidia/mtp.py`; ROCm's
`amd/mtp.py` loads the same names). The MTP layer is DeepSeek-V3's (nextn head, MLA attention,
routed and shared experts) and its attention always carries an indexer: `wq_b` from the query
rank, `wk` and `weights_proj` fused into `wk_weights_proj`, and a LayerNorm `k_norm` with a bias.
Everything else, loader rules included, is DeepSeek-V3's. No public checkpoint has been read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipeline.families.base import Attention, Geometry, LayerTensor, QuantModule, require_int
from pipeline.families.common import NEXTN_HEAD_MODULE, moe_quant_modules, read_sizes
from pipeline.families.deepseek_v3 import BLOCK, DEEPSEEK_V3, LAYER, MLA_MODULES
from pipeline.families.deepseek_v3 import read_geometry as read_deepseek_geometry

INDEX_SIZES = {"index_n_heads": "index_n_heads", "index_head_dim": "index_head_dim"}


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """DeepSeek-V3's geometry plus the indexer's head count and width (`index_topk` must be set too)."""
    require_int(config, "index_topk")  # read when the layer is built (nvidia/mtp.py:81-86)
    geometry = read_deepseek_geometry(config)
    return replace(geometry, sizes={**geometry.sizes, **read_sizes(config, INDEX_SIZES)})


def _index_width(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.sizes["index_head_dim"],)


# deepseek_v32/attention.py:71-87; wk and weights_proj load into wk_weights_proj (nvidia/mtp.py:366-373).
WK_WEIGHTS = f"{BLOCK}self_attn.indexer.wk_weights_proj.weight"
INDEXER = (
    LayerTensor(
        "self_attn.indexer.wq_b.weight",
        lambda g, a: (g.sizes["index_n_heads"] * g.sizes["index_head_dim"], g.sizes["q_lora_rank"]),
        f"{BLOCK}self_attn.indexer.wq_b.weight",
    ),
    LayerTensor("self_attn.indexer.wk.weight", lambda g, a: (g.sizes["index_head_dim"], g.hidden_size), WK_WEIGHTS),
    LayerTensor("self_attn.indexer.weights_proj.weight", lambda g, a: (g.sizes["index_n_heads"], g.hidden_size), WK_WEIGHTS),
    LayerTensor("self_attn.indexer.k_norm.weight", _index_width, f"{BLOCK}self_attn.indexer.k_norm.weight"),
    LayerTensor("self_attn.indexer.k_norm.bias", _index_width, f"{BLOCK}self_attn.indexer.k_norm.bias"),
)
# wq_b is a quantizable ReplicatedLinear; wk_weights_proj is built with quant_config=None (attention.py:71-86).
WQ_B_MODULE = QuantModule(f"{LAYER}self_attn.indexer.wq_b")

DEEPSEEK_V32 = replace(
    DEEPSEEK_V3,
    name="deepseek_v32",
    summary="DeepSeek-V3.2: 1 MoE MTP layer at num_hidden_layers with MLA and the sparse-attention indexer; its embed_tokens and shared_head.head are optional copies",
    vllm_class="DeepseekV32MTP",
    route_model_types=("deepseek_v32",),
    layer_tensors=(*DEEPSEEK_V3.layer_tensors, *INDEXER),
    read_geometry=read_geometry,
    quant_modules=(*MLA_MODULES, WQ_B_MODULE, *moe_quant_modules(LAYER, "shared_experts"), NEXTN_HEAD_MODULE),
    vllm_file="vllm/models/deepseek_v32/nvidia/mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:733-763: model_type deepseek_v32 (and glm_moe_dsa, not covered here) routes to DeepseekV32MTP (architecture DeepseekV32MTPModel)",
        "vLLM 0.33.0 vllm/models/deepseek_v32/__init__.py: CUDA loads nvidia/mtp.py, ROCm amd/mtp.py (whose loader differs only with AITER fused shared experts), other platforms DeepSeekMTP",
        "vLLM 0.33.0 vllm/models/deepseek_v32/nvidia/mtp.py:64-105: enorm, hnorm, eh_proj, SharedHead and a DeepseekV32DecoderLayer under the layer's prefix, built with the target's quant_config",
        "vLLM 0.33.0 deepseek_v32/attention.py:164-200: an MTP layer always builds the indexer (is_mtp_layer); :50-87: wq_b [index_n_heads x index_head_dim, q_lora_rank], wk_weights_proj [index_head_dim + index_n_heads, hidden] with quant_config=None, k_norm a LayerNorm with weight and bias",
        "vLLM 0.33.0 deepseek_v32/nvidia/mtp.py:365-499: DeepSeek-V3's rules (spec-layer names, .mtp_block., fused_qkv_a_proj, gate_up_proj, experts.routed_experts.*), plus wk and weights_proj fused into wk_weights_proj; a top-level embed_tokens loads when declared (:394-404); at least one tensor per MTP layer (:487-497)",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and shared_head.head are replaced by the target's",
        "unverified: checkpoint layout unverified (no public checkpoint read); the indexer's checkpoint names are the module's own (wq_b, wk, weights_proj, k_norm); an FP8 wk with weight_scale_inv (deepseek_v2.py:857-890) is refused as an unknown MTP tensor",
    ),
    card_notes=(
        "vLLM reads only `model.layers.{num_hidden_layers}.*` from this draft and builds it with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers that layer (the indexer's `wq_b` included).",
        "vLLM replaces the layer's `embed_tokens` and `shared_head.head` with the target's after loading.",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
