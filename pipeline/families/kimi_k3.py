"""Kimi K3 (`kimi_k3`): DeepSeek's nextn layer at `num_hidden_layers`, with Kimi's gated MLA and latent MoE.

Facts: vLLM 0.33.0's `vllm/models/kimi_k3/` (the CUDA build, `nvidia/mtp.py` and `nvidia/model.py`).
The release is multimodal: the text model, MTP count included, sits under `text_config` (a
`KimiLinearConfig`). The MTP layer keeps DeepSeek's nextn head (`enorm`, `hnorm`, `eh_proj`,
`shared_head`, the layer's own `embed_tokens`) and DeepSeek's name rewrite; what differs is the
decoder block: MLA whose q-LoRA front end is fused with an output gate (`g_proj`), and an MoE
block named `block_sparse_moe` with `w1`/`w2`/`w3` experts, a shared expert and, when
`routed_expert_hidden_size` is set, latent down/up projections around the routed experts.
The loader drops every name it cannot place without a word, so the replay below reports them
as skipped. No public checkpoint of this family has been read here.
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
from pipeline.families.common import NEXTN_HEAD_MODULE, ShapeRule, layer_norms, nextn_head, read_sizes
from pipeline.families.deepseek_v3 import FUSED_QKV_A, MLA, MLA_SIZES
from pipeline.families.loader_names import W1_W2_W3, expert_param, nextn_rewrite

FULL = "full_attention"
BLOCK = "mtp_block."
MOE = "block_sparse_moe."
LAYER = "model.layers.{layer}."
LATENT = "latent_moe"  # geometry flag: routed_expert_hidden_size is set (nvidia/model.py:383-389, 476-504)
LATENT_NORM = "latent_moe_norm"  # geometry flag: latent_moe_use_norm as well (nvidia/model.py:484-488)
TEXT_MLA_SIZES = {key: value for key, value in MLA_SIZES.items() if key != "qk_rope_head_dim"}


def _require_true(config: Mapping[str, Any], key: str, reason: str) -> None:
    if not optional_flag(config, key, False):
        raise ValueError(f"{field_path(config, key)}: must be true ({reason})")


def _kda_layers(config: Mapping[str, Any]) -> list[Any]:
    try:
        where, value = config_value(config, "linear_attn_config")
    except KeyError:
        return []
    if value is None:
        return []
    layers = value.get("kda_layers") if isinstance(value, Mapping) else None
    if not isinstance(layers, list):
        raise ValueError(f"{where}.kda_layers: must be a list of layer numbers")
    return layers


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a Kimi K3 config (its `text_config`, or a flat text config); refuses layouts vLLM would not build as this family."""
    _require_true(config, "mla_use_nope", "vLLM 0.33.0 asserts it for Kimi K3's MLA, kimi_k3/nvidia/model.py:744")
    _require_true(
        config, "mla_use_output_gate", "this family knows the gated q-LoRA attention, fused_qkv_a_g_proj, kimi_k3/nvidia/mla.py:217-239"
    )
    num_hidden_layers = require_int(config, "num_hidden_layers")
    num_mtp_layers = require_int(config, "num_nextn_predict_layers")
    first_dense = require_int(config, "first_k_dense_replace", minimum=0, default=0)
    frequency = require_int(config, "moe_layer_freq", default=1)
    kda = _kda_layers(config)
    for layer in range(num_hidden_layers, num_hidden_layers + num_mtp_layers):
        if layer + 1 in kda:  # is_kda_layer counts from 1 (transformers_utils/configs/kimi_linear.py:157-161)
            raise ValueError(
                f"{field_path(config, 'linear_attn_config')}.kda_layers: names MTP layer {layer}, which vLLM would build as KDA"
            )
        if layer < first_dense or layer % frequency:  # nvidia/model.py:701-706
            raise ValueError(f"{field_path(config, 'first_k_dense_replace')}: MTP layer {layer} would be a dense MLP layer, not MoE")
    heads = require_int(config, "num_attention_heads")
    hidden_size = require_int(config, "hidden_size")
    sizes = read_sizes(config, TEXT_MLA_SIZES)
    sizes["qk_rope_head_dim"] = require_int(config, "qk_rope_head_dim", minimum=0)  # NoPE attention may carry no rope part
    # vLLM builds the shared expert whenever num_shared_experts is not None (nvidia/model.py:449-468): a count of 0
    # would make it empty, so at least one is required.
    sizes["shared_intermediate_size"] = sizes["moe_intermediate_size"] * require_int(config, "num_shared_experts")
    flags = set()
    sizes["moe_hidden_size"] = hidden_size
    if _has(config, "routed_expert_hidden_size"):
        sizes["moe_hidden_size"] = require_int(config, "routed_expert_hidden_size")
        flags.add(LATENT)
        if optional_flag(config, "latent_moe_use_norm", False):
            flags.add(LATENT_NORM)
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=num_hidden_layers,
        num_mtp_layers=num_mtp_layers,
        intermediate_size=sizes["moe_intermediate_size"],
        attention={FULL: Attention(heads, heads, sizes["v_head_dim"])},
        layer_types=(),
        num_experts=require_int(config, "num_experts"),
        sizes=sizes,
        flags=frozenset(flags),
    )


def _has(config: Mapping[str, Any], key: str) -> bool:
    try:
        return config_value(config, key)[1] is not None
    except KeyError:
        return False


def _dims(*names: str) -> ShapeRule:
    """A shape from size names: `hidden`, `experts`, or a key of `Geometry.sizes`."""
    return lambda g, a: tuple(g.hidden_size if n == "hidden" else g.num_experts if n == "experts" else g.sizes[n] for n in names)


# q_a_proj, kv_a_proj_with_mqa and the output gate g_proj fuse into one projection (nvidia/mla.py:220-232,
# layers/linear.py:1562-1602: [q_lora_rank | kv_lora_rank + qk_rope_head_dim | heads x v_head_dim]).
FUSED_QKV_A_G = f"{BLOCK}self_attn.fused_qkv_a_g_proj.weight"
GATED_MLA = (
    *(replace(tensor, param=FUSED_QKV_A_G) if tensor.param == FUSED_QKV_A else tensor for tensor in MLA),
    LayerTensor("self_attn.g_proj.weight", lambda g, a: (a.heads * g.sizes["v_head_dim"], g.hidden_size), FUSED_QKV_A_G),
)
# KimiMoE (nvidia/model.py:363-570): router with correction bias, w1/w3 (gate/up) and w2 (down) experts
# in the latent width, a shared expert, and latent projections around the routed experts.
W13, W2 = f"{BLOCK}{MOE}experts.routed_experts.w13_weight", f"{BLOCK}{MOE}experts.routed_experts.w2_weight"
SHARED = f"{BLOCK}{MOE}shared_experts."
LATENT_BLOCK = f"{BLOCK}{MOE}routed_expert_"
KIMI_MOE = (
    LayerTensor(f"{MOE}gate.weight", _dims("experts", "hidden"), f"{BLOCK}{MOE}gate.weight"),
    LayerTensor(f"{MOE}gate.e_score_correction_bias", _dims("experts"), f"{BLOCK}{MOE}gate.e_score_correction_bias"),
    LayerTensor(f"{MOE}experts.{{expert}}.w1.weight", _dims("moe_intermediate_size", "moe_hidden_size"), W13),
    LayerTensor(f"{MOE}experts.{{expert}}.w3.weight", _dims("moe_intermediate_size", "moe_hidden_size"), W13),
    LayerTensor(f"{MOE}experts.{{expert}}.w2.weight", _dims("moe_hidden_size", "moe_intermediate_size"), W2),
    LayerTensor(f"{MOE}shared_experts.gate_proj.weight", _dims("shared_intermediate_size", "hidden"), f"{SHARED}gate_up_proj.weight"),
    LayerTensor(f"{MOE}shared_experts.up_proj.weight", _dims("shared_intermediate_size", "hidden"), f"{SHARED}gate_up_proj.weight"),
    LayerTensor(f"{MOE}shared_experts.down_proj.weight", _dims("hidden", "shared_intermediate_size"), f"{SHARED}down_proj.weight"),
    LayerTensor(f"{MOE}routed_expert_down_proj.weight", _dims("moe_hidden_size", "hidden"), f"{LATENT_BLOCK}down_proj.weight", when=LATENT),
    LayerTensor(f"{MOE}routed_expert_norm.weight", _dims("moe_hidden_size"), f"{LATENT_BLOCK}norm.weight", when=LATENT_NORM),
    LayerTensor(f"{MOE}routed_expert_up_proj.weight", _dims("hidden", "moe_hidden_size"), f"{LATENT_BLOCK}up_proj.weight", when=LATENT),
)

# vLLM module prefixes: the decoder layer gets the layer's prefix, without `.mtp_block.`
# (nvidia/mtp.py:104-106); eh_proj (:84-91) and the router (nvidia/model.py:437-443) are built
# with no quant_config. FusedMoE keeps its default gate/up/down names for compressed-tensors' check.
QUANT_MODULES = (
    QuantModule(f"{LAYER}self_attn.fused_qkv_a_g_proj", "linear", ("q_a_proj", "kv_a_proj_with_mqa", "g_proj")),
    QuantModule(f"{LAYER}self_attn.q_b_proj"),
    QuantModule(f"{LAYER}self_attn.kv_b_proj"),
    QuantModule(f"{LAYER}self_attn.o_proj"),
    QuantModule(f"{LAYER}{MOE}experts", "experts", ("gate_proj", "up_proj", "down_proj")),
    QuantModule(f"{LAYER}{MOE}shared_experts.gate_up_proj", "linear", ("gate_proj", "up_proj")),
    QuantModule(f"{LAYER}{MOE}shared_experts.down_proj"),
    QuantModule(f"{LAYER}{MOE}routed_expert_down_proj", when=LATENT),
    QuantModule(f"{LAYER}{MOE}routed_expert_up_proj", when=LATENT),
    NEXTN_HEAD_MODULE,
)

# KimiK3MTP.load_weights' stacked_params_mapping (nvidia/mtp.py:259-285), in its order, every entry
# listed: `.in_proj_qkvgfab` / `.g_proj` is there only with use_full_rank_gate (:272-273), and the
# gated MLA fusion only with q_lora_rank and mla_use_output_gate (:274-279), which read_geometry
# requires. The KDA entries never resolve in an MLA layer (their targets are not declared), so
# listing them whatever the config changes nothing.
KIMI_STACKED = (
    (".in_proj_qkvgfab", ".q_proj"),
    (".in_proj_qkvgfab", ".k_proj"),
    (".in_proj_qkvgfab", ".v_proj"),
    (".in_proj_qkvgfab", ".b_proj"),
    (".in_proj_qkvgfab", ".f_a_proj"),
    (".conv1d", ".q_conv1d"),
    (".conv1d", ".k_conv1d"),
    (".conv1d", ".v_conv1d"),
    (".gate_up_proj", ".gate_proj"),
    (".gate_up_proj", ".up_proj"),
    (".in_proj_qkvgfab", ".g_proj"),
    (".fused_qkv_a_g_proj", ".q_a_proj"),
    (".fused_qkv_a_g_proj", ".kv_a_proj_with_mqa"),
    (".fused_qkv_a_g_proj", ".g_proj"),
)


def _spec_layer(name: str, geometry: Geometry) -> int | None:
    """`get_spec_layer_idx_from_weight_name` (nvidia/model.py:1546-1560): `layers.L.` anywhere in the name."""
    return next((layer for layer in geometry.mtp_layers if f"layers.{layer}." in name), None)


def replay(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`KimiK3MTP.load_weights` (nvidia/mtp.py:317-404) for one BF16 name: `language_model.` is dropped,
    DeepSeek's rewrite applies, and a name that reaches no parameter is skipped (:396-397); only the
    expert mapping indexes `params_dict` unchecked (:365), so only it can end in KeyError. The
    `.weight_packed` -> `.weight` rename of compressed-tensors experts (:313-327) is not replayed: a
    BF16 source has no such names. The default MoE backend's expert mapping is replayed (:296-303)."""
    if "rotary_emb.inv_freq" in name:
        return None
    name = name.removeprefix("language_model.")
    layer = _spec_layer(name, geometry)
    if layer is None:
        return None
    name = nextn_rewrite(name, layer)
    for param, part in KIMI_STACKED:
        if part not in name or ".experts." in name:
            continue
        mapped = name.replace(part, param)
        if mapped in params:
            return mapped
    expert = expert_param(name, geometry, W1_W2_W3)  # w1 / w2 / w3 experts (nvidia/mtp.py:296-303)
    if expert is not None:
        return expert
    if name not in params:
        return None
    if layer != geometry.num_hidden_layers and ".layers" not in name:
        return None  # only the first MTP layer's embedding is loaded (:386-389)
    return name


# The base model's attention-residual weights (nvidia/model.py:796-821); the MTP block is built without
# them (nvidia/mtp.py:96-98) and its loader skips them (:392-397), so a source may carry them unshipped.
ATTENTION_RESIDUAL = tuple(
    f"{name}.weight" for name in ("self_attention_res_norm", "self_attention_res_proj", "mlp_res_norm", "mlp_res_proj")
)

KIMI_K3 = Family(
    name="kimi_k3",
    summary="Kimi K3: MoE MTP layers at num_hidden_layers with gated MLA and latent MoE; its embed_tokens and shared_head.head are optional copies",
    vllm_class="KimiK3MTP",
    route_model_types=("kimi_k3",),
    route_architectures=(),
    source_prefixes=("model.layers.{layer}.", "language_model.model.layers.{layer}."),
    output_prefix="model.layers.{layer}.",
    layer_tensors=(*nextn_head(), *layer_norms(BLOCK), *GATED_MLA, *KIMI_MOE),
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=replay,
    read_geometry=read_geometry,
    quant_modules=QUANT_MODULES,
    skipped_suffixes=ATTENTION_RESIDUAL,
    vllm_file="vllm/models/kimi_k3/nvidia/mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:785-793: model_type kimi_k3 routes to KimiK3MTP (architecture KimiK3MTPModel); n_predict is text_config.num_nextn_predict_layers",
        "vLLM 0.33.0 vllm/models/kimi_k3/__init__.py:21-36: CUDA and XPU load nvidia/mtp.py, ROCm amd/mtp.py, TPU none",
        "vLLM 0.33.0 vllm/models/kimi_k3/nvidia/mtp.py:71-106, 155-178: enorm, hnorm, eh_proj, SharedHead and a KimiDecoderLayer under model.layers.{num_hidden_layers+i}, the embedding at model.embed_tokens; built from the target's text config",
        "vLLM 0.33.0 kimi_k3/nvidia/model.py:683-794: the MTP layer is MLA unless is_kda_layer (kimi_linear.py:157-161), MoE past first_k_dense_replace; mla.py:217-303: q_a_proj, kv_a_proj_with_mqa and g_proj fuse into fused_qkv_a_g_proj under mla_use_output_gate",
        "vLLM 0.33.0 kimi_k3/nvidia/model.py:363-570: block_sparse_moe holds gate (with e_score_correction_bias), shared_experts, routed_expert_down_proj / routed_expert_norm / routed_expert_up_proj when routed_expert_hidden_size is set, and experts in that latent width",
        "vLLM 0.33.0 vllm/models/kimi_k3/nvidia/mtp.py:317-404: language_model. is stripped, model.layers.L. kept (bare layers.L. is matched by nvidia/model.py:1546-1560 but never renamed, so it is skipped), DeepSeek's .mtp_block. rewrite (:426-457), experts w1/w3 -> w13 and w2 -> w2; any name without a parameter is dropped silently (:377-397); at least one tensor per MTP layer must load (:406-422)",
        "vLLM 0.33.0 kimi_k3/nvidia/mtp.py:80-95, 104-106, 158: the module reads the target's text config and quant_config (llm_base_proposer.py:1303-1316, model_loader/utils.py:98-101 pass the target's VllmConfig); eh_proj is built with quant_config=None, the router too (nvidia/model.py:437-443)",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and shared_head.head are replaced by the target's",
        "vLLM 0.33.0 config/speculative.py:439-443 and v1/spec_decode/llm_base_proposer.py:1269-1280: the draft inherits the target's moe_backend unless speculative_config.moe_backend is set; under deep_gemm_mega_moe (kimi_k3/nvidia/model.py:401-403, 516-539) the experts are MXFP4 and the expert mapping knows only .weight_packed / .weight_scale names (model.py:343-360, mtp.py:287-295), so a BF16 expert matches nothing and is skipped (mtp.py:396-397); the per-layer check still passes (:406-422)",
        "vLLM 0.33.0 kimi_k3/nvidia/mtp.py:96-98, 392-397: the MTP block is built without the attention-residual weights (self_attention_res_*, mlp_res_*) and the loader skips them, so a source's copies are left out of the draft",
        "vLLM 0.33.0 kimi_k3/amd/mtp.py (ROCm) fuses the same three checkpoint names into fused_qkv_a_proj; the replay and module prefixes here are the CUDA build's",
        "unverified: checkpoint layout unverified (no public checkpoint read): whether the release's MTP layer carries attention-residual weights, and whether it stores the layer under model.layers.N. or language_model.model.layers.N.",
    ),
    card_notes=(
        "vLLM reads `model.layers.{num_hidden_layers + i}.*` (one layer per `num_nextn_predict_layers`) from this draft and builds them with the target's quantization config: the MTP loads in BF16 only if the target's exclude list covers those layers (`eh_proj` and the router are never quantized).",
        "vLLM replaces the layer's `embed_tokens` and `shared_head.head` with the target's after loading.",
        "vLLM builds the draft with the target's MoE backend unless `speculative_config.moe_backend` is set: under `deep_gemm_mega_moe` the experts are MXFP4 kernel weights and vLLM skips this draft's BF16 experts without a word, leaving them empty, so set `speculative_config.moe_backend` to a backend that runs BF16 experts (such as `auto`).",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
