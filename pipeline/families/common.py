"""Pieces several families repeat: DeepSeek-style nextn heads, routed and shared experts, loader rules.

DeepSeek-V3/R1 and GLM-4.5+ store their MTP as one more decoder layer with the same six head
tensors and the same vLLM loader shape (facts §9); Qwen3-Next's MTP layer has the same routed
experts. Shapes read `Geometry.sizes`, filled by each family's geometry reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.families.base import Attention, ExtraTensor, Geometry, LayerTensor, LoaderRules, require_int

ShapeRule = Callable[[Geometry, Attention], tuple[int, ...]]

# vLLM fuses every routed expert into two parameters per layer (FusedMoE's expert mapping):
# gate_proj and up_proj into `experts.w13_weight`, down_proj into `experts.w2_weight`.
EXPERT_RENAMES = (
    (r"\.experts\.\d+\.(gate|up)_proj\.weight$", ".experts.w13_weight"),
    (r"\.experts\.\d+\.down_proj\.weight$", ".experts.w2_weight"),
)
QKV_FUSIONS = (("q_proj", "qkv_proj"), ("k_proj", "qkv_proj"), ("v_proj", "qkv_proj"))
GATE_UP_FUSIONS = (("gate_proj", "gate_up_proj"), ("up_proj", "gate_up_proj"))
# Routed experts are fused by the expert mapping, not by the stacked-parameter rules; `mlp.experts.`
# (with the dot) leaves DeepSeek's `mlp.shared_experts.*` to the gate/up fusion.
EXPERT_FUSION_EXEMPT = ("mlp.experts.",)


def hidden(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.hidden_size,)


def vocab_rows(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.vocab_size, g.hidden_size)


def concat_proj(g: Geometry, a: Attention) -> tuple[int, ...]:
    """The MTP input projection over [embedding, hidden] (or [hidden, embedding] in MiMo)."""
    return (g.hidden_size, 2 * g.hidden_size)


def head_dim(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.head_dim,)


def rows(size: str) -> ShapeRule:
    """A `[sizes[size], hidden]` projection into the layer."""
    return lambda g, a: (g.sizes[size], g.hidden_size)


def cols(size: str) -> ShapeRule:
    """A `[hidden, sizes[size]]` projection out of the layer."""
    return lambda g, a: (g.hidden_size, g.sizes[size])


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
        LayerTensor("mlp.experts.{expert}.gate_proj.weight", rows("moe_intermediate_size"), f"{block}mlp.experts.w13_weight"),
        LayerTensor("mlp.experts.{expert}.up_proj.weight", rows("moe_intermediate_size"), f"{block}mlp.experts.w13_weight"),
        LayerTensor("mlp.experts.{expert}.down_proj.weight", cols("moe_intermediate_size"), f"{block}mlp.experts.w2_weight"),
    )


def shared_experts(block: str, name: str) -> tuple[LayerTensor, ...]:
    """The always-on shared expert MLP (`mlp.shared_experts` in DeepSeek/GLM, `mlp.shared_expert` in Qwen)."""
    return (
        LayerTensor(f"mlp.{name}.gate_proj.weight", rows("shared_intermediate_size"), f"{block}mlp.{name}.gate_up_proj.weight"),
        LayerTensor(f"mlp.{name}.up_proj.weight", rows("shared_intermediate_size"), f"{block}mlp.{name}.gate_up_proj.weight"),
        LayerTensor(f"mlp.{name}.down_proj.weight", cols("shared_intermediate_size"), f"{block}mlp.{name}.down_proj.weight"),
    )


# DeepSeek's nextn head: per-layer embedding and output head, the two input norms and the projection.
NEXTN_HEAD = (
    LayerTensor("embed_tokens.weight", vocab_rows, "model.embed_tokens.weight", top_level=True),
    LayerTensor("enorm.weight", hidden, "enorm.weight"),
    LayerTensor("hnorm.weight", hidden, "hnorm.weight"),
    LayerTensor("eh_proj.weight", concat_proj, "eh_proj.weight"),
    LayerTensor("shared_head.norm.weight", hidden, "shared_head.norm.weight"),
    LayerTensor("shared_head.head.weight", vocab_rows, "shared_head.head.weight"),
)


def nextn_loader(fusions: tuple[tuple[str, str], ...]) -> LoaderRules:
    """DeepSeek/GLM MTP loaders: only `model.layers.{num_hidden_layers+i}.` is read (facts §9);
    names other than the nextn head get `.mtp_block.`; the layer's `embed_tokens` becomes the model's."""
    return LoaderRules(
        skip_substrings=("rotary_emb.inv_freq",),
        layer_prefixes=("model.layers.{layer}.",),
        keep_substrings=(),
        block_exempt=("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head"),
        block_infix="mtp_block.",
        fusions=fusions,
        fusion_exempt=EXPERT_FUSION_EXEMPT,
        renames=(),
        embed_marker="embed_tokens",
        embed_param="model.embed_tokens.weight",
        pattern_renames=EXPERT_RENAMES,
    )


def read_sizes(config: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, int]:
    """`Geometry.sizes` from config fields: {size name: config key}."""
    return {name: require_int(config, key) for name, key in keys.items()}


def _embedding_shape(g: Geometry) -> tuple[int, ...]:
    return (g.vocab_size, g.hidden_size)


# Families whose MTP shares the target's embedding and head still ship BF16 copies of both, so a
# strict loader finds every parameter it builds (whether current vLLM still requires them is unverified).
EMBED_AND_HEAD_COPIES = (
    ExtraTensor("model.embed_tokens.weight", _embedding_shape, ("model.embed_tokens.weight",), "model.embed_tokens.weight"),
    ExtraTensor("lm_head.weight", _embedding_shape, ("lm_head.weight",), "lm_head.weight"),
)
