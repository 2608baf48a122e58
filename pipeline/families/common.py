"""Pieces several families repeat: DeepSeek-style nextn heads, routed and shared experts, loader rules.

DeepSeek-V3/R1 and GLM-4.5+ store their MTP as one more decoder layer with the same six head
tensors and the same vLLM loader shape (facts §9); Qwen3-Next's MTP layer has the same routed
experts. Shapes read `Geometry.sizes`, filled by each family's geometry reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.families.base import Attention, ExtraTensor, Geometry, LayerTensor, QuantModule, require_int

ShapeRule = Callable[[Geometry, Attention], tuple[int, ...]]


def hidden(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.hidden_size,)


def vocab_rows(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.vocab_size, g.hidden_size)


def concat_proj(g: Geometry, a: Attention) -> tuple[int, ...]:
    """The MTP input projection over [embedding, hidden] (or [hidden, embedding] in MiMo)."""
    return (g.hidden_size, 2 * g.hidden_size)


def head_dim(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.head_dim,)


def _width(g: Geometry, size: str) -> int:
    return g.hidden_size if size == "hidden" else g.sizes[size]


def matrix(rows: str, cols: str) -> ShapeRule:
    """A `[rows, cols]` weight, each a `Geometry.sizes` key or "hidden"."""
    return lambda g, a: (_width(g, rows), _width(g, cols))


def rows(size: str) -> ShapeRule:
    """A `[sizes[size], hidden]` projection into the layer."""
    return matrix(size, "hidden")


def cols(size: str) -> ShapeRule:
    """A `[hidden, sizes[size]]` projection out of the layer."""
    return matrix("hidden", size)


def gqa_attention(block: str, *, gated_query: bool = False) -> tuple[LayerTensor, ...]:
    """q/k/v/o projections (biases under the `attention_bias` flag) and optional q/k norms."""

    def q_rows(g: Geometry, a: Attention) -> int:
        # Qwen3-Next's gated attention projects query and gate together (`attn_output_gate`).
        return a.heads * a.head_dim * (2 if gated_query and "attn_output_gate" in g.flags else 1)

    return (
        LayerTensor("self_attn.q_proj.weight", lambda g, a: (q_rows(g, a), g.hidden_size), f"{block}self_attn.qkv_proj.weight"),
        LayerTensor("self_attn.k_proj.weight", lambda g, a: (a.kv_groups * a.head_dim, g.hidden_size), f"{block}self_attn.qkv_proj.weight"),
        LayerTensor("self_attn.v_proj.weight", lambda g, a: (a.kv_groups * a.head_dim, g.hidden_size), f"{block}self_attn.qkv_proj.weight"),
        LayerTensor("self_attn.q_proj.bias", lambda g, a: (q_rows(g, a),), f"{block}self_attn.qkv_proj.bias", when="attention_bias"),
        LayerTensor(
            "self_attn.k_proj.bias", lambda g, a: (a.kv_groups * a.head_dim,), f"{block}self_attn.qkv_proj.bias", when="attention_bias"
        ),
        LayerTensor(
            "self_attn.v_proj.bias", lambda g, a: (a.kv_groups * a.head_dim,), f"{block}self_attn.qkv_proj.bias", when="attention_bias"
        ),
        LayerTensor("self_attn.o_proj.weight", lambda g, a: (g.hidden_size, a.heads * a.head_dim), f"{block}self_attn.o_proj.weight"),
        LayerTensor("self_attn.q_norm.weight", head_dim, f"{block}self_attn.q_norm.weight", when="qk_norm"),
        LayerTensor("self_attn.k_norm.weight", head_dim, f"{block}self_attn.k_norm.weight", when="qk_norm"),
    )


def layer_norms(block: str) -> tuple[LayerTensor, ...]:
    return (
        LayerTensor("input_layernorm.weight", hidden, f"{block}input_layernorm.weight"),
        LayerTensor("post_attention_layernorm.weight", hidden, f"{block}post_attention_layernorm.weight"),
    )


def routed_experts(block: str, *, router_bias: bool) -> tuple[LayerTensor, ...]:
    """The router and one gate/up/down triple per routed expert (`Geometry.num_experts`)."""
    router = [LayerTensor("mlp.gate.weight", lambda g, a: (g.num_experts, g.hidden_size), f"{block}mlp.gate.weight")]
    if router_bias:
        router.append(
            LayerTensor("mlp.gate.e_score_correction_bias", lambda g, a: (g.num_experts,), f"{block}mlp.gate.e_score_correction_bias")
        )
    return (
        *router,
        # vLLM 0.33.0 fuses the routed experts into `experts.routed_experts.{w13,w2}_weight`
        # (layers/fused_moe/routed_experts.py:1220-1290).
        LayerTensor(
            "mlp.experts.{expert}.gate_proj.weight", rows("moe_intermediate_size"), f"{block}mlp.experts.routed_experts.w13_weight"
        ),
        LayerTensor("mlp.experts.{expert}.up_proj.weight", rows("moe_intermediate_size"), f"{block}mlp.experts.routed_experts.w13_weight"),
        LayerTensor("mlp.experts.{expert}.down_proj.weight", cols("moe_intermediate_size"), f"{block}mlp.experts.routed_experts.w2_weight"),
    )


def shared_experts(block: str, name: str) -> tuple[LayerTensor, ...]:
    """The always-on shared expert MLP (`mlp.shared_experts` in DeepSeek/GLM, `mlp.shared_expert` in Qwen)."""
    return (
        LayerTensor(f"mlp.{name}.gate_proj.weight", rows("shared_intermediate_size"), f"{block}mlp.{name}.gate_up_proj.weight"),
        LayerTensor(f"mlp.{name}.up_proj.weight", rows("shared_intermediate_size"), f"{block}mlp.{name}.gate_up_proj.weight"),
        LayerTensor(f"mlp.{name}.down_proj.weight", cols("shared_intermediate_size"), f"{block}mlp.{name}.down_proj.weight"),
    )


def nextn_head(*, top_level_fallbacks: bool = False) -> tuple[LayerTensor, ...]:
    """DeepSeek's nextn head: per-layer embedding and output head, the two input norms and the projection.

    The embedding and head are `shared`: vLLM replaces both with the target's after loading
    (`v1/spec_decode/llm_base_proposer.py:1418-1575`). With `top_level_fallbacks` (GLM) a source
    without the per-layer copies supplies the top-level `model.embed_tokens` / `lm_head` instead.
    """
    return (
        LayerTensor(
            "embed_tokens.weight",
            vocab_rows,
            "model.embed_tokens.weight",
            top_level=True,
            shared=True,
            fallback_sources=("model.embed_tokens.weight",) if top_level_fallbacks else (),
        ),
        LayerTensor("enorm.weight", hidden, "enorm.weight"),
        LayerTensor("hnorm.weight", hidden, "hnorm.weight"),
        LayerTensor("eh_proj.weight", concat_proj, "eh_proj.weight"),
        LayerTensor("shared_head.norm.weight", hidden, "shared_head.norm.weight"),
        LayerTensor(
            "shared_head.head.weight",
            vocab_rows,
            "shared_head.head.weight",
            shared=True,
            fallback_sources=("lm_head.weight",) if top_level_fallbacks else (),
        ),
    )


def moe_quant_modules(prefix: str, shared_expert: str) -> tuple[QuantModule, ...]:
    """The routed experts (one FusedMoE module) and the shared expert's two linears, by vLLM module prefix."""
    return (
        QuantModule(f"{prefix}mlp.experts", "experts", ("gate_proj", "up_proj", "down_proj")),
        QuantModule(f"{prefix}mlp.{shared_expert}.gate_up_proj", "linear", ("gate_proj", "up_proj")),
        QuantModule(f"{prefix}mlp.{shared_expert}.down_proj"),
    )


# The nextn layer's ParallelLMHead: SharedHead gets the layer's prefix and names its head
# `<prefix>.head` (deepseek_mtp.py:65-70, 103-105; glm4_moe_mtp.py:69-74, 93-95), so the module is
# `model.layers.L.head`, not `...shared_head.head`. Replaced by the target's head after loading.
NEXTN_HEAD_MODULE = QuantModule("model.layers.{layer}.head", "head", shared=True)


def read_sizes(config: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, int]:
    """`Geometry.sizes` from config fields: {size name: config key}."""
    return {name: require_int(config, key) for name, key in keys.items()}


def _embedding_shape(g: Geometry) -> tuple[int, ...]:
    return (g.vocab_size, g.hidden_size)


# Copies of the embedding and head for families whose MTP uses the target's: vLLM 0.33.0 replaces
# both after loading (llm_base_proposer.py:1418-1575) and its completeness check exempts them
# (model_loader/default_loader.py:509-566), so they ship only with `shared_weights: copy`.
EMBED_AND_HEAD_COPIES = (
    ExtraTensor("model.embed_tokens.weight", _embedding_shape, ("model.embed_tokens.weight",), "model.embed_tokens.weight", shared=True),
    ExtraTensor("lm_head.weight", _embedding_shape, ("lm_head.weight",), "lm_head.weight", shared=True),
)
