"""Replays `DeepSeekV4MTP.load_weights` of vLLM 0.33.0 (`vllm/models/deepseek_v4/nvidia/mtp.py`).

DeepSeek-V4 checkpoints keep their own tensor names (`mtp.{i}.attn.wq_a`, `ffn.experts.{e}.w1`,
`emb.tok_emb`, `head`, `norm`), so the loader renames more than DeepSeek-V3's does; the statements
below follow it in order, with the wheel's line numbers. The default MoE backend is replayed.
The draft inherits the target's `moe_backend` unless `speculative_config.moe_backend` overrides it
(llm_base_proposer.py:1269-1280); under `deep_gemm_mega_moe` the experts are MXFP4 kernel
parameters (nvidia/model.py:380-389) that a BF16 expert cannot fill: its load raises (deep_gemm_mega_moe.py:562-568).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from pipeline.families.base import Geometry
from pipeline.families.loader_names import W1_W2_W3, expert_param, spec_layer

# WEIGHT_NAME_REMAPPING (mtp.py:362-366), applied as substring replacements in this order.
V4_RENAMES = (
    (".emb.tok_emb.weight", ".embed_tokens.weight"),
    (".head.weight", ".shared_head.head.weight"),
    (".norm.weight", ".shared_head.norm.weight"),
)
# stacked_params_mapping (mtp.py:375-381): (parameter, checkpoint part).
V4_STACKED = (
    ("gate_up_proj", "w1"),
    ("gate_up_proj", "w3"),
    ("attn.fused_wqa_wkv", "attn.wq_a"),
    ("attn.fused_wqa_wkv", "attn.wkv"),
)
# _rewrite_spec_layer_name (mtp.py:524-557): names kept beside the decoder block.
V4_SPEC_LAYER_WEIGHTS = ("embed_tokens", "enorm", "hnorm", "h_proj", "e_proj", "shared_head", "hc_head_fn", "hc_head_base", "hc_head_scale")
EXPERT_SCALE = re.compile(r"\.experts\.\d+\.w[123]\.scale$")  # mtp.py:76
# Geometry flag: expert_dtype absent or "fp4", the only case whose expert scales load as `.weight_scale` (mtp.py:403-407).
FP4_EXPERTS = "fp4_experts"


def first_integer(name: str) -> int:
    """The first dot-separated part that `int()` accepts, else 0 (`_to_spec_layer_name`, mtp.py:342-349)."""
    for part in name.split("."):
        try:
            return int(part)
        except ValueError:
            continue
    return 0


def to_spec_layer_name(name: str, geometry: Geometry) -> str:
    """`mtp.{i}.` becomes `model.layers.{num_hidden_layers + i}.` (mtp.py:339-353)."""
    index = first_integer(name)
    return name.replace(f"mtp.{index}.", f"model.layers.{geometry.num_hidden_layers + index}.")


def _rewrite(name: str, layer: int) -> str:
    """`.mtp_block.` before the decoder's names; the embedding becomes top level (mtp.py:524-557)."""
    part = next((part for part in V4_SPEC_LAYER_WEIGHTS if part in name), None)
    if part is None:
        return name.replace(f"model.layers.{layer}.", f"model.layers.{layer}.mtp_block.")
    if part == "embed_tokens":
        return name.replace(f"model.layers.{layer}.", "model.")
    return name


def deepseek_v4_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`DeepSeekV4MTP.load_weights` (mtp.py:359-502) for one checkpoint name."""
    name = to_spec_layer_name(name, geometry)
    layer = spec_layer(name, geometry)
    if layer is None:
        return None  # :411-413
    for old, new in V4_RENAMES:
        if old in name:
            name = name.replace(old, new)
    name = _rewrite(name, layer)
    if layer != geometry.num_hidden_layers and ".layers" not in name:
        return None  # :418-419: only the first MTP layer's embedding loads
    if name.endswith(".scale"):  # :420-426, the expert suffix chosen at :403-407
        experts_fp4 = FP4_EXPERTS in geometry.flags
        suffix = ".weight_scale" if experts_fp4 and EXPERT_SCALE.search(name) else ".weight_scale_inv"
        name = name.removesuffix(".scale") + suffix
    if ".shared_experts.w2" in name:  # :434-435
        name = name.replace(".shared_experts.w2", ".shared_experts.down_proj")
    if ".experts." not in name:
        for param, part in V4_STACKED:  # :440-452
            if part in name:
                return name.replace(part, param)
        if name.endswith(".ffn.gate.bias"):  # :489-495
            name = name.replace(".ffn.gate.bias", ".ffn.gate.e_score_correction_bias")
        return name
    # FusedMoE's per-expert mapping with w1 / w2 / w3 (mtp.py:392-398); an expert past n_routed_experts
    # matches no mapping, so nothing loads and nothing is raised (:463-487).
    return expert_param(name, geometry, W1_W2_W3)


# DeepseekV4ForCausalLM's hf_to_vllm_mapper (nvidia/model.py:1226-1269) as `get_rename_mapper` keeps
# it (models/utils.py:180-199: mappings to None dropped). vLLM applies it to the target's
# quantization module lists when it builds the target (model_loader/utils.py:367-386), before the
# draft is built with that same config; WeightsMapper applies regex, substring, prefix, then suffix
# rules, each list in order (models/utils.py:108-145). `configure_quant_config` reads the class
# attribute, built for fp4 experts (nvidia/model.py:1321); the fp8 mapper is set on the instance
# later, in `__init__` (:1337-1339), so the fp4 rules apply whatever the expert dtype.
SCALE_RULES = (
    (re.compile(r"(\.experts\.\d+\.w[123]\.base_layer)\.scale$"), r"\1.weight_scale"),
    (re.compile(r"(\.experts\.\d+\.w[123])\.scale$"), r"\1.weight_scale"),
    (re.compile(r"\.scale$"), ".weight_scale_inv"),
)


TARGET_SUBSTRINGS = ((".shared_experts.w2", ".shared_experts.down_proj"),)
TARGET_PREFIXES = (
    ("layers.", "model.layers."),
    ("embed.", "model.embed."),
    ("norm.", "model.norm."),
    ("hc_head", "model.hc_head"),
    ("mtp.", "model.mtp."),
)
TARGET_SUFFIXES = (
    ("head.weight", "lm_head.weight"),
    ("embed.weight", "embed_tokens.weight"),
    (".ffn.gate.bias", ".ffn.gate.e_score_correction_bias"),
)


def target_module_rename(name: str, geometry: Geometry) -> str:
    """A module name of the target's quantization config as vLLM renames it for DeepSeek-V4:
    `layers.N.*` becomes `model.layers.N.*`, so a checkpoint-form entry can cover the MTP's modules,
    while `mtp.{i}.*` becomes `model.mtp.{i}.*`, which names none of them on CUDA."""
    for pattern, new in SCALE_RULES:
        if pattern.search(name):
            name = pattern.sub(new, name)
    for old, new in TARGET_SUBSTRINGS:
        if old in name:
            name = name.replace(old, new, 1)
    for old, new in TARGET_PREFIXES:
        if name.startswith(old):
            name = name.replace(old, new, 1)
    for old, new in TARGET_SUFFIXES:
        if name.endswith(old):
            name = new.join(name.rsplit(old, 1))
    return name
