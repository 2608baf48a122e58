"""Every family end to end on its synthetic source: build, verify, refusals and inspect verdicts.

Expected tensor names, counts and shapes are written out here from the facts sheet (§9), not
read from the family tables, so a wrong table fails these tests. The vLLM name replay is checked
against the lists transcribed from the vLLM 0.33.0 wheel in tests/data/vllm-0.33.0/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from pipeline.families import FAMILIES
from pipeline.recipe.loader import HubRef, load_recipe
from pipeline.rehearsal.synthetic_families import FamilySpec, family_config, write_family_source, write_family_target
from tests.conftest import run_cli
from tests.safetensors_reader import drop_tensor, folder_tensor_hashes, rename_tensor

ROOT = Path(__file__).resolve().parent.parent
NEW_FAMILIES = (
    "deepseek_v3",
    "glm4_moe",
    "qwen3_next",
    "mimo",
    "glm4_moe_lite",
    "qwen3_5",
    "qwen3_5_moe",
    "deepseek_v32",
    "glm5_next",
    "kimi_k3",
    "minimax_m3",
    "nemotron_h",
    "deepseek_v4",
    "mimo_v2",
    "qwen4_exp",
    "step5",
    "longcat_flash",
)
VERDICTS = {"no-mtp": "needed", "mtp-shard": "redundant", "other-vocab": "incompatible"}

# The nextn head without the copies vLLM replaces (`embed_tokens`, `shared_head.head`): the default `shared_weights: omit`.
NEXTN_HEAD = ["enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight"]
NORMS = ["input_layernorm.weight", "post_attention_layernorm.weight"]
QKV = [f"self_attn.{p}_proj.weight" for p in "qkv"]
QKV_BIAS = [f"self_attn.{p}_proj.bias" for p in "qkv"]
QK_NORM = ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
EXPERTS = [f"mlp.experts.{e}.{p}_proj.weight" for e in range(4) for p in ("gate", "up", "down")]
MLA = [
    f"self_attn.{p}.weight"
    for p in ("q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj")
]
ROUTER = ["mlp.gate.weight", "mlp.gate.e_score_correction_bias"]
# DeepSeek-V3.2's lightning indexer in every MTP layer (vLLM 0.33.0 deepseek_v32/attention.py:50-87, 164-200).
INDEXER = [f"self_attn.indexer.{p}" for p in ("wq_b.weight", "wk.weight", "weights_proj.weight", "k_norm.weight", "k_norm.bias")]
# GLM-5 next's indexer adds two bare kpool parameters, stored without `.weight` (vLLM 0.33.0 glm5next/common/attention.py:218-226).
KPOOL = ["self_attn.indexer.index_kpool_compress_ape", "self_attn.indexer.index_kpool_compress_gate"]
MTP_BLOCK = ["fc.weight", "pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight", "norm.weight"]
# Kimi K3's MTP layer (vLLM 0.33.0 kimi_k3/nvidia/mla.py:217-303, model.py:437-504): MLA with the output
# gate, and `block_sparse_moe` with w1/w2/w3 experts, a shared expert and latent projections.
KIMI_K3_LAYER = (
    MLA
    + ["self_attn.g_proj.weight"]
    + [f"block_sparse_moe.{p}" for p in ("gate.weight", "gate.e_score_correction_bias")]
    + [f"block_sparse_moe.experts.{e}.w{w}.weight" for e in range(4) for w in (1, 2, 3)]
    + [f"block_sparse_moe.shared_experts.{p}_proj.weight" for p in ("gate", "up", "down")]
    + [f"block_sparse_moe.routed_expert_{p}.weight" for p in ("down_proj", "norm", "up_proj")]
)
# MiniMax M3: a predictor layer around `transformer_layer`, its sparse attention fusing the indexer's
# index_q/index_k projections and its MoE block under `block_sparse_moe` (vLLM 0.33.0 minimax_m3/nvidia/mtp.py:41-67, model.py:195-488).
MINIMAX_ATTENTION = [f"self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "index_q_proj", "index_k_proj", "o_proj")] + [
    f"self_attn.{p}_norm.weight" for p in ("q", "k", "index_q", "index_k")
]
MINIMAX_MOE = [
    f"block_sparse_moe.{p}"
    for p in ["gate.weight", "e_score_correction_bias"]
    + [f"shared_experts.{p}_proj.weight" for p in ("gate", "up", "down")]
    + [f"experts.{e}.w{w}.weight" for e in range(4) for w in (1, 2, 3)]
]
# Nemotron-H's MTP step, pattern `*E` (vLLM 0.33.0 nemotron_h_mtp.py:257-292): the first layer holds the input
# norms and projection and the attention, the last the MoE (non-gated experts) and the final norm.
NEMOTRON_START = ["enorm.weight", "hnorm.weight", "eh_proj.weight"]
NEMOTRON_ATTENTION = ["norm.weight"] + [f"mixer.{p}_proj.weight" for p in "qkvo"]
NEMOTRON_MOE = (
    ["norm.weight", "mixer.gate.weight", "mixer.gate.e_score_correction_bias", "final_layernorm.weight"]
    + [f"mixer.experts.{e}.{p}_proj.weight" for e in range(4) for p in ("up", "down")]
    + [f"mixer.shared_experts.{p}_proj.weight" for p in ("up", "down")]
)
# DeepSeek-V4's own names (vLLM 0.33.0 deepseek_v4/nvidia/mtp.py:98-144, nvidia/model.py:585-665, attention.py:250-288):
# separate e/h projections, hyper-connection mixing weights, and the MoE's w1/w2/w3.
V4_HEAD = ["enorm.weight", "hnorm.weight", "e_proj.weight", "h_proj.weight", "norm.weight", "hc_head_fn", "hc_head_base", "hc_head_scale"]
V4_DECODER = ["attn_norm.weight", "ffn_norm.weight"] + [f"hc_{p}_{k}" for p in ("attn", "ffn") for k in ("fn", "base", "scale")]
V4_ATTN = [
    f"attn.{p}"
    for p in ("wq_a.weight", "wkv.weight", "q_norm.weight", "wq_b.weight", "kv_norm.weight", "wo_a.weight", "wo_b.weight", "attn_sink")
]
V4_MOE = (
    ["ffn.gate.weight", "ffn.gate.bias"]
    + [f"ffn.experts.{e}.w{i}.weight" for e in range(4) for i in (1, 2, 3)]
    + [f"ffn.shared_experts.w{i}.weight" for i in (1, 2, 3)]
)
# Step5's sparse full-attention MTP layer (vLLM 0.33.0 step5/nvidia/model.py:1057-1070, 1217-1240): Step-3.7's
# layer plus the indexer's projections, weights, norms and ssmax_s, beside its own head and the embedding.
STEP5_LAYER = (
    ["enorm.weight", "hnorm.weight", "eh_proj.weight", "transformer.shared_head.norm.weight", "transformer.shared_head.output.weight"]
    + NORMS
    + [f"self_attn.{p}_proj.weight" for p in "qkvog"]
    + QK_NORM
    + [f"self_attn.sparse_indexer_{p}.weight" for p in ("q", "k", "z", "w", "q_norm", "k_norm")]
    + ["self_attn.sparse_indexer_k_norm.bias", "self_attn.ssmax_s"]
    + [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
)

# Qwen4 Exp's MTP block: two fc projections, their norms and the hyper-connection mixer without injection; the
# layer has QSA attention with its indexer, Qwen3-Next's MoE and two gated hyper-connections
# (vLLM 0.33.0 qwen4_exp/nvidia/mtp.py:195-256, model.py:191-279, qsa.py:413-437, indexer_qsa.py:132-146).
QWEN4_EXP_BLOCK = ["fc_embedding.weight", "fc_hidden.weight", "pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight"] + [
    f"hyper_connection_mixer.{p}.weight" for p in ("hc_norm", "input_mix_weight_down", "input_mix_weight_up")
]
QWEN4_EXP_HC = [
    f"{hc}_hyper_connection.{p}.weight"
    for hc in ("attn", "mlp")
    for p in ("hc_norm", "input_mix_weight_down", "block_inject_weight", "input_mix_weight_up")
]
QWEN4_EXP_INDEXER = [f"self_attn.indexer.{p}.weight" for p in ("index_qk_proj", "q_layernorm", "k_layernorm")]


def _shared(name: str) -> list[str]:
    return [f"mlp.{name}.{p}_proj.weight" for p in ("gate", "up", "down")]


def _under(prefix: str, suffixes: list[str]) -> set[str]:
    return {prefix + suffix for suffix in suffixes}


# Qwen3-Next's MTP block with one MoE layer; Qwen3.5-MoE builds the same (vLLM 0.33.0 qwen3_5.py:171-175).
QWEN_MOE_MTP = _under("mtp.", MTP_BLOCK) | _under(
    "mtp.layers.0.",
    NORMS
    + QKV
    + ["self_attn.o_proj.weight"]
    + QK_NORM
    + ["mlp.gate.weight"]
    + EXPERTS
    + _shared("shared_expert")
    + ["mlp.shared_expert_gate.weight"],
)

# The draft of each tiny source (4 backbone layers, 4 routed experts, 1 MTP layer).
DRAFT_TENSORS = {
    "deepseek_v3": _under("model.layers.4.", NEXTN_HEAD + NORMS + MLA + ROUTER + EXPERTS + _shared("shared_experts")),
    "deepseek_v32": _under("model.layers.4.", NEXTN_HEAD + NORMS + MLA + INDEXER + ROUTER + EXPERTS + _shared("shared_experts")),
    # GLM-4.7-Flash: DeepSeek-V2 MLA attention in GLM's MoE layer (vLLM 0.33.0 glm4_moe_lite.py:140-189).
    "glm4_moe_lite": _under("model.layers.4.", NEXTN_HEAD + NORMS + MLA + ROUTER + EXPERTS + _shared("shared_experts")),
    "glm4_moe": _under(
        "model.layers.4.",
        NEXTN_HEAD + NORMS + QKV + QKV_BIAS + ["self_attn.o_proj.weight"] + QK_NORM + ROUTER + EXPERTS + _shared("shared_experts"),
    ),
    "qwen3_next": QWEN_MOE_MTP,
    # Qwen3.5 / 3.6: Qwen3-Next's block; the dense MTP layer has a gate/up/down MLP (vLLM 0.33.0 qwen3_5.py:171-183).
    "qwen3_5": _under("mtp.", MTP_BLOCK)
    | _under(
        "mtp.layers.0.", NORMS + QKV + ["self_attn.o_proj.weight"] + QK_NORM + [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
    ),
    "qwen3_5_moe": QWEN_MOE_MTP,
    "kimi_k3": _under("model.layers.4.", NEXTN_HEAD + NORMS + KIMI_K3_LAYER),
    "mimo": _under(
        "model.mtp_layers.0.",
        ["token_layernorm.weight", "hidden_layernorm.weight", "input_proj.weight", "final_layernorm.weight"]
        + NORMS
        + QKV
        + QKV_BIAS
        + ["self_attn.o_proj.weight"]
        + [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")],
    ),
    # GLM-5 next: DeepSeek-V3.2's layer with the kpool indexer; no shared_head.head exists (vLLM 0.33.0 glm5next/common/mtp.py:62-66).
    "glm5_next": _under("model.layers.4.", NEXTN_HEAD + NORMS + MLA + INDEXER + KPOOL + ROUTER + EXPERTS + _shared("shared_experts")),
    "minimax_m3": _under(
        "model.mtp.layers.0.",
        ["enorm.weight", "hnorm.weight", "eh_proj.weight", "final_layernorm.weight"]
        + [f"transformer_layer.{name}" for name in NORMS + MINIMAX_ATTENTION + MINIMAX_MOE],
    ),
    "nemotron_h": _under("mtp.layers.0.", NEMOTRON_START + NEMOTRON_ATTENTION) | _under("mtp.layers.1.", NEMOTRON_MOE),
    "deepseek_v4": _under("mtp.0.", V4_HEAD + V4_DECODER + V4_ATTN + V4_MOE),
    # MiMo-V2-Flash: the first MTP layer only, a dense SWA layer with an attention sink (vLLM 0.33.0 mimo_v2_mtp.py:72-119).
    "mimo_v2": _under(
        "model.mtp.layers.0.",
        ["enorm.weight", "hnorm.weight", "eh_proj.weight", "input_layernorm.weight"]
        + QKV
        + ["self_attn.o_proj.weight", "self_attn.attention_sink_bias", "pre_mlp_layernorm.weight"]
        + [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
        + ["final_layernorm.weight"],
    ),
    "qwen4_exp": _under("mtp.", QWEN4_EXP_BLOCK)
    | _under(
        "mtp.layers.0.",
        [
            *QKV,
            "self_attn.o_proj.weight",
            *QK_NORM,
            *QWEN4_EXP_INDEXER,
            "mlp.gate.weight",
            *EXPERTS,
            *_shared("shared_expert"),
            "mlp.shared_expert_gate.weight",
            *QWEN4_EXP_HC,
        ],
    ),
    "step5": _under("model.layers.4.", STEP5_LAYER) | {"model.embed_tokens.weight"},
    # LongCat-Flash: the model.mtp module's final norm beside one dense MLA layer, named as vLLM 0.33.0's
    # rename table reads them (longcat_flash_mtp.py:183-210).
    "longcat_flash": {"model.mtp.norm.weight"}
    | _under(
        "model.mtp.layers.0.",
        ["enorm.m.weight", "hnorm.m.weight", "eh_proj.weight"]
        + NORMS
        + MLA
        + [f"transformer_layer.mlp.{p}_proj.weight" for p in ("gate", "up", "down")],
    ),
}
DRAFT_COUNTS = {
    "deepseek_v3": 30,
    "glm4_moe": 32,
    "qwen3_next": 29,
    "mimo": 16,
    "glm4_moe_lite": 30,
    "qwen3_5": 15,
    "qwen3_5_moe": 29,
    "deepseek_v32": 35,
    "glm5_next": 37,
    "kimi_k3": 34,
    "minimax_m3": 33,
    "nemotron_h": 22,
    "deepseek_v4": 41,
    "mimo_v2": 14,
    "qwen4_exp": 41,
    "step5": 26,
    "longcat_flash": 16,
}
# What `shared_weights: copy` adds: the replaced copies, each [vocab 256, hidden 64] BF16.
SHARED_COPIES = {
    "deepseek_v3": {"model.layers.4.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "deepseek_v32": {"model.layers.4.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "glm4_moe": {"model.layers.4.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "glm4_moe_lite": {"model.layers.4.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "qwen3_next": {"model.embed_tokens.weight", "lm_head.weight"},
    "mimo": {"model.embed_tokens.weight", "lm_head.weight"},
    "qwen3_5": {"model.embed_tokens.weight", "lm_head.weight"},
    "qwen3_5_moe": {"model.embed_tokens.weight", "lm_head.weight"},
    "glm5_next": {"model.layers.4.embed_tokens.weight"},
    "kimi_k3": {"model.layers.4.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "minimax_m3": {"model.embed_tokens.weight", "lm_head.weight"},
    "nemotron_h": set(),  # no embedding or head of its own (nemotron_h_mtp.py:255, 372)
    "deepseek_v4": {"mtp.0.emb.tok_emb.weight", "mtp.0.head.weight"},
    "mimo_v2": {"model.embed_tokens.weight", "lm_head.weight"},
    "qwen4_exp": {"model.embed_tokens.weight", "lm_head.weight"},
    "step5": set(),  # the embedding and per-layer head always ship (step5/nvidia/mtp.py:411-420)
    "longcat_flash": {"model.mtp.embed_tokens.weight"},  # its lm_head is never read from the draft (longcat_flash_mtp.py:311-316)
}
# Parameters vLLM declares that no checkpoint name fills: the proposer always puts the target's in.
UNFILLED = {"longcat_flash": {"lm_head.weight"}}
# The families that offer `shared_weights: copy`.
COPYING = tuple(family for family in NEW_FAMILIES if SHARED_COPIES[family])
# Shapes that follow from the tiny configs: hidden 64, vocab 256, 4 heads; see synthetic_families.
SHAPES = {
    "deepseek_v3": {
        "model.layers.4.self_attn.q_b_proj.weight": (4 * (8 + 4), 32),
        "model.layers.4.self_attn.kv_a_proj_with_mqa.weight": (16 + 4, 64),
        "model.layers.4.mlp.experts.3.down_proj.weight": (64, 24),
    },
    "glm4_moe": {
        "model.layers.4.self_attn.k_proj.bias": (2 * 16,),
        "model.layers.4.self_attn.q_norm.weight": (16,),
        "model.layers.4.eh_proj.weight": (64, 128),
    },
    "deepseek_v32": {
        "model.layers.4.self_attn.indexer.wq_b.weight": (2 * 16, 32),
        "model.layers.4.self_attn.indexer.weights_proj.weight": (2, 64),
        "model.layers.4.self_attn.indexer.k_norm.bias": (16,),
    },
    "glm4_moe_lite": {
        "model.layers.4.self_attn.q_a_proj.weight": (32, 64),
        "model.layers.4.self_attn.kv_b_proj.weight": (4 * (8 + 8), 16),
        "model.layers.4.mlp.shared_experts.gate_proj.weight": (24, 64),
    },
    "qwen3_next": {
        "mtp.layers.0.self_attn.q_proj.weight": (2 * 4 * 16, 64),
        "mtp.fc.weight": (64, 128),
        "mtp.layers.0.mlp.shared_expert_gate.weight": (1, 64),
    },
    "qwen3_5": {
        "mtp.layers.0.self_attn.q_proj.weight": (2 * 4 * 16, 64),
        "mtp.layers.0.mlp.gate_proj.weight": (96, 64),
        "mtp.fc.weight": (64, 128),
    },
    "qwen3_5_moe": {
        "mtp.layers.0.self_attn.k_proj.weight": (2 * 16, 64),
        "mtp.layers.0.mlp.experts.2.down_proj.weight": (64, 24),
        "mtp.layers.0.mlp.gate.weight": (4, 64),
    },
    "mimo": {
        "model.mtp_layers.0.input_proj.weight": (64, 128),
        "model.mtp_layers.0.self_attn.q_proj.bias": (64,),
        "model.mtp_layers.0.mlp.down_proj.weight": (64, 96),
    },
    # NoPE MLA (qk_rope_head_dim 0), index_kpool 4, index_head_dim 16.
    "glm5_next": {
        "model.layers.4.self_attn.q_b_proj.weight": (4 * 8, 32),
        "model.layers.4.self_attn.kv_a_proj_with_mqa.weight": (16, 64),
        "model.layers.4.self_attn.indexer.index_kpool_compress_ape": (4, 16),
        "model.layers.4.self_attn.indexer.index_kpool_compress_gate": (16, 64),
    },
    # 4 heads of v_head_dim 8; experts in the latent width 32 (routed_expert_hidden_size), moe_intermediate_size 24.
    "kimi_k3": {
        "model.layers.4.self_attn.g_proj.weight": (4 * 8, 64),
        "model.layers.4.block_sparse_moe.experts.1.w1.weight": (24, 32),
        "model.layers.4.block_sparse_moe.experts.2.w2.weight": (32, 24),
        "model.layers.4.block_sparse_moe.routed_expert_down_proj.weight": (32, 64),
        # kimi_k3/nvidia/model.py:484-500: norm over the latent width, up-projection back to hidden.
        "model.layers.4.block_sparse_moe.routed_expert_norm.weight": (32,),
        "model.layers.4.block_sparse_moe.routed_expert_up_proj.weight": (64, 32),
        "model.layers.4.eh_proj.weight": (64, 128),
    },
    # 4 heads x 16, 2 KV heads, 2 index heads of width 16 and one index key head (linear.py:1435-1445).
    "minimax_m3": {
        "model.mtp.layers.0.transformer_layer.self_attn.q_proj.weight": (4 * 16, 64),
        "model.mtp.layers.0.transformer_layer.self_attn.index_q_proj.weight": (2 * 16, 64),
        "model.mtp.layers.0.transformer_layer.self_attn.index_k_proj.weight": (16, 64),
        "model.mtp.layers.0.transformer_layer.block_sparse_moe.experts.1.w2.weight": (64, 24),
        "model.mtp.layers.0.transformer_layer.block_sparse_moe.e_score_correction_bias": (4,),
        "model.mtp.layers.0.eh_proj.weight": (64, 128),
    },
    "nemotron_h": {
        "mtp.layers.0.eh_proj.weight": (64, 128),
        "mtp.layers.0.mixer.k_proj.weight": (2 * 16, 64),
        "mtp.layers.1.mixer.experts.3.up_proj.weight": (24, 64),
        "mtp.layers.1.mixer.gate.e_score_correction_bias": (4,),
    },
    # hc_mult 2: hyper-connection mixes of (2 + 2) x 2 rows over 2 x 64; 2 output groups of rank 8.
    "deepseek_v4": {
        "mtp.0.hc_attn_fn": (8, 128),
        "mtp.0.hc_head_fn": (2, 128),
        "mtp.0.attn.wo_a.weight": (2 * 8, 4 * 16 // 2),
        "mtp.0.attn.wq_b.weight": (4 * 16, 32),
        "mtp.0.attn.wkv.weight": (16, 64),
        # nvidia/model.py:636-665: base (2 + hc_mult) x hc_mult, scale 3; nvidia/mtp.py:127-134: hc_mult and 1.
        "mtp.0.hc_attn_base": (8,),
        "mtp.0.hc_attn_scale": (3,),
        "mtp.0.hc_ffn_base": (8,),
        "mtp.0.hc_ffn_scale": (3,),
        "mtp.0.hc_head_base": (2,),
        "mtp.0.hc_head_scale": (1,),
        # attention.py:250, 270, 281-288: a sink per head, kv_norm over head_dim, wo_b [hidden, o_groups x o_lora_rank].
        "mtp.0.attn.attn_sink": (4,),
        "mtp.0.attn.kv_norm.weight": (16,),
        "mtp.0.attn.wo_b.weight": (64, 2 * 8),
    },
    # 4 SWA heads of key width 16 and value width 8, 2 KV heads (swa_head_dim 16, swa_v_head_dim 8).
    "mimo_v2": {
        "model.mtp.layers.0.self_attn.k_proj.weight": (2 * 16, 64),
        "model.mtp.layers.0.self_attn.v_proj.weight": (2 * 8, 64),
        "model.mtp.layers.0.self_attn.o_proj.weight": (64, 4 * 8),
        "model.mtp.layers.0.self_attn.attention_sink_bias": (4,),
        "model.mtp.layers.0.eh_proj.weight": (64, 128),
    },
    # hc_count 2 streams of 64, hc_lowrank 8; the gated query 2 x 4 heads x 16; the indexer 2 + 1 heads of 16.
    "qwen4_exp": {
        "mtp.fc_hidden.weight": (64, 64),
        "mtp.pre_fc_norm_hidden.weight": (2 * 64,),
        "mtp.hyper_connection_mixer.input_mix_weight_down.weight": (8, 2 * 64),
        "mtp.layers.0.self_attn.q_proj.weight": (2 * 4 * 16, 64),
        "mtp.layers.0.self_attn.indexer.index_qk_proj.weight": ((2 + 1) * 16, 64),
        "mtp.layers.0.attn_hyper_connection.block_inject_weight.weight": (2, 2 * 64),
        "mtp.layers.0.mlp_hyper_connection.input_mix_weight_up.weight": (2 * 64, 8),
    },
    # 4 heads x 128 over 1 KV head; 2 indexer heads and 1 index key head of proxy width 256.
    "step5": {
        "model.layers.4.self_attn.q_proj.weight": (4 * 128, 64),
        "model.layers.4.self_attn.g_proj.weight": (4, 64),
        "model.layers.4.self_attn.sparse_indexer_q.weight": (2 * 256, 64),
        "model.layers.4.self_attn.sparse_indexer_z.weight": (256, 64),
        "model.layers.4.self_attn.sparse_indexer_w.weight": (2, 64),
        "model.layers.4.self_attn.ssmax_s": (4,),
        "model.layers.4.transformer.shared_head.output.weight": (256, 64),
        "model.embed_tokens.weight": (256, 64),
    },
    # 4 heads: q_b 4 x (8 + 4) over q_lora_rank 32, kv_a kv_lora_rank 16 + rope 4; dense MLP of ffn_hidden_size 96.
    "longcat_flash": {
        "model.mtp.layers.0.self_attn.q_b_proj.weight": (4 * (8 + 4), 32),
        "model.mtp.layers.0.self_attn.kv_a_proj_with_mqa.weight": (16 + 4, 64),
        "model.mtp.layers.0.transformer_layer.mlp.down_proj.weight": (64, 96),
        "model.mtp.layers.0.eh_proj.weight": (64, 128),
        "model.mtp.norm.weight": (64,),
    },
}
# One MTP tensor per family whose absence the build must refuse.
MISSING = {
    "deepseek_v3": "model.layers.4.eh_proj.weight",
    "glm4_moe": "model.layers.4.enorm.weight",
    "glm4_moe_lite": "model.layers.4.hnorm.weight",
    "deepseek_v32": "model.layers.4.self_attn.indexer.wk.weight",
    "qwen3_next": "mtp.fc.weight",
    "mimo": "model.mtp_layers.0.input_proj.weight",
    "qwen3_5": "mtp.pre_fc_norm_hidden.weight",
    "qwen3_5_moe": "mtp.layers.0.mlp.shared_expert_gate.weight",
    "glm5_next": "model.layers.4.self_attn.indexer.index_kpool_compress_ape",
    "kimi_k3": "model.layers.4.block_sparse_moe.routed_expert_norm.weight",
    "minimax_m3": "model.mtp.layers.0.transformer_layer.block_sparse_moe.e_score_correction_bias",
    "nemotron_h": "mtp.layers.1.final_layernorm.weight",
    "deepseek_v4": "mtp.0.hc_attn_fn",
    "mimo_v2": "model.mtp.layers.0.self_attn.attention_sink_bias",
    "qwen4_exp": "mtp.layers.0.attn_hyper_connection.block_inject_weight.weight",
    "step5": "model.layers.4.self_attn.sparse_indexer_z.weight",
    "longcat_flash": "model.mtp.norm.weight",
}
MTP_LAYERS = {
    "step3p7": range(45, 48),
    "deepseek_v3": range(4, 5),
    "deepseek_v32": range(4, 5),
    "glm4_moe": range(4, 5),
    "glm4_moe_lite": range(4, 5),
    "qwen3_next": range(0, 1),
    "mimo": range(0, 1),
    "qwen3_5": range(0, 1),
    "qwen3_5_moe": range(0, 1),
    "glm5_next": range(4, 5),
    "kimi_k3": range(4, 5),
    "minimax_m3": range(0, 1),
    "nemotron_h": range(0, 2),
    "deepseek_v4": range(0, 1),
    "mimo_v2": range(0, 1),
    "qwen4_exp": range(0, 1),
    "step5": range(4, 5),
    "longcat_flash": range(0, 1),
}
UPSTREAM = ROOT / "tests" / "data" / "vllm-0.33.0"


def _upstream(family: str) -> dict[str, Any]:
    """The name lists transcribed from the vLLM 0.33.0 wheel for the family's tiny synthetic geometry."""
    data: dict[str, Any] = json.loads((UPSTREAM / f"{family}.json").read_text())
    return data


@pytest.fixture(scope="module")
def family_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per family: a pristine source and one target per verdict; tests copy before changing anything."""
    root = tmp_path_factory.mktemp("families")
    for name in FAMILIES:
        write_family_source(root / name / "source", name)
        for variant in VERDICTS:
            write_family_target(root / name / variant, name, variant=variant)
    return root


def _recipe(folder: Path, family: str, source: Path, target: Path, extra: str = "") -> Path:
    recipe = folder / "recipe" / "draft.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(
        f"family: {family}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\nmax_shard_size: 100KB\n{extra}"
    )
    return recipe


def _build(tmp_path: Path, family: str, source: Path, target: Path, extra: str = "") -> tuple[Path, Path]:
    recipe, workdir = _recipe(tmp_path, family, source, target, extra), tmp_path / "work"
    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))
    assert result.code == 0, result.stderr
    return recipe, workdir


def _drop(folder: Path, name: str) -> None:
    """Remove one tensor from a folder's shard and index."""
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    drop_tensor(folder / index["weight_map"].pop(name), name)
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_a_build_of_the_synthetic_source_passes_verify_with_exactly_the_mtp_tensors(family: str, family_root: Path, tmp_path: Path) -> None:
    source = family_root / family / "source"
    _, workdir = _build(tmp_path, family, source, family_root / family / "no-mtp")

    report = json.loads((workdir / "verify.json").read_text())
    assert report["passed"] and all(check["passed"] for check in report["checks"])
    route = next(check for check in report["checks"] if check["id"] == "config.mtp-route")
    assert FAMILIES[family].vllm_class in route["evidence"]
    draft = workdir / "draft"
    produced = folder_tensor_hashes(draft)
    assert set(produced) == DRAFT_TENSORS[family]
    assert len(produced) == DRAFT_COUNTS[family]
    source_hashes = folder_tensor_hashes(source)
    assert all(source_hashes[name] == sha for name, sha in produced.items())
    # vLLM 0.33.0 consumes every tensor and fills every parameter but the ones it takes from the target.
    consumes = _upstream(family)["consumes"]["names"]
    replaced = {consumes[name] for name in SHARED_COPIES[family]} | UNFILLED.get(family, set())
    assert {consumes[name] for name in produced} == set(_upstream(family)["params"]["names"]) - replaced
    index = json.loads((draft / "model.safetensors.index.json").read_text())
    for name, shape in SHAPES[family].items():
        with safe_open(str(draft / index["weight_map"][name]), framework="numpy") as handle:
            assert tuple(handle.get_slice(name).get_shape()) == shape, name


def test_a_step_draft_fills_every_parameter_vllms_step3p5mtp_declares(family_root: Path, tmp_path: Path) -> None:
    _, workdir = _build(tmp_path, "step3p7", family_root / "step3p7" / "source", family_root / "step3p7" / "no-mtp")

    produced = folder_tensor_hashes(workdir / "draft")
    consumes = _upstream("step3p7")["consumes"]["names"]
    assert len(produced) == 52
    assert {consumes[name] for name in produced} == set(_upstream("step3p7")["params"]["names"])


def test_a_qwen3_next_draft_without_a_count_routes_with_vllms_default(family_root: Path, tmp_path: Path) -> None:
    _, workdir = _build(tmp_path, "qwen3_next", family_root / "qwen3_next" / "source", family_root / "qwen3_next" / "no-mtp")

    assert "num_nextn_predict_layers" not in json.loads((workdir / "draft" / "config.json").read_text())
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_the_build_refuses_a_source_missing_an_mtp_tensor(family: str, family_root: Path, tmp_path: Path) -> None:
    source = Path(shutil.copytree(family_root / family / "source", tmp_path / "source"))
    _drop(source, MISSING[family])

    result = run_cli(
        "build", "--recipe", str(_recipe(tmp_path, family, source, family_root / family / "no-mtp")), "--workdir", str(tmp_path / "work")
    )

    assert result.code == 1
    assert f"tensor {MISSING[family]} is missing" in result.stderr


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_verify_refuses_a_draft_missing_an_mtp_tensor(family: str, family_root: Path, tmp_path: Path) -> None:
    recipe, workdir = _build(tmp_path, family, family_root / family / "source", family_root / family / "no-mtp")
    _drop(workdir / "draft", MISSING[family])

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "tensors.expected-set" in error and MISSING[family] in error


# A draft tensor stored under a name vLLM 0.33.0's loader matches but cannot load, per family: a KeyError
# from params_dict[name] in the hand-written loaders, a ValueError from AutoWeightsLoader (utils.py:442-448).
ERRORS = {
    "deepseek_v3": "KeyError",
    "deepseek_v32": "KeyError",
    "glm4_moe": "KeyError",
    "glm4_moe_lite": "KeyError",
    "qwen3_next": "ValueError",
    "mimo": "ValueError",
    "qwen3_5": "ValueError",
    "qwen3_5_moe": "ValueError",
    "glm5_next": "KeyError",
    "kimi_k3": "KeyError",
    "deepseek_v4": "KeyError",
    "qwen4_exp": "ValueError",
    "longcat_flash": "KeyError",
}
UNLOADABLE = [
    ("deepseek_v3", "model.layers.4.enorm.weight", "layers.4.enorm.weight", "layers.4.enorm.weight"),
    (
        "deepseek_v3",
        "model.layers.4.enorm.weight",
        "model.language_model.layers.4.enorm.weight",
        "model.language_model.layers.4.enorm.weight",
    ),
    ("glm4_moe", "model.layers.4.self_attn.o_proj.weight", "layers.4.self_attn.o_proj.weight", "layers.4.self_attn.o_proj.weight"),
    (
        "glm4_moe",
        "model.layers.4.self_attn.o_proj.weight",
        "model.language_model.layers.4.self_attn.o_proj.weight",
        "model.language_model.layers.4.mtp_block.self_attn.o_proj.weight",
    ),
    (
        "deepseek_v32",
        "model.layers.4.self_attn.indexer.k_norm.weight",
        "model.language_model.layers.4.self_attn.indexer.k_norm.weight",
        "model.language_model.layers.4.mtp_block.self_attn.indexer.k_norm.weight",
    ),
    ("glm4_moe_lite", "model.layers.4.eh_proj.weight", "layers.4.eh_proj.weight", "layers.4.eh_proj.weight"),
    (
        "glm4_moe_lite",
        "model.layers.4.self_attn.kv_b_proj.weight",
        "model.language_model.layers.4.self_attn.kv_b_proj.weight",
        "model.language_model.layers.4.mtp_block.self_attn.kv_b_proj.weight",
    ),
    ("qwen3_next", "mtp.norm.weight", "mtp.layers.1.norm.weight", "model.layers.1.norm.weight"),
    ("qwen3_5", "mtp.layers.0.mlp.down_proj.weight", "mtp.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"),
    ("qwen3_5_moe", "mtp.fc.weight", "mtp.layers.1.fc.weight", "model.layers.1.fc.weight"),
    (
        "mimo",
        "model.mtp_layers.0.final_layernorm.weight",
        "model.mtp_layers.1.final_layernorm.weight",
        "model.mtp_layers.1.final_layernorm.weight",
    ),
    ("glm5_next", "model.layers.4.eh_proj.weight", "layers.4.eh_proj.weight", "layers.4.eh_proj.weight"),
    (
        "kimi_k3",
        "model.layers.4.block_sparse_moe.experts.0.w1.weight",
        "model.layers.4.mlp.experts.0.w1.weight",
        "model.layers.4.mtp_block.mlp.experts.routed_experts.w13_weight",
    ),
    # vLLM's own name is renamed again by V4's substring rules (deepseek_v4/nvidia/mtp.py:362-373).
    ("deepseek_v4", "mtp.0.norm.weight", "mtp.0.shared_head.norm.weight", "model.layers.4.shared_head.shared_head.norm.weight"),
    ("deepseek_v4", "mtp.0.attn_norm.weight", "layers.4.attn_norm.weight", "layers.4.attn_norm.weight"),
    # Qwen3.5's single fc over [embedding, hidden] is not this block's (vLLM 0.33.0 qwen4_exp/nvidia/mtp.py:205-222).
    ("qwen4_exp", "mtp.fc_embedding.weight", "mtp.fc.weight", "model.fc.weight"),
    ("qwen4_exp", "mtp.layers.0.mlp.gate.weight", "mtp.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.weight"),
    # Outside LongCat-Flash's rename table a name keeps its own (longcat_flash_mtp.py:276-277).
    ("longcat_flash", "model.mtp.layers.0.enorm.m.weight", "model.mtp.layers.0.enorm.weight", "model.mtp.layers.0.enorm.weight"),
    (
        "longcat_flash",
        "model.mtp.layers.0.transformer_layer.mlp.gate_proj.weight",
        "model.mtp.layers.0.mlp.gate_proj.weight",
        "model.mtp.layers.0.mlp.gate_up_proj.weight",
    ),
]


@pytest.mark.parametrize(("family", "name", "stored_as", "mapped"), UNLOADABLE)
def test_verify_refuses_a_draft_tensor_vllm_cannot_load_and_names_it(
    family: str, name: str, stored_as: str, mapped: str, family_root: Path, tmp_path: Path
) -> None:
    recipe, workdir = _build(tmp_path, family, family_root / family / "source", family_root / family / "no-mtp")
    rename_tensor(workdir / "draft", name, stored_as)

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1 and stored_as in result.stderr
    loader = next(c for c in json.loads((workdir / "verify.json").read_text())["checks"] if c["id"] == "loader.names")
    assert (
        loader["evidence"]
        == f"{stored_as} maps to {mapped}, which vLLM 0.33.0 {FAMILIES[family].vllm_class} does not declare ({ERRORS[family]} while loading)"
    )


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_verify_refuses_a_draft_config_that_does_not_route_to_the_family(family: str, family_root: Path, tmp_path: Path) -> None:
    recipe, workdir = _build(tmp_path, family, family_root / family / "source", family_root / family / "no-mtp")
    config_path = workdir / "draft" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    config_path.write_text(json.dumps(config))

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    assert "config.mtp-route" in result.stderr and FAMILIES[family].vllm_class in result.stderr


@pytest.mark.parametrize("variant", sorted(VERDICTS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_inspect_gives_each_family_the_right_verdict(family: str, variant: str, family_root: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, family, family_root / family / "source", family_root / family / variant)

    result = run_cli("inspect", "--recipe", str(recipe), "--json")

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == VERDICTS[variant], report["reasons"]
    if variant == "other-vocab":
        assert report["reasons"] == ["vocab_size differs: draft 256, target 512"]
    if variant == "no-mtp":
        assert report["mtp"]["found"] == [] and report["mtp"]["layers"] == list(MTP_LAYERS[family])


def test_inspect_says_a_config_declares_the_count_only_when_it_does(family_root: Path, tmp_path: Path) -> None:
    """Qwen3-Next's config lacks the count (vLLM assumes 1); the others declare it, Nemotron-H as steps."""
    reasons = {}
    for family in ("qwen3_next", "deepseek_v3", "nemotron_h"):
        recipe = _recipe(tmp_path / family, family, family_root / family / "source", family_root / family / "no-mtp")
        reasons[family] = json.loads(run_cli("inspect", "--recipe", str(recipe), "--json").stdout)["reasons"][0]

    assert reasons["qwen3_next"] == "the target ships none of the 29 MTP tensors of layers 0"
    assert (
        reasons["deepseek_v3"]
        == "the target ships none of the 30 MTP tensors of layers 4, although its config declares num_nextn_predict_layers: 1"
    )
    # num_nextn_predict_layers counts steps; the step runs one layer per MTP pattern character (nemotron_h_mtp.py:246-292).
    assert reasons["nemotron_h"] == (
        "the target ships none of the 22 MTP tensors of layers 0-1, although its config declares one MTP step of 2 layers "
        "(num_nextn_predict_layers: 1)"
    )


def _example_recipes() -> list[Path]:
    return sorted((ROOT / "artifacts").rglob("draft.yaml"))


@pytest.mark.parametrize("path", _example_recipes(), ids=lambda path: path.parent.name)
def test_every_recipe_under_artifacts_loads(path: Path) -> None:
    recipe = load_recipe(path)

    if path.parent.parent.name == "examples":
        assert recipe.family == path.parent.name
        assert isinstance(recipe.source, HubRef) and isinstance(recipe.target, HubRef)


def test_every_family_has_an_example_recipe_and_a_readme_row() -> None:
    examples = {path.parent.name for path in (ROOT / "artifacts" / "examples").glob("*/draft.yaml")}
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Supported families") :]
    for name, family in FAMILIES.items():
        assert name == "step3p7" or name in examples, name
        assert f"| `{name}` |" in table and family.vllm_class in table, name


def test_a_glm46_shaped_source_builds_and_verifies_with_either_shared_weights_choice(tmp_path: Path) -> None:
    """GLM-4.6 ships no per-layer embed_tokens / shared_head.head; vLLM 0.33.0 takes the target's
    (and reads a top-level lm_head into the layer's head), so both choices build."""
    source = write_family_source(tmp_path / "glm46", "glm4_moe", FamilySpec(per_layer_heads=False))
    target = write_family_target(tmp_path / "target", "glm4_moe")
    source_hashes = folder_tensor_hashes(source)
    assert "model.layers.4.shared_head.head.weight" not in source_hashes

    _, omit = _build(tmp_path / "omit", "glm4_moe", source, target)
    assert set(folder_tensor_hashes(omit / "draft")) == DRAFT_TENSORS["glm4_moe"]

    _, copy = _build(tmp_path / "copy", "glm4_moe", source, target, "shared_weights: copy\n")
    produced = folder_tensor_hashes(copy / "draft")
    assert set(produced) == DRAFT_TENSORS["glm4_moe"] | SHARED_COPIES["glm4_moe"]
    assert produced["model.layers.4.shared_head.head.weight"] == source_hashes["lm_head.weight"]
    assert produced["model.layers.4.embed_tokens.weight"] == source_hashes["model.embed_tokens.weight"]
    assert json.loads((copy / "verify.json").read_text())["passed"] is True


@pytest.mark.parametrize("family", COPYING)
def test_shared_weights_copy_ships_the_copies_and_omit_reports_what_it_saves(family: str, family_root: Path, tmp_path: Path) -> None:
    source, target = family_root / family / "source", family_root / family / "no-mtp"
    recipe = _recipe(tmp_path / "omit", family, source, target, "card: {credit: mtp-draft-pipeline (synthetic weights)}\n")
    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "omit" / "work"))
    assert result.code == 0, result.stderr
    # [256, 64] BF16 copies, 256 * 64 * 2 bytes each.
    count = len(SHARED_COPIES[family])
    copies = "1 copy" if count == 1 else f"{count} copies"
    assert (
        f"shared_weights: omit leaves out {copies} vLLM replaces ({', '.join(sorted(SHARED_COPIES[family], key=_order(family)))}), saving {count * 32768} bytes"
        in (result.stderr + result.stdout)
    )
    index = json.loads((tmp_path / "omit" / "work" / "draft" / "model.safetensors.index.json").read_text())
    assert not SHARED_COPIES[family] & set(index["weight_map"])
    card = run_cli("card", "--recipe", str(recipe), "--workdir", str(tmp_path / "omit" / "work"))
    assert card.code == 0, card.stderr
    assert "(`shared_weights: omit`): vLLM 0.33.0 replaces them with the target's" in (recipe.parent / "README.md").read_text()

    _, copy = _build(tmp_path / "copy", family, source, target, "shared_weights: copy\n")
    produced = folder_tensor_hashes(copy / "draft")
    assert set(produced) == DRAFT_TENSORS[family] | SHARED_COPIES[family]
    assert json.loads((copy / "verify.json").read_text())["passed"] is True


def _order(family: str) -> Any:
    """The copies in the family's output order: extras before layer tensors, embedding first."""
    return lambda name: 0 if "embed_tokens" in name or "tok_emb" in name else 1


@pytest.mark.parametrize(
    ("family", "asked", "only", "why"),
    [
        ("step3p7", "omit", "copy", "per-layer heads"),  # Step keeps its own heads and reads its embedding
        ("nemotron_h", "copy", "omit", "no embedding or head"),  # NemotronHMTP has neither (nemotron_h_mtp.py:255, 372)
        ("step5", "omit", "copy", "per-layer heads"),  # Step5MTP requires every parameter (step5/nvidia/mtp.py:411-420)
    ],
)
def test_a_recipe_asking_for_a_shared_weights_choice_its_family_lacks_is_refused_in_one_line(
    family: str, asked: str, only: str, why: str, family_root: Path, tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path, family, family_root / family / "source", family_root / family / "no-mtp", f"shared_weights: {asked}\n")

    result = run_cli("inspect", "--recipe", str(recipe))

    assert result.code == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"shared_weights: must be {only} for {family}" in error[0] and why in error[0]


def test_a_qwen3_5_source_with_two_mtp_layers_in_its_text_config_builds_both(tmp_path: Path) -> None:
    """Qwen3.5 counts its MTP layers with text_config.mtp_num_hidden_layers (vLLM 0.33.0 qwen3_5_mtp.py:82)."""
    spec = FamilySpec(num_mtp_layers=2)
    source = write_family_source(tmp_path / "source", "qwen3_5", spec)
    target = write_family_target(tmp_path / "target", "qwen3_5", spec)

    _, workdir = _build(tmp_path, "qwen3_5", source, target)

    produced = set(folder_tensor_hashes(workdir / "draft"))
    assert {name.split(".")[2] for name in produced if name.startswith("mtp.layers.")} == {"0", "1"}
    assert len(produced) == 4 + 2 * 11
    assert json.loads((workdir / "draft" / "config.json").read_text())["text_config"]["mtp_num_hidden_layers"] == 2
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


def test_a_qwen3_5_config_with_per_layer_scales_is_refused_by_field() -> None:
    """vLLM 0.33.0 adds attn/ffn layer scales under `layer_scale` (qwen3_5.py:195-210); the table does not know them."""
    config = family_config("qwen3_5")
    config["text_config"]["layer_scale"] = True

    with pytest.raises(ValueError, match=r"^text_config\.layer_scale: per-layer scales"):
        FAMILIES["qwen3_5"].read_geometry(config)


def test_a_kimi_k3_source_under_language_model_builds_the_layer_as_vllm_reads_it(family_root: Path, tmp_path: Path) -> None:
    """The multimodal release may prefix its text weights with `language_model.`; vLLM 0.33.0's
    KimiK3MTP strips it (kimi_k3/nvidia/mtp.py:324-325), and the draft stores bare `model.layers.N.*`."""
    source = Path(shutil.copytree(family_root / "kimi_k3" / "source", tmp_path / "source"))
    original = folder_tensor_hashes(source)
    for name in DRAFT_TENSORS["kimi_k3"]:
        rename_tensor(source, name, "language_model." + name)

    _, workdir = _build(tmp_path, "kimi_k3", source, family_root / "kimi_k3" / "no-mtp")

    produced = folder_tensor_hashes(workdir / "draft")
    assert set(produced) == DRAFT_TENSORS["kimi_k3"]
    assert all(original[name] == sha for name, sha in produced.items())
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


def test_a_kimi_k3_config_without_latent_moe_puts_its_experts_in_the_hidden_width() -> None:
    """Without routed_expert_hidden_size vLLM builds no latent projections and sizes the experts
    by hidden_size (kimi_k3/nvidia/model.py:383-389, 510-514)."""
    config = family_config("kimi_k3")
    del config["text_config"]["routed_expert_hidden_size"]
    family = FAMILIES["kimi_k3"]
    geometry = family.read_geometry(config)

    shapes = {tensor.name: tensor.shape for tensor in family.expected_tensors(geometry)}
    assert shapes["model.layers.4.block_sparse_moe.experts.0.w1.weight"] == (24, 64)
    assert shapes["model.layers.4.block_sparse_moe.experts.0.w2.weight"] == (64, 24)
    assert len(shapes) == 31 and not [name for name in shapes if "routed_expert_" in name]
    assert not [module.prefix for module in family.quant_module_prefixes(geometry) if "routed_expert_" in module.prefix]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mla_use_output_gate", False, r"^text_config\.mla_use_output_gate: must be true \(this family knows the gated"),
        ("mla_use_nope", False, r"^text_config\.mla_use_nope: must be true \(vLLM 0\.33\.0 asserts it"),
        ("first_k_dense_replace", 5, r"^text_config\.first_k_dense_replace: MTP layer 4 would be a dense MLP layer"),
        (
            "linear_attn_config",
            {"kda_layers": [1, 2, 5], "full_attn_layers": [3, 4]},
            r"^text_config\.linear_attn_config\.kda_layers: names MTP layer 4",
        ),
        ("num_shared_experts", 0, r"^text_config\.num_shared_experts: must be an integer >= 1"),
    ],
)
def test_a_kimi_k3_layout_the_family_does_not_know_is_refused_by_field(field: str, value: object, message: str) -> None:
    config = family_config("kimi_k3")
    config["text_config"][field] = value

    with pytest.raises(ValueError, match=message):
        FAMILIES["kimi_k3"].read_geometry(config)


def test_a_kimi_k3_source_with_attention_residual_weights_in_its_mtp_layer_builds_without_them(family_root: Path, tmp_path: Path) -> None:
    """vLLM 0.33.0 builds Kimi K3's MTP block without the attention-residual weights and skips them
    when loading (kimi_k3/nvidia/mtp.py:96-98, 392-397): the build neither refuses nor ships them."""
    source = Path(shutil.copytree(family_root / "kimi_k3" / "source", tmp_path / "source"))
    rename_tensor(source, "model.layers.0.input_layernorm.weight", "model.layers.4.self_attention_res_norm.weight")
    rename_tensor(source, "model.layers.1.input_layernorm.weight", "model.layers.4.mlp_res_norm.weight")

    _, workdir = _build(tmp_path, "kimi_k3", source, family_root / "kimi_k3" / "no-mtp")

    assert set(folder_tensor_hashes(workdir / "draft")) == DRAFT_TENSORS["kimi_k3"]
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


def test_a_kimi_k3_source_with_an_mtp_tensor_vllm_does_not_know_is_still_refused(family_root: Path, tmp_path: Path) -> None:
    source = Path(shutil.copytree(family_root / "kimi_k3" / "source", tmp_path / "source"))
    rename_tensor(source, "model.layers.0.input_layernorm.weight", "model.layers.4.self_attn.k_norm.weight")

    result = run_cli(
        "build",
        "--recipe",
        str(_recipe(tmp_path, "kimi_k3", source, family_root / "kimi_k3" / "no-mtp")),
        "--workdir",
        str(tmp_path / "work"),
    )

    assert result.code == 1
    assert "1 MTP tensor(s) the kimi_k3 family does not know, first model.layers.4.self_attn.k_norm.weight" in result.stderr


def test_verify_refuses_a_nemotron_h_tensor_vllm_would_drop_without_a_word(family_root: Path, tmp_path: Path) -> None:
    """NemotronHMTP skips a name it has no parameter for instead of raising (nemotron_h_mtp.py:532-536):
    a misplaced final norm would leave the real one at its initial value, so verify names it."""
    source, target = family_root / "nemotron_h" / "source", family_root / "nemotron_h" / "no-mtp"
    recipe, workdir = _build(tmp_path, "nemotron_h", source, target)
    rename_tensor(workdir / "draft", "mtp.layers.1.final_layernorm.weight", "mtp.layers.0.final_layernorm.weight")

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    loader = next(c for c in json.loads((workdir / "verify.json").read_text())["checks"] if c["id"] == "loader.names")
    assert (
        loader["evidence"]
        == "mtp.layers.0.final_layernorm.weight: vLLM 0.33.0 NemotronHMTP skips this tensor, so the draft must not ship it"
    )


def test_a_nemotron_h_source_with_latent_moe_builds_its_latent_projections(tmp_path: Path) -> None:
    """With moe_latent_size the experts work in the latent width between fc1/fc2 (vLLM 0.33.0 nemotron_h.py:152-213)."""
    spec = FamilySpec(moe_latent_size=32)
    source = write_family_source(tmp_path / "source", "nemotron_h", spec)
    target = write_family_target(tmp_path / "target", "nemotron_h", spec)

    _, workdir = _build(tmp_path, "nemotron_h", source, target)

    latent = {f"mtp.layers.1.mixer.{p}_latent_proj.weight" for p in ("fc1", "fc2")}
    produced = folder_tensor_hashes(workdir / "draft")
    assert set(produced) == DRAFT_TENSORS["nemotron_h"] | latent
    index = json.loads((workdir / "draft" / "model.safetensors.index.json").read_text())
    shapes = {
        "mtp.layers.1.mixer.fc1_latent_proj.weight": (32, 64),
        "mtp.layers.1.mixer.fc2_latent_proj.weight": (64, 32),
        "mtp.layers.1.mixer.experts.0.up_proj.weight": (24, 32),
        "mtp.layers.1.mixer.experts.0.down_proj.weight": (32, 24),
        "mtp.layers.1.mixer.shared_experts.up_proj.weight": (24, 64),
    }
    for name, shape in shapes.items():
        with safe_open(str(workdir / "draft" / index["weight_map"][name]), framework="numpy") as handle:
            assert tuple(handle.get_slice(name).get_shape()) == shape, name
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


def test_a_nemotron_h_mtp_layer_list_overrides_the_legacy_pattern() -> None:
    """transformers 5.20.2 keeps a non-default mtp_layers_block_type over mtp_hybrid_override_pattern
    and maps legacy names (configuration_nemotron_h.py:180-188); one layer then holds both ends of the step."""
    config = {**family_config("nemotron_h"), "mtp_layers_block_type": ["attention"]}
    geometry = FAMILIES["nemotron_h"].read_geometry(config)

    names = {tensor.name for tensor in FAMILIES["nemotron_h"].expected_tensors(geometry)}
    assert names == _under("mtp.layers.0.", NEMOTRON_START + NEMOTRON_ATTENTION + ["final_layernorm.weight"])


def test_a_nemotron_h_config_in_transformers_aliases_reads_like_the_field_names() -> None:
    """NemotronHConfig.attribute_map sends layer_types to layers_block_type and num_local_experts to
    n_routed_experts (transformers 5.20.2 configuration_nemotron_h.py:84); set last, the alias wins."""
    family, config = FAMILIES["nemotron_h"], family_config("nemotron_h")
    aliased = {key: value for key, value in config.items() if key not in ("hybrid_override_pattern", "n_routed_experts")}
    aliased |= {"layer_types": ["linear_attention", "full_attention"], "num_local_experts": 3}
    geometry = family.read_geometry({**aliased, "n_routed_experts": 8, "layers_block_type": ["moe"] * 5})

    assert (geometry.num_hidden_layers, geometry.num_experts) == (2, 3)


@pytest.mark.parametrize("shared", [None, 0])
def test_a_nemotron_h_moe_without_shared_experts_has_no_shared_expert_tensors(shared: int | None) -> None:
    """n_shared_experts null or 0 builds no shared expert (vLLM 0.33.0 nemotron_h.py:178-179)."""
    geometry = FAMILIES["nemotron_h"].read_geometry({**family_config("nemotron_h"), "n_shared_experts": shared})

    names = {tensor.name for tensor in FAMILIES["nemotron_h"].expected_tensors(geometry)}
    assert names == DRAFT_TENSORS["nemotron_h"] - _under("mtp.layers.1.", [f"mixer.shared_experts.{p}_proj.weight" for p in ("up", "down")])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mtp_hybrid_override_pattern": "*M"}, r"^mtp_hybrid_override_pattern: vLLM 0.33.0 builds only attention and MoE MTP layers"),
        ({"mtp_layers_block_type": ["full_attention", "mlp"]}, r"^mtp_layers_block_type: vLLM 0.33.0 builds only attention and MoE"),
        ({"num_nextn_predict_layers": 2}, r"^num_nextn_predict_layers: vLLM 0.33.0 NemotronHMTP supports exactly 1 MTP step"),
        ({"mtp_layers_block_type": []}, r"^mtp_layers_block_type: must name at least one MTP layer"),
        ({"mtp_hybrid_override_pattern": "*X"}, r"^mtp_hybrid_override_pattern: must be a string of M, E, \*, -"),
    ],
)
def test_a_nemotron_h_config_vllm_cannot_build_is_refused_by_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FAMILIES["nemotron_h"].read_geometry({**family_config("nemotron_h"), **change})


def test_a_deepseek_v4_config_decides_the_router_bias_and_shared_experts_and_refuses_vision() -> None:
    """vLLM 0.33.0 builds e_score_correction_bias only under topk_method noaux_tc and no shared experts
    when n_shared_experts is null (deepseek_v4/nvidia/model.py:301-334); vision configs add bias_vl (:311-318)."""
    family = FAMILIES["deepseek_v4"]
    config = family_config("deepseek_v4")
    names = {tensor.name for tensor in family.expected_tensors(family.read_geometry(config))}
    assert {"mtp.0.ffn.gate.bias", "mtp.0.ffn.shared_experts.w2.weight"} <= names

    plain = {**config, "topk_method": None, "n_shared_experts": None}
    names = {tensor.name for tensor in family.expected_tensors(family.read_geometry(plain))}
    assert len(names) == DRAFT_COUNTS["deepseek_v4"] - 4 and not any("gate.bias" in n or "shared_experts" in n for n in names)

    with pytest.raises(ValueError, match=r"^vision_n_layers: the vision model's MoE gates carry bias_vl"):
        family.read_geometry({**config, "vision_n_layers": 2})
    with pytest.raises(ValueError, match=r"^o_groups: must divide num_attention_heads x head_dim \(64\), found 3"):
        family.read_geometry({**config, "o_groups": 3})


def test_verify_refuses_a_step5_tensor_vllm_would_drop_with_only_a_warning(family_root: Path, tmp_path: Path) -> None:
    """Step5MTP skips a name it has no parameter for (step5/nvidia/mtp.py:402-406): a head stored under
    the multimodal prefix would leave the real one at its initial value, so verify names it."""
    source, target = family_root / "step5" / "source", family_root / "step5" / "no-mtp"
    recipe, workdir = _build(tmp_path, "step5", source, target)
    stored_as = "model.language_model.layers.4.self_attn.ssmax_s"
    rename_tensor(workdir / "draft", "model.layers.4.self_attn.ssmax_s", stored_as)

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    loader = next(c for c in json.loads((workdir / "verify.json").read_text())["checks"] if c["id"] == "loader.names")
    assert loader["evidence"] == f"{stored_as}: vLLM 0.33.0 Step5MTP skips this tensor, so the draft must not ship it"


def test_a_step5_source_with_a_sliding_mtp_layer_builds_it_without_the_sparse_indexer(tmp_path: Path) -> None:
    """Layer 5 is sliding attention: q/k/v and the gate load into qkvg_proj, with the sliding heads
    of attention_other_setting (vLLM 0.33.0 step5/nvidia/model.py:1863-1878, 1076-1090)."""
    spec = FamilySpec(num_mtp_layers=2)
    source = write_family_source(tmp_path / "source", "step5", spec)
    target = write_family_target(tmp_path / "target", "step5", spec)

    _, workdir = _build(tmp_path, "step5", source, target)

    produced = set(folder_tensor_hashes(workdir / "draft"))
    sliding = {name for name in _under("model.layers.5.", STEP5_LAYER) if "sparse_indexer" not in name and "ssmax" not in name}
    assert produced == DRAFT_TENSORS["step5"] | sliding
    index = json.loads((workdir / "draft" / "model.safetensors.index.json").read_text())
    for name, shape in {"model.layers.5.self_attn.q_proj.weight": (8 * 16, 64), "model.layers.5.self_attn.g_proj.weight": (8, 64)}.items():
        with safe_open(str(workdir / "draft" / index["weight_map"][name]), framework="numpy") as handle:
            assert tuple(handle.get_slice(name).get_shape()) == shape, name
    config = json.loads((workdir / "draft" / "config.json").read_text())
    assert len(config["layer_types_with_mtp"]) == 6 and "quantization_config" not in config
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sparse_config": None}, r"^sparse_config: is required: vLLM 0\.33\.0 refuses Step5 checkpoints without a sparse section"),
        ({"moe_layers_enum": "1,2,3,4"}, r"^moe_layers_enum: names MTP layer 4, but vLLM 0\.33\.0 Step5MTP supports dense MTP layers only"),
        ({"use_head_wise_attn_gate": False}, r"^use_head_wise_attn_gate: must be true: a full-attention MTP layer uses sparse attention"),
        ({"layer_types_with_mtp": None}, r"^layer_types: has 4 entries, the MTP layers need 5"),
        ({"layer_types_with_mtp": None, "layer_types": None}, r"^layer_types_with_mtp: is required to know each MTP layer's attention"),
        ({"attention_bias": True}, r"^attention_bias: vLLM 0\.33\.0 does not support Step5 attention biases"),
    ],
)
def test_a_step5_config_vllm_cannot_build_is_refused_by_field(change: dict[str, Any], message: str) -> None:
    config = {key: value for key, value in {**family_config("step5"), **change}.items() if value is not None}

    with pytest.raises(ValueError, match=message):
        FAMILIES["step5"].read_geometry(config)


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        # vLLM 0.33.0 step5/nvidia/config.py:110-123: null or "" is the default, else int(value), then :140-156.
        ({"proxy_dim": None}, True),
        ({"proxy_dim": "256"}, True),
        ({"proxy_dim": ""}, True),
        ({"sparse_indexer_num_k_heads": "1", "sparse_indexer_num_heads": "2"}, True),
        ({"proxy_dim": 128}, False),
        ({"proxy_dim": "wide"}, False),
        ({"sparse_indexer_num_k_heads": 2}, False),
    ],
)
def test_a_step5_sparse_section_is_read_as_vllm_reads_it(fields: dict[str, Any], accepted: bool) -> None:
    config = family_config("step5")
    config["sparse_config"] = {**config["sparse_config"], **fields}

    if accepted:
        geometry = FAMILIES["step5"].read_geometry(config)
        assert geometry.sizes == {"proxy_dim": 256, "indexer_heads": 2, "indexer_k_heads": 1}
    else:
        with pytest.raises(ValueError, match=r"^sparse_config\.(proxy_dim|sparse_indexer_num_k_heads): "):
            FAMILIES["step5"].read_geometry(config)


def test_a_step5_config_with_sparse_attention_disabled_builds_no_indexer() -> None:
    """`sparse_config.enabled: false` keeps the section (required) but turns DSA off (step5/nvidia/config.py:84-90)."""
    config = family_config("step5")
    config["sparse_config"] = {**config["sparse_config"], "enabled": False}
    family = FAMILIES["step5"]
    geometry = family.read_geometry(config)

    params = family.declared_params(geometry)
    assert "model.layers.4.mtp_block.self_attn.qkvg_proj.weight" in params
    assert not [param for param in params if "sparse_indexer" in param or "qkv_indexer" in param or "ssmax" in param]


@pytest.mark.parametrize(
    ("family", "fields", "routed"),
    [
        # vLLM 0.33.0 transformers_utils/config.py:180-184, 368-369: no model_type, architectures[0] decides.
        ("longcat_flash", {"model_type": None, "architectures": ["LongcatFlashNgramForCausalLM"]}, True),
        ("longcat_flash", {"model_type": None, "architectures": ["LongcatFlashForCausalLM"]}, True),
        ("longcat_flash", {"model_type": None, "architectures": ["LlamaForCausalLM", "LongcatFlashForCausalLM"]}, False),
        # config/speculative.py:1055-1058: Step5 routes on any listed architecture.
        ("step5", {"model_type": "llama", "architectures": ["LlamaForCausalLM", "Step5ForConditionalGeneration"]}, True),
        ("step3p7", {"model_type": "llama", "architectures": ["LlamaForCausalLM", "Step3p7ForConditionalGeneration"]}, False),
    ],
)
def test_verify_routes_a_draft_config_as_vllm_does(
    family: str, fields: dict[str, Any], routed: bool, family_root: Path, tmp_path: Path
) -> None:
    recipe, workdir = _build(tmp_path, family, family_root / family / "source", family_root / family / "no-mtp")
    config_path = workdir / "draft" / "config.json"
    config = {**json.loads(config_path.read_text()), **fields}
    config_path.write_text(json.dumps({key: value for key, value in config.items() if value is not None}))

    run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    route = next(check for check in json.loads((workdir / "verify.json").read_text())["checks"] if check["id"] == "config.mtp-route")
    assert route["passed"] is routed, route["evidence"]
