"""StepFun Step-3.5 / Step-3.7 Flash: three dense MTP layers stored after the 45 backbone layers.

Facts: shared/facts/step3p7-mtp.md §3-§6 (tensor table, per-layer arrays, `Step3p5MTP.load_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import (
    Attention,
    ExtraTensor,
    Family,
    Geometry,
    LayerTensor,
    config_value,
    require_int,
)

FULL = "full_attention"
SLIDING = "sliding_attention"


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a Step config; nested `text_config` wins over the top level (Step-3.7 is a VLM)."""
    hidden = require_int(config, "hidden_size")
    head_dim = require_int(config, "head_dim")
    attention = {FULL: Attention(require_int(config, "num_attention_heads"), require_int(config, "num_attention_groups"), head_dim)}
    attention.update(other_attention(config, head_dim))
    attention.setdefault(SLIDING, attention[FULL])
    try:
        types_where, layer_types = config_value(config, "layer_types")
    except KeyError:
        layer_types = []
    else:
        if not isinstance(layer_types, list) or not all(isinstance(item, str) for item in layer_types):
            raise ValueError(f"{types_where}: must be a list of strings")
    return Geometry(
        hidden_size=hidden,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, "num_nextn_predict_layers", minimum=0),
        intermediate_size=require_int(config, "intermediate_size"),
        attention=attention,
        layer_types=tuple(layer_types),
    )


def other_attention(config: Mapping[str, Any], head_dim: int | None) -> dict[str, Attention]:
    """`attention_other_setting` as {layer type: attention}, empty when absent; `head_dim` is the
    default for a section without one (Step-3.7), None where the section must give it (Step5)."""
    try:
        where, other = config_value(config, "attention_other_setting")
    except KeyError:
        return {}
    if other is None:
        return {}
    if not isinstance(other, Mapping):
        raise ValueError(f"{where}: must be a mapping")
    return {
        str(other.get("attention_type", SLIDING)): Attention(
            _positive(other, "num_attention_heads", where),
            _positive(other, "num_attention_groups", where),
            _positive(other, "head_dim", where, default=head_dim),
        )
    }


def _positive(mapping: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}.{key}: must be a positive integer, found {value!r}")
    return value


def _q(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.heads * a.head_dim, g.hidden_size)


def _kv(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (a.kv_groups * a.head_dim, g.hidden_size)


def _hidden(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.hidden_size,)


def _mlp_in(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.intermediate_size, g.hidden_size)


# The 17 tensors of one MTP layer, in checkpoint order (facts §4 table).
LAYER_TENSORS = (
    LayerTensor("enorm.weight", _hidden, "enorm.weight"),
    LayerTensor("hnorm.weight", _hidden, "hnorm.weight"),
    LayerTensor("eh_proj.weight", lambda g, a: (g.hidden_size, 2 * g.hidden_size), "eh_proj.weight"),
    LayerTensor("input_layernorm.weight", _hidden, "mtp_block.input_layernorm.weight"),
    LayerTensor("post_attention_layernorm.weight", _hidden, "mtp_block.post_attention_layernorm.weight"),
    LayerTensor("self_attn.q_proj.weight", _q, "mtp_block.self_attn.qkv_proj.weight"),
    LayerTensor("self_attn.k_proj.weight", _kv, "mtp_block.self_attn.qkv_proj.weight"),
    LayerTensor("self_attn.v_proj.weight", _kv, "mtp_block.self_attn.qkv_proj.weight"),
    LayerTensor("self_attn.o_proj.weight", lambda g, a: (g.hidden_size, a.heads * a.head_dim), "mtp_block.self_attn.o_proj.weight"),
    LayerTensor("self_attn.g_proj.weight", lambda g, a: (a.heads, g.hidden_size), "mtp_block.self_attn.g_proj.weight"),
    LayerTensor("self_attn.q_norm.weight", lambda g, a: (a.head_dim,), "mtp_block.self_attn.q_norm.weight"),
    LayerTensor("self_attn.k_norm.weight", lambda g, a: (a.head_dim,), "mtp_block.self_attn.k_norm.weight"),
    LayerTensor("mlp.gate_proj.weight", _mlp_in, "mtp_block.mlp.gate_up_proj.weight"),
    LayerTensor("mlp.up_proj.weight", _mlp_in, "mtp_block.mlp.gate_up_proj.weight"),
    LayerTensor("mlp.down_proj.weight", lambda g, a: (g.hidden_size, g.intermediate_size), "mtp_block.mlp.down_proj.weight"),
    LayerTensor("transformer.shared_head.norm.weight", _hidden, "shared_head.norm.weight"),
    LayerTensor("transformer.shared_head.output.weight", lambda g, a: (g.vocab_size, g.hidden_size), "shared_head.head.weight"),
)

STEP3P7 = Family(
    name="step3p7",
    summary="StepFun Step-3.5/3.7 Flash: 3 MTP layers at 45-47 plus the embedding",
    vllm_class="Step3p5MTP",
    route_model_types=("step3p5", "step3p7"),
    route_architectures=("Step3p5ForCausalLM", "Step3p7ForConditionalGeneration"),
    # ModelOpt exports of the VLM store the backbone under model.language_model.*; the draft uses bare names.
    source_prefixes=("model.layers.{layer}.", "model.language_model.layers.{layer}."),
    output_prefix="model.layers.{layer}.",
    layer_tensors=LAYER_TENSORS,
    extra_tensors=(
        ExtraTensor(
            "model.embed_tokens.weight",
            lambda g: (g.vocab_size, g.hidden_size),
            ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
            "model.embed_tokens.weight",
        ),
    ),
    per_layer_arrays=("layer_types", "rope_theta", "partial_rotary_factors", "swiglu_limits", "swiglu_limits_shared", "use_rope_layers"),
    mtp_layer_type=SLIDING,
    replay=loader_names.step3p5_mtp,
    read_geometry=read_geometry,
    quantization_from="draft",
    shared_weights="copy",
    shared_weights_choices=("copy",),
    vllm_file="step3p5_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:1039-1050: model_type step3p5/step3p7 (or architecture Step3p5ForCausalLM/Step3p7ForConditionalGeneration) routes to Step3p5MTP",
        "vLLM 0.33.0 step3p5_mtp.py:162-171: the module is built from the draft's own config and quantization, so a draft without quantization_config loads BF16",
        "vLLM 0.33.0 step3p5_mtp.py:202-301: keeps model.layers.{45..47}.* and names with embed_tokens; .mtp_block. replaces model.layers.L. (:323-345), so bare layers.L.* and model.language_model.layers.L.* end in KeyError",
        "vLLM 0.33.0 step3p5_mtp.py:302-320: every declared parameter must be loaded (per-layer heads included); the embedding is required by name",
        "vLLM 0.33.0 step3p5_mtp.py:159-160 (has_own_lm_head): the per-layer heads stay; the embedding is replaced by the target's when pipeline parallelism is 1",
        "vLLM 0.33.0 step3p5.py:65-68: _get_layer_type indexes layer_types + mtp_layer_types at layers 45-47, so layer_types needs 48 entries (transformers' Step3p7TextConfig moves the tail into mtp_layer_types); 45 entries give IndexError",
    ),
    card_notes=(
        "Norm weights are zero-centred: vLLM computes `x * (1 + w)`. A consumer that applies a plain RMSNorm must add 1 to these weights, or acceptance falls to zero.",
        "Each MTP layer has its own trained head (`transformer.shared_head.output`). The heads differ from each other and from the target's `lm_head`; never tie or deduplicate them.",
        "vLLM replaces the draft's `embed_tokens` with the target's when it loads the draft; the copy is shipped because the strict loader requires a tensor named `embed_tokens`.",
        "A vLLM build without the `step3p7` speculative-config override fails with `AttributeError: 'Step3p7Config' has no attribute 'num_hidden_layers'`.",
        "A vLLM build that gives the draft the target's NVFP4 quantization fails with a shape mismatch (`2048` vs `4096`); the draft must load unquantized.",
        "Per-layer config arrays must hold 48 entries; a 45-entry array (as in the first NVFP4 export) raises `IndexError` when the drafter is built.",
    ),
)
