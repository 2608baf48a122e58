"""Qwen3-Next: one MTP block under `mtp.` (fc, two pre-fc norms, a final norm) and `mtp.layers.{i}.`.

Facts: shared/facts/vllm-loaders.md §1-§2, re-read in vLLM 0.33.0's `qwen3_next_mtp.py`.
`Qwen3NextMTP` renames `mtp.` to `model.` and reads the embedding and `lm_head` by name; vLLM
replaces both with the target's, so copies ship only with `shared_weights: copy`. The MTP layers
count from 0, and vLLM assumes one layer when the config lacks `num_nextn_predict_layers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import Attention, ExtraTensor, Family, Geometry, LayerTensor, QuantModule, optional_flag, require_int
from pipeline.families.common import (
    EMBED_AND_HEAD_COPIES,
    gqa_attention,
    layer_norms,
    moe_quant_modules,
    routed_experts,
    shared_experts,
)

FULL = "full_attention"
COUNT_KEY = "num_nextn_predict_layers"
COUNT_DEFAULT = 1  # vLLM's hf_config_override default (facts §9)


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a flat Qwen3-Next config; the MTP layer is full attention with a gated query."""
    heads = require_int(config, "num_attention_heads")
    hidden_size = require_int(config, "hidden_size")
    flags = {"qk_norm"} | ({"attn_output_gate"} if optional_flag(config, "attn_output_gate", True) else set())
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=require_int(config, "num_hidden_layers"),
        num_mtp_layers=require_int(config, COUNT_KEY, default=COUNT_DEFAULT),
        intermediate_size=require_int(config, "intermediate_size"),
        attention={
            FULL: Attention(
                heads, require_int(config, "num_key_value_heads"), require_int(config, "head_dim", default=hidden_size // heads)
            )
        },
        layer_types=(),
        first_mtp_layer=0,
        num_experts=require_int(config, "num_experts"),
        sizes={
            "moe_intermediate_size": require_int(config, "moe_intermediate_size"),
            "shared_intermediate_size": require_int(config, "shared_expert_intermediate_size"),
        },
        flags=frozenset(flags),
    )


def _block(name: str, shape: Callable[[Geometry], tuple[int, ...]]) -> ExtraTensor:
    """A tensor of the MTP block outside its layers; the loader reads `mtp.X` into `model.X`."""
    return ExtraTensor(f"mtp.{name}", shape, (f"mtp.{name}",), f"model.{name}")


def _width(g: Geometry) -> tuple[int, ...]:
    return (g.hidden_size,)


def _fc(g: Geometry) -> tuple[int, ...]:
    return (g.hidden_size, 2 * g.hidden_size)  # over [embedding, hidden]


# vLLM module prefixes: the predictor is built under `mtp` (qwen3_next_mtp.py:194-196). `fc` is
# forced unquantized under modelopt_fp4 (:70-87); lm_head has no quant_config (:198-202); the
# router and shared-expert gate are built unquantized (qwen3_next.py:191-203).
LAYER = "mtp.layers.{layer}."
QUANT_MODULES = (
    QuantModule(f"{LAYER}self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj")),
    QuantModule(f"{LAYER}self_attn.o_proj"),
    *moe_quant_modules(LAYER, "shared_expert"),
    QuantModule("mtp.fc", unquantized_under=("modelopt_fp4",)),
)

QWEN3_NEXT = Family(
    name="qwen3_next",
    summary="Qwen3-Next: the mtp.* block (fc, norms, 1 MoE layer); embed_tokens and lm_head are optional copies",
    vllm_class="Qwen3NextMTP",
    route_model_types=("qwen3_next",),
    route_architectures=(),
    source_prefixes=("mtp.layers.{layer}.",),
    output_prefix="mtp.layers.{layer}.",
    layer_tensors=(
        *layer_norms(""),
        *gqa_attention("", gated_query=True),
        *routed_experts("", router_bias=False),
        *shared_experts("", "shared_expert"),
        LayerTensor("mlp.shared_expert_gate.weight", lambda g, a: (1, g.hidden_size), "mlp.shared_expert_gate.weight"),
    ),
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=loader_names.qwen3_next_mtp,
    read_geometry=read_geometry,
    block_tensors=(
        _block("fc.weight", _fc),
        _block("pre_fc_norm_embedding.weight", _width),
        _block("pre_fc_norm_hidden.weight", _width),
        _block("norm.weight", _width),
    ),
    block_prefix="mtp.",
    param_prefix="model.layers.{layer}.",
    count_key=COUNT_KEY,
    count_default=COUNT_DEFAULT,
    quant_modules=QUANT_MODULES,
    unknown_name_error="ValueError",
    vllm_file="qwen3_next_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:908-913: model_type qwen3_next routes to Qwen3NextMTP",
        "vLLM 0.33.0 qwen3_next_mtp.py:63: num_nextn_predict_layers defaults to 1",
        "unverified: the released config lacks num_nextn_predict_layers, so one MTP layer is assumed",
        "vLLM 0.33.0 qwen3_next_mtp.py:230-245: keeps mtp.* and names with embed_tokens or lm_head, renames mtp. to model.; qwen3_next.py:634-645 fuses q/k/v and gate/up; routed experts load into experts.routed_experts.{w13,w2}_weight",
        "vLLM 0.33.0 qwen3_next_mtp.py:89-96: the MTP layers are mtp.layers.{0..n-1} under one shared fc and norms, full attention",
        "vLLM 0.33.0 qwen3_next_mtp.py:70-87: mtp.fc is forced unquantized under modelopt_fp4; every other MTP linear takes the target's quant_config",
        "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and lm_head are replaced by the target's",
        "vLLM 0.33.0 qwen3_next.py:314-324: q_proj projects query and gate together (2 x heads x head_dim rows) when attn_output_gate is true, its default",
    ),
    card_notes=(
        "vLLM assumes one MTP layer when the config has no `num_nextn_predict_layers`; set `num_speculative_tokens` explicitly.",
        "vLLM builds the `mtp.*` block with the target's quantization config: it loads in BF16 only if the target's exclude list covers `mtp.*` (`mtp.fc` is forced unquantized under `modelopt_fp4`).",
    ),
)
