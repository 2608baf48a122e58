"""DeepSeek-V4 (`deepseek_v4`): `mtp.{i}.*` layers with hyper-connections, under V4's own tensor names.

Facts: vLLM 0.33.0's `vllm/models/deepseek_v4/nvidia/mtp.py` and `nvidia/model.py` (the CUDA build;
ROCm's `amd/mtp.py` reads the same names), with transformers 5.20.2's `DeepseekV4Config`. The
shape is DeepSeek's nextn layer after the backbone (vLLM numbers it `model.layers.{nh + i}` for
nh = num_hidden_layers, its head `model.layers.L.head`, its decoder under `.mtp_block.`), but the checkpoint counts
the layers from 0 as `mtp.{i}.*` and every tensor has V4's own name: separate `e_proj` / `h_proj`
instead of `eh_proj`, the `hc_*` mixing weights of the manifold-constrained hyper-connections,
`attn.{wq_a,wkv,q_norm,wq_b,kv_norm,wo_a,wo_b,attn_sink}` and `ffn.experts.{e}.w1..w3`. An MTP layer
has compress ratio 1 (`attention.py:235-242`), so no indexer (built only for ratio 4, :301-303) and
no compressor (only above 1, :368-370). No public checkpoint of this family has been read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families.base import Attention, Family, Geometry, LayerTensor, QuantModule, require_int
from pipeline.families.common import NEXTN_HEAD_MODULE, ShapeRule, cols, hidden, read_sizes, rows, vocab_rows
from pipeline.families.deepseek_v4_names import FP4_EXPERTS, deepseek_v4_mtp, target_module_rename

FULL = "full_attention"
COUNT_DEFAULT = 1  # transformers 5.20.2 configuration_deepseek_v4.py:159; vLLM reads the attribute (speculative.py:772)
SHARED_DEFAULT = 1  # n_shared_experts, transformers 5.20.2 configuration_deepseek_v4.py:136
SIZES = {
    "q_lora_rank": "q_lora_rank",
    "o_groups": "o_groups",
    "o_lora_rank": "o_lora_rank",
    "moe_intermediate_size": "moe_intermediate_size",
    "hc_mult": "hc_mult",
}


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a DeepSeek-V4 config; the widths vLLM's MTP layer is built from go into `sizes`."""
    vision = config.get("vision_n_layers")
    if isinstance(vision, int) and not isinstance(vision, bool) and vision > 0:
        raise ValueError(
            "vision_n_layers: the vision model's MoE gates carry bias_vl (vLLM 0.33.0 nvidia/model.py:311-318), not in this family's table"
        )
    heads = require_int(config, "num_attention_heads")
    head_dim = require_int(config, "head_dim")
    sizes = read_sizes(config, SIZES)
    if heads * head_dim % sizes["o_groups"]:
        raise ValueError(f"o_groups: must divide num_attention_heads x head_dim ({heads * head_dim}), found {sizes['o_groups']}")
    flags = set()
    if config.get("topk_method") == "noaux_tc":  # the router's correction bias (nvidia/model.py:301-309)
        flags.add("router_bias")
    sizes["shared_intermediate_size"] = 0  # null n_shared_experts: no shared experts (nvidia/model.py:320-334)
    if "n_shared_experts" not in config or config["n_shared_experts"] is not None:
        shared = require_int(config, "n_shared_experts", default=SHARED_DEFAULT)
        sizes["shared_intermediate_size"] = sizes["moe_intermediate_size"] * shared
        flags.add("shared_experts")
    if config.get("expert_dtype", "fp4") == "fp4":  # which scale name the loader gives expert `.scale` tensors (mtp.py:403-407)
        flags.add(FP4_EXPERTS)
    return Geometry(
        hidden_size=require_int(config, "hidden_size"),
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, "num_nextn_predict_layers", default=COUNT_DEFAULT),
        intermediate_size=sizes["moe_intermediate_size"],
        attention={FULL: Attention(heads, 1, head_dim)},
        layer_types=(),
        first_mtp_layer=0,
        num_experts=require_int(config, "n_routed_experts"),
        sizes=sizes,
        flags=frozenset(flags),
    )


def _square(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.hidden_size, g.hidden_size)


def _hc_mult(g: Geometry) -> int:
    return g.sizes["hc_mult"]


# Hyper-connection weights, float32 in vLLM. The head mixes hc_mult streams (mtp.py:120-134), the
# decoder (2 + hc_mult) x hc_mult values before attention and before the MoE (nvidia/model.py:617-665).
def _head_fn(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (_hc_mult(g), _hc_mult(g) * g.hidden_size)


def _head_base(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (_hc_mult(g),)


def _head_scale(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (1,)


def _mix_fn(g: Geometry, a: Attention) -> tuple[int, ...]:
    return ((2 + _hc_mult(g)) * _hc_mult(g), _hc_mult(g) * g.hidden_size)


def _mix_base(g: Geometry, a: Attention) -> tuple[int, ...]:
    return ((2 + _hc_mult(g)) * _hc_mult(g),)


def _mix_scale(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (3,)


HC_SHAPES = {"fn": _mix_fn, "base": _mix_base, "scale": _mix_scale}


def _width(size: str) -> ShapeRule:
    return lambda g, a: (g.sizes[size],)


def _wq_b(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.heads * a.head_dim, g.sizes["q_lora_rank"])


def _wo_a(g: Geometry, a: Attention) -> tuple[int, ...]:
    groups = g.sizes["o_groups"]
    return (groups * g.sizes["o_lora_rank"], a.heads * a.head_dim // groups)


def _wo_b(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.hidden_size, g.sizes["o_groups"] * g.sizes["o_lora_rank"])


# The layer's own tensors, kept beside the decoder (mtp.py:98-138, 529-539). The embedding and head
# are copies vLLM replaces with the target's (llm_base_proposer.py:1418-1575).
HEAD = (
    LayerTensor("emb.tok_emb.weight", vocab_rows, "model.embed_tokens.weight", top_level=True, shared=True),
    LayerTensor("enorm.weight", hidden, "enorm.weight"),
    LayerTensor("hnorm.weight", hidden, "hnorm.weight"),
    LayerTensor("e_proj.weight", _square, "e_proj.weight"),
    LayerTensor("h_proj.weight", _square, "h_proj.weight"),
    LayerTensor("norm.weight", hidden, "shared_head.norm.weight"),
    LayerTensor("head.weight", vocab_rows, "shared_head.head.weight", shared=True),
    LayerTensor("hc_head_fn", _head_fn, "hc_head_fn"),
    LayerTensor("hc_head_base", _head_base, "hc_head_base"),
    LayerTensor("hc_head_scale", _head_scale, "hc_head_scale"),
)
BLOCK = "mtp_block."
# DeepseekV4DecoderLayer (nvidia/model.py:585-665) and its attention (attention.py:250-288).
DECODER = (
    LayerTensor("attn_norm.weight", hidden, f"{BLOCK}attn_norm.weight"),
    LayerTensor("ffn_norm.weight", hidden, f"{BLOCK}ffn_norm.weight"),
    *(LayerTensor(f"hc_{part}_{kind}", shape, f"{BLOCK}hc_{part}_{kind}") for part in ("attn", "ffn") for kind, shape in HC_SHAPES.items()),
    LayerTensor("attn.wq_a.weight", rows("q_lora_rank"), f"{BLOCK}attn.fused_wqa_wkv.weight"),
    LayerTensor("attn.wkv.weight", lambda g, a: (a.head_dim, g.hidden_size), f"{BLOCK}attn.fused_wqa_wkv.weight"),
    LayerTensor("attn.q_norm.weight", _width("q_lora_rank"), f"{BLOCK}attn.q_norm.weight"),
    LayerTensor("attn.wq_b.weight", _wq_b, f"{BLOCK}attn.wq_b.weight"),
    LayerTensor("attn.kv_norm.weight", lambda g, a: (a.head_dim,), f"{BLOCK}attn.kv_norm.weight"),
    LayerTensor("attn.wo_a.weight", _wo_a, f"{BLOCK}attn.wo_a.weight"),
    LayerTensor("attn.wo_b.weight", _wo_b, f"{BLOCK}attn.wo_b.weight"),
    LayerTensor("attn.attn_sink", lambda g, a: (a.heads,), f"{BLOCK}attn.attn_sink"),
)
# DeepseekV4MoE (nvidia/model.py:268-339): router, routed experts w1/w3 (gate/up) and w2 (down), shared experts.
EXPERTS = f"{BLOCK}ffn.experts.routed_experts."
SHARED = f"{BLOCK}ffn.shared_experts."
SHARED_WIDTH = "shared_intermediate_size"
MOE = (
    LayerTensor("ffn.gate.weight", lambda g, a: (g.num_experts, g.hidden_size), f"{BLOCK}ffn.gate.weight"),
    LayerTensor("ffn.gate.bias", lambda g, a: (g.num_experts,), f"{BLOCK}ffn.gate.e_score_correction_bias", when="router_bias"),
    LayerTensor("ffn.experts.{expert}.w1.weight", rows("moe_intermediate_size"), f"{EXPERTS}w13_weight"),
    LayerTensor("ffn.experts.{expert}.w3.weight", rows("moe_intermediate_size"), f"{EXPERTS}w13_weight"),
    LayerTensor("ffn.experts.{expert}.w2.weight", cols("moe_intermediate_size"), f"{EXPERTS}w2_weight"),
    LayerTensor("ffn.shared_experts.w1.weight", rows(SHARED_WIDTH), f"{SHARED}gate_up_proj.weight", when="shared_experts"),
    LayerTensor("ffn.shared_experts.w3.weight", rows(SHARED_WIDTH), f"{SHARED}gate_up_proj.weight", when="shared_experts"),
    LayerTensor("ffn.shared_experts.w2.weight", cols(SHARED_WIDTH), f"{SHARED}down_proj.weight", when="shared_experts"),
)

# vLLM module prefixes built with the target's quant_config: the layer's own prefix, no `.mtp_block.`
# (mtp.py:103-118, 136-144; attention.py:252-288; nvidia/model.py:153-168, 424-447). The router is a
# GateLinear without a quant_config (model.py:268-274), so it is not listed.
LAYER = "model.layers.{layer}."
QUANT_MODULES = (
    QuantModule(f"{LAYER}e_proj"),
    QuantModule(f"{LAYER}h_proj"),
    QuantModule(f"{LAYER}attn.fused_wqa_wkv", "linear", ("wq_a", "wkv")),
    QuantModule(f"{LAYER}attn.wq_b"),
    QuantModule(f"{LAYER}attn.wo_a"),
    QuantModule(f"{LAYER}attn.wo_b"),
    QuantModule(f"{LAYER}ffn.shared_experts.gate_up_proj", "linear", ("w1", "w3")),
    QuantModule(f"{LAYER}ffn.shared_experts.down_proj"),
    QuantModule(f"{LAYER}ffn.experts", "experts", ("w1", "w2", "w3")),
    NEXTN_HEAD_MODULE,
)

DEEPSEEK_V4 = Family(
    name="deepseek_v4",
    summary="DeepSeek-V4: MoE MTP layers mtp.{i}.* with hyper-connections and V4's own names; its emb.tok_emb and head are optional copies",
    vllm_class="DeepSeekV4MTP",
    route_model_types=("deepseek_v4",),
    route_architectures=(),
    source_prefixes=("mtp.{layer}.",),
    output_prefix="mtp.{layer}.",
    layer_tensors=(*HEAD, *DECODER, *MOE),
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=deepseek_v4_mtp,
    read_geometry=read_geometry,
    param_prefix="model.layers.{layer}.",
    param_layer_after_backbone=True,
    count_default=COUNT_DEFAULT,
    quant_modules=QUANT_MODULES,
    vllm_file="vllm/models/deepseek_v4/nvidia/mtp.py",
    target_module_rename=target_module_rename,
    facts=(
        "vLLM 0.33.0 config/speculative.py:765-776: model_type deepseek_v4 routes to DeepSeekV4MTPModel (registry.py:718) with n_predict = num_nextn_predict_layers; deepseek_v41 gets no MTP architecture and method mtp is refused for it (:1474-1486)",
        "vLLM 0.33.0 vllm/models/deepseek_v4/__init__.py:17-48: CUDA loads nvidia/mtp.py; ROCm's amd/mtp.py and XPU's xpu/mtp.py read the same checkpoint names; CPU's cpu/mtp.py raises NotImplementedError",
        "vLLM 0.33.0 vllm/models/deepseek_v4/nvidia/mtp.py:213-244: the layers are model.layers.{num_hidden_layers+i}, counted from the target's config (model_loader/utils.py:74-101 builds the module with the target's VllmConfig); the checkpoint's mtp.{i}. is renamed to that (:339-353)",
        "vLLM 0.33.0 vllm/models/deepseek_v4/nvidia/mtp.py:359-502: emb.tok_emb -> embed_tokens (top level, first layer only), head -> shared_head.head, norm -> shared_head.norm (substring renames, so a shipped shared_head.norm.weight ends in KeyError); the decoder gets .mtp_block.; wq_a and wkv fuse into attn.fused_wqa_wkv, w1 and w3 into gate_up_proj, shared_experts.w2 becomes down_proj, routed experts load into experts.routed_experts.{w13,w2}_weight, ffn.gate.bias into e_score_correction_bias; an expert beyond n_routed_experts is skipped silently",
        "vLLM 0.33.0 vllm/models/deepseek_v4/nvidia/mtp.py:98-144 and nvidia/model.py:585-665: e_proj and h_proj [hidden, hidden], hc_head_{fn,base,scale} [hc_mult, hc_mult x hidden], [hc_mult], [1]; the decoder's hc_{attn,ffn}_{fn,base,scale} [(2+hc_mult) x hc_mult, hc_mult x hidden], [(2+hc_mult) x hc_mult], [3], all float32",
        "vLLM 0.33.0 vllm/models/deepseek_v4/attention.py:235-242, 301-303, 368-370: an MTP layer has compress ratio 1, so no indexer (ratio 4 only) and no compressor (above 1 only); attention.py:250-288: wq_b [heads x head_dim, q_lora_rank], wo_a [o_groups x o_lora_rank, heads x head_dim / o_groups], wo_b [hidden, o_groups x o_lora_rank]; attn_sink is padded to the kernel's head count and filled from the first num_attention_heads entries",
        "vLLM 0.33.0 vllm/models/deepseek_v4/nvidia/model.py:276-334: the MTP layer's gate is never a hash gate (its index is past num_hash_layers); e_score_correction_bias exists only with topk_method noaux_tc; vision configs add bias_vl, refused here",
        "vLLM 0.33.0 vllm/models/deepseek_v4/nvidia/mtp.py:504-520: at least one tensor per MTP layer must load",
        "vLLM 0.33.0 config/speculative.py:439-443 and v1/spec_decode/llm_base_proposer.py:1269-1280: the draft inherits the target's moe_backend unless speculative_config.moe_backend is set; under deep_gemm_mega_moe (nvidia/mtp.py:387-391, nvidia/model.py:380-389) the experts are MXFP4 DeepGemmMegaMoEExperts and a BF16 expert's load raises a shape ValueError (fused_moe/deep_gemm_mega_moe.py:562-568)",
        "vLLM 0.33.0 v1/spec_decode/llm_base_proposer.py:1418-1575: the embedding and every shared_head.head are replaced by the target's (the embedding only with pipeline parallelism 1)",
        "vLLM 0.33.0 model_loader/utils.py:367-386: the target's quantization config has its module lists renamed by DeepseekV4ForCausalLM's mapper (nvidia/model.py:1226-1269; layers. -> model.layers., mtp. -> model.mtp., shared_experts.w2 -> down_proj) before the draft is built with it, so layers.N* covers the MTP modules and mtp.0* does not; ROCm alone re-keys model.mtp.{i}. onto them (quant_config.py:33-57, called only by amd/mtp.py:301)",
        "unverified: checkpoint layout unverified (no public checkpoint read); the official releases store FP8 linears and FP4 or FP8 experts with .scale tensors (quant_config.py:60-78), so the family expects a BF16 conversion and refuses scale tensors as unknown MTP tensors",
    ),
    card_notes=(
        "vLLM loads `mtp.{i}.*` from this draft as `model.layers.{num_hidden_layers + i}.*` and builds it with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers `model.layers.{num_hidden_layers}`.",
        "vLLM replaces the layer's `emb.tok_emb` and `head` with the target's embedding and LM head after loading.",
        "vLLM builds the draft with the target's MoE backend unless `speculative_config.moe_backend` is set: under `deep_gemm_mega_moe` the experts are MXFP4 kernel weights and loading this draft's BF16 experts fails, so set `speculative_config.moe_backend` to a backend that runs BF16 experts (such as `auto`).",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
