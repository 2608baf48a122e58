"""Replays vLLM 0.33.0's MTP `load_weights` name handling, one function per loader.

Each function takes a checkpoint tensor name and returns the parameter vLLM would fill with it,
or None when the loader skips the name. A returned name that the module does not declare is a
`KeyError` in vLLM (`params_dict[name]`). The functions follow the upstream code statement by
statement; file:line references are to the vLLM 0.33.0 wheel (`vllm/model_executor/models/`).
"""

from __future__ import annotations

from collections.abc import Collection

from pipeline.families.base import Geometry

# (parameter, checkpoint part) pairs of each loader's stacked_params_mapping.
STEP_STACKED = (
    ("qkv_proj", "q_proj"),
    ("qkv_proj", "k_proj"),
    ("qkv_proj", "v_proj"),
    ("gate_up_proj", "gate_proj"),
    ("gate_up_proj", "up_proj"),
)
DEEPSEEK_STACKED = (
    ("gate_up_proj", "gate_proj"),
    ("gate_up_proj", "up_proj"),
    ("fused_qkv_a_proj", "q_a_proj"),
    ("fused_qkv_a_proj", "kv_a_proj_with_mqa"),
    ("wk_weights_proj", "wk"),
    ("wk_weights_proj", "weights_proj"),
)
GLM_STACKED = STEP_STACKED
# Names the nextn loaders keep beside the decoder block (no `.mtp_block.` inserted).
SPEC_LAYER_WEIGHTS = ("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head")


def spec_layer(name: str, geometry: Geometry) -> int | None:
    """`get_spec_layer_idx_from_weight_name` (utils.py:575-601): the MTP layer a name belongs to."""
    base = geometry.num_hidden_layers
    for i in range(geometry.num_mtp_layers):
        layer = base + i
        if name.startswith((f"model.layers.{layer}.", f"layers.{layer}.", f"model.language_model.layers.{layer}.")):
            return layer
    return None


def _insert_block(name: str, layer: int) -> str:
    """`_rewrite_spec_layer_name` for block weights: a plain `str.replace` of `model.layers.L.`,
    so `layers.L.*` stays as it is and `model.language_model.layers.L.*` gets the infix too."""
    return name.replace(f"model.layers.{layer}.", f"model.layers.{layer}.mtp_block.")


# FusedMoE's checkpoint names for the gate, up and down projections, with the parameter each fills.
GATE_UP_DOWN = (("gate_proj", "w13"), ("up_proj", "w13"), ("down_proj", "w2"))
# The same for checkpoints that name them w1, w2 and w3 (DeepSeek-V4, Kimi K3).
W1_W2_W3 = (("w1", "w13"), ("w2", "w2"), ("w3", "w13"))


def expert_param(name: str, geometry: Geometry, parts: tuple[tuple[str, str], ...] = GATE_UP_DOWN) -> str | None:
    """FusedMoE's per-expert mapping (layers/fused_moe/routed_experts.py:1220-1290): checkpoint
    `experts.{e}.{gate,up,down}_proj.` (or the model's own `parts`) becomes `experts.routed_experts.{w13,w2}_`."""
    for expert in range(geometry.num_experts):
        for part, fused in parts:
            marker = f"experts.{expert}.{part}."
            if marker in name:
                return name.replace(marker, f"experts.routed_experts.{fused}_")
    return None


def step3p5_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Step3p5MTP.load_weights` (step3p5_mtp.py:202-301, rewrite :323-345)."""
    if "rotary_emb.inv_freq" in name:
        return None
    layer = spec_layer(name, geometry)
    if "embed_tokens" not in name and layer is None:
        return None
    if layer is not None and not any(part in name for part in SPEC_LAYER_WEIGHTS):
        name = _insert_block(name, layer)
    for param, part in STEP_STACKED:
        if part not in name:
            continue
        if "mlp.experts." in name and name not in params:
            continue
        if "experts" in name or "moe" in name:
            continue
        name = name.replace(part, param)
        return None if name.endswith(".bias") and name not in params else name
    for fused, part in (
        (".moe.experts.w13_weight", ".moe.gate_proj.weight"),
        (".moe.experts.w13_weight", ".moe.up_proj.weight"),
        (".moe.experts.w2_weight", ".moe.down_proj.weight"),
    ):
        if part in name:
            return name.replace(part, fused)
    return step_plain_name(name, layer, params)


def step_plain_name(name: str, layer: int | None, params: Collection[str]) -> str | None:
    """The unpacked branch Step3p5MTP (step3p5_mtp.py:277-295) and Step5MTP (step5/nvidia/mtp.py:387-401)
    share: undeclared biases and `tok_embeddings` are skipped, `.transformer.` is dropped, the head and
    the embedding take vLLM's names."""
    if (name.endswith(".bias") and name not in params) or "tok_embeddings" in name:
        return None
    if layer is not None and ".transformer." in name:
        name = name.replace(".transformer.", ".")
    if "shared_head" in name:
        name = name.replace("shared_head.output", "shared_head.head")
    if "embed_tokens" in name:
        name = "model.embed_tokens.weight"
    return name


def nextn_rewrite(name: str, layer: int) -> str:
    """`_rewrite_spec_layer_name` of DeepSeek (deepseek_mtp.py:541-570) and GLM (glm4_moe_mtp.py:414-443)."""
    part = next((part for part in SPEC_LAYER_WEIGHTS if part in name), None)
    if part is None:
        return _insert_block(name, layer)
    if part == "embed_tokens":
        return name.replace(f"model.layers.{layer}.", "model.")
    return name


def nextn_tail(name: str, layer: int, geometry: Geometry, params: Collection[str], stacked: tuple[tuple[str, str], ...]) -> str | None:
    """The stacked / expert / plain branches shared by the DeepSeek and GLM loaders."""
    for param, part in stacked:
        if part not in name:
            continue
        if "mlp.experts." in name and name not in params:
            continue
        mapped = name.replace(part, param)
        if param == "fused_qkv_a_proj" and mapped not in params:
            continue  # deepseek_mtp.py:387-392: the fusion is optional
        return None if mapped.endswith(".bias") and mapped not in params else mapped
    expert = expert_param(name, geometry)
    if expert is not None:
        return expert
    if name.endswith(".bias") and name not in params:
        return None
    if layer != geometry.num_hidden_layers and ".layers" not in name:
        return None  # only the first MTP layer's shared embedding is loaded
    return name


def deepseek_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`DeepSeekMTP.load_weights` (deepseek_mtp.py:304-518)."""
    if "rotary_emb.inv_freq" in name:
        return None
    layer = spec_layer(name, geometry)
    if layer is None:
        # :345-355: a top-level embed_tokens loads when a parameter of that exact name exists.
        return name if "embed_tokens" in name and name in params else None
    return nextn_tail(nextn_rewrite(name, layer), layer, geometry, params, DEEPSEEK_STACKED)


GLM_LITE_STACKED = DEEPSEEK_STACKED[:4]  # glm4_moe_lite_mtp.py:275-280: no indexer fusion


def glm4_moe_lite_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Glm4MoeLiteMTP.load_weights` (glm4_moe_lite_mtp.py:274-454): DeepSeek's rules, except that
    every name outside the MTP layers is skipped (:300-302), a top-level embedding included."""
    if "rotary_emb.inv_freq" in name:
        return None
    layer = spec_layer(name, geometry)
    if layer is None:
        return None
    return nextn_tail(nextn_rewrite(name, layer), layer, geometry, params, GLM_LITE_STACKED)


def glm4_moe_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Glm4MoeMTP.load_weights` (glm4_moe_mtp.py:248-412): top-level `lm_head.weight` and
    `model.embed_tokens.weight` are read too (:274-283, PR #27597)."""
    start = geometry.num_hidden_layers
    if name == "lm_head.weight":
        layer, name = start, f"model.layers.{start}.shared_head.head.weight"
    elif name == "model.embed_tokens.weight":
        layer = start
    else:
        found = spec_layer(name, geometry)
        if found is None:
            return None
        layer, name = found, nextn_rewrite(name, found)
    if name.endswith(".weight_scale") and name not in params:
        return None
    return nextn_tail(name, layer, geometry, params, GLM_STACKED)


# Qwen3NextMultiTokenPredictor.hf_to_vllm_mapper (qwen3_next.py:634-645), applied below `model.`.
QWEN3_NEXT_STACKED = (
    (".q_proj", ".qkv_proj"),
    (".k_proj", ".qkv_proj"),
    (".v_proj", ".qkv_proj"),
    (".mlp.gate_proj", ".mlp.gate_up_proj"),
    (".mlp.up_proj", ".mlp.gate_up_proj"),
    (".shared_expert.gate_proj", ".shared_expert.gate_up_proj"),
    (".shared_expert.up_proj", ".shared_expert.gate_up_proj"),
)


def qwen3_next_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Qwen3NextMTP.load_weights` (qwen3_next_mtp.py:230-245): keep `mtp.*`, `embed_tokens` and
    `lm_head`; `mtp.` becomes `model.`; the predictor's mapper fuses q/k/v and gate/up; routed
    experts load through FusedMoE's mapping."""
    if not name.startswith("mtp.") and not any(key in name for key in ("embed_tokens", "lm_head")):
        return None
    if name.startswith("mtp."):
        name = name.replace("mtp.", "model.")
    return qwen_predictor(name, geometry)


def qwen_predictor(name: str, geometry: Geometry) -> str:
    """Below `model.`, the predictor's mapper fuses q/k/v and gate/up and FusedMoE takes the experts."""
    if name.startswith("model."):
        for old, new in QWEN3_NEXT_STACKED:
            if old in name:
                name = name.replace(old, new, 1)
        expert = expert_param(name, geometry)
        if expert is not None:
            return expert
    return name


def qwen3_5_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Qwen3_5MTP.load_weights` (qwen3_5_mtp.py:302-318): Qwen3-Next's rules, and an embedding
    stored under `language_model.` (the multimodal release) loses that part. The predictor's mapper
    (qwen3_5.py:226-234) is Qwen3-Next's plus linear-attention fusions no MTP layer has."""
    if not name.startswith("mtp.") and not any(key in name for key in ("embed_tokens", "lm_head")):
        return None
    if name.startswith("mtp."):
        name = name.replace("mtp.", "model.")
    elif "embed_tokens" in name:
        name = name.replace("language_model.", "")
    return qwen_predictor(name, geometry)


# MiMoMTP.hf_to_vllm_mapper (mimo_mtp.py:168-186): substrings, then stacked, then the layer prefix.
MIMO_SUBSTRINGS = (
    (".self_attn.", ".mtp_block.self_attn."),
    (".mlp.", ".mtp_block.mlp."),
    (".input_layernorm.", ".mtp_block.input_layernorm."),
    (".post_attention_layernorm.", ".mtp_block.post_attention_layernorm."),
)
MIMO_STACKED = (
    (".q_proj", ".qkv_proj"),
    (".k_proj", ".qkv_proj"),
    (".v_proj", ".qkv_proj"),
    (".gate_proj", ".gate_up_proj"),
    (".up_proj", ".gate_up_proj"),
)


def mimo_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`MiMoMTP.load_weights` (mimo_mtp.py:213-222): keep `mtp_layers`, `embed_tokens`, `lm_head`;
    `model.mtp_layers.i.` becomes `model.mtp_layers.{num_hidden_layers + i}.` with `.mtp_block.`."""
    if not any(key in name for key in ("mtp_layers", "embed_tokens", "lm_head")):
        return None
    for old, new in (*MIMO_SUBSTRINGS, *MIMO_STACKED):
        if old in name:
            name = name.replace(old, new, 1)
    for i in range(geometry.num_mtp_layers):
        prefix = f"model.mtp_layers.{i}."
        if name.startswith(prefix):
            return f"model.mtp_layers.{geometry.num_hidden_layers + i}." + name[len(prefix) :]
    return name
