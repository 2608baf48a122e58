"""Qwen4 Exp: an `mtp.*` block like Qwen3.5's, with hyper-connection streams and sparse-attention layers.

Facts: vLLM 0.33.0's `vllm/models/qwen4_exp/` (the CUDA build, `nvidia/mtp.py`, `nvidia/model.py`,
`nvidia/qsa.py`, `nvidia/indexer_qsa.py`, `nvidia/hyperconnection.py`; ROCm's `amd/` has the same
checkpoint names). Where Qwen3.5's block has `fc` over [embedding, hidden] and a final norm, this
one projects the embedding (`fc_embedding`) and each of the `hc_count` hidden streams (`fc_hidden`,
after a norm over all streams) apart, and ends in a hyper-connection mixer. Each MTP layer holds
QSA attention (gated q/k/v, q/k norms and an indexer), Qwen3-Next's MoE block and two gated
hyper-connections. Unlike Qwen3.5, vLLM builds the block with the draft's own quantization config.
No public checkpoint of this family has been read here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from pipeline.families import loader_names
from pipeline.families.base import (
    Attention,
    ExtraTensor,
    Family,
    Geometry,
    LayerTensor,
    Shape,
    config_value,
    field_path,
    optional_flag,
    require_int,
)
from pipeline.families.common import gqa_attention, read_sizes, routed_experts, shared_experts
from pipeline.families.qwen3_5 import EMBED_AND_HEAD_COPIES

QSA = "qwen_sparse_attention"  # the MTP layer's type (nvidia/mtp.py:224-228)
COUNT_KEY = "mtp_num_hidden_layers"
COUNT_DEFAULT = 1  # getattr fallback (nvidia/mtp.py:190): holds only if transformers' Qwen4ExpTextConfig sets no default
SIZE_KEYS = {
    "hc_count": "hc_count",
    "hc_lowrank": "hc_lowrank",
    "index_heads": "indexer_n_heads",
    "index_kv_heads": "indexer_kv_heads",
    "index_head_dim": "indexer_head_dim",
    "moe_intermediate_size": "moe_intermediate_size",
    "shared_intermediate_size": "shared_expert_intermediate_size",
}


def _check_mtp_layers_have_no_ple(config: Mapping[str, Any], num_hidden_layers: int, num_mtp_layers: int) -> None:
    """A layer numbered L gets a PLE block when L + 1 is in `ple_layer_ids` (nvidia/model.py:210-225);
    the MTP layers are numbered after the backbone (nvidia/mtp.py:227) and get no PLE inputs (:343-351),
    so vLLM would fail at the first draft step (`PLE inputs were not prepared`, model.py:304-305)."""
    try:
        where, ids = config_value(config, "ple_layer_ids")
    except KeyError:
        raise ValueError(
            f"{field_path(config, 'ple_layer_ids')}: is required (vLLM 0.33.0 qwen4_exp/nvidia/model.py:210 reads it)"
        ) from None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{where}: must be a list of integers, found {ids!r}")
    clash = sorted(set(ids) & {num_hidden_layers + i + 1 for i in range(num_mtp_layers)})
    if clash:
        raise ValueError(
            f"{where}: names MTP layer {clash[0] - 1}, which vLLM 0.33.0 would build with a PLE block it gives no inputs "
            "(qwen4_exp/nvidia/model.py:210-225, 304-305)"
        )


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a Qwen4 Exp config: the multimodal release's `text_config`, or a text-only one."""
    try:
        config_value(config, "indexer_n_heads")
    except KeyError:
        raise ValueError(
            f"{field_path(config, 'indexer_n_heads')}: is required; without it vLLM 0.33.0 builds Qwen3-Next attention "
            "in the MTP layer (qwen4_exp/nvidia/model.py:235-245), which this family's tensor table does not hold"
        ) from None
    if optional_flag(config, "tie_word_embeddings", False):
        where = config_value(config, "tie_word_embeddings")[0]
        raise ValueError(f"{where}: must be false; a tied lm_head is the embedding (qwen4_exp/nvidia/mtp.py:426-427) and not in this table")
    heads = require_int(config, "num_attention_heads")
    hidden_size = require_int(config, "hidden_size")
    num_hidden_layers = require_int(config, "num_hidden_layers")
    num_mtp_layers = require_int(config, COUNT_KEY, default=COUNT_DEFAULT)
    _check_mtp_layers_have_no_ple(config, num_hidden_layers, num_mtp_layers)
    sizes = read_sizes(config, SIZE_KEYS)
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=num_hidden_layers,
        num_mtp_layers=num_mtp_layers,
        intermediate_size=sizes["moe_intermediate_size"],
        attention={
            QSA: Attention(heads, require_int(config, "num_key_value_heads"), require_int(config, "head_dim", default=hidden_size // heads))
        },
        layer_types=(),
        first_mtp_layer=0,
        num_experts=require_int(config, "num_experts"),
        sizes=sizes,
        # QSA always packs the output gate beside q and has no q/k/v bias (nvidia/qsa.py:409-420).
        flags=frozenset({"qk_norm", "attn_output_gate"}),
    )


def _streams(g: Geometry) -> int:
    return g.sizes["hc_count"] * g.hidden_size


def _hyper_connection(name: str) -> tuple[LayerTensor, ...]:
    """A GatedResidual (nvidia/hyperconnection.py:70-135, hc_per_branch_norm): a norm over all streams, the
    low-rank down projection and the injection fused into one linear (model.py:155-167), the up projection."""
    merged = f"{name}.input_mix_weight_down_block_inject.weight"
    return (
        LayerTensor(f"{name}.hc_norm.weight", lambda g, a: (_streams(g),), f"{name}.hc_norm.weight"),
        LayerTensor(f"{name}.input_mix_weight_down.weight", lambda g, a: (g.sizes["hc_lowrank"], _streams(g)), merged),
        LayerTensor(f"{name}.block_inject_weight.weight", lambda g, a: (g.sizes["hc_count"], _streams(g)), merged),
        LayerTensor(
            f"{name}.input_mix_weight_up.weight", lambda g, a: (_streams(g), g.sizes["hc_lowrank"]), f"{name}.input_mix_weight_up.weight"
        ),
    )


def _index_qk(g: Geometry, a: Attention) -> tuple[int, ...]:
    return ((g.sizes["index_heads"] + g.sizes["index_kv_heads"]) * g.sizes["index_head_dim"], g.hidden_size)  # indexer_qsa.py:132-138


def _index_width(g: Geometry, a: Attention) -> tuple[int, ...]:
    return (g.sizes["index_head_dim"],)


QKV = "self_attn.qkv_proj.weight"
LAYER_TENSORS = (
    *gqa_attention("", gated_query=True),
    # On CUDA without LoRA the indexer's projection is the fourth shard of qkv_proj (nvidia/qsa.py:508-516, 539-547).
    LayerTensor("self_attn.indexer.index_qk_proj.weight", _index_qk, QKV),
    LayerTensor("self_attn.indexer.q_layernorm.weight", _index_width, "self_attn.indexer.q_layernorm.weight"),
    LayerTensor("self_attn.indexer.k_layernorm.weight", _index_width, "self_attn.indexer.k_layernorm.weight"),
    *routed_experts("", router_bias=False),
    *shared_experts("", "shared_expert"),
    LayerTensor("mlp.shared_expert_gate.weight", lambda g, a: (1, g.hidden_size), "mlp.shared_expert_gate.weight"),
    *_hyper_connection("attn_hyper_connection"),
    *_hyper_connection("mlp_hyper_connection"),
)


def _block(name: str, shape: Callable[[Geometry], Shape]) -> ExtraTensor:
    """A tensor of the MTP block outside its layers; the loader reads `mtp.X` into `model.X` (nvidia/mtp.py:119-120)."""
    return ExtraTensor(f"mtp.{name}", shape, (f"mtp.{name}",), f"model.{name}")


BLOCK_TENSORS = (
    _block("fc_embedding.weight", lambda g: (g.hidden_size, g.hidden_size)),
    _block("fc_hidden.weight", lambda g: (g.hidden_size, g.hidden_size)),
    _block("pre_fc_norm_embedding.weight", lambda g: (g.hidden_size,)),
    _block("pre_fc_norm_hidden.weight", lambda g: (_streams(g),)),
    # The final mixer has no injection: its `block_inject_weight` is dropped by name (nvidia/mtp.py:390-392, 477-479).
    _block("hyper_connection_mixer.hc_norm.weight", lambda g: (_streams(g),)),
    _block("hyper_connection_mixer.input_mix_weight_down.weight", lambda g: (g.sizes["hc_lowrank"], _streams(g))),
    _block("hyper_connection_mixer.input_mix_weight_up.weight", lambda g: (_streams(g), g.sizes["hc_lowrank"])),
)

# The predictor's stacked renames beyond Qwen3-Next's (model.py:155-167 via nvidia/mtp.py:173), then the
# QSA attention's own (nvidia/qsa.py:539-547).
HC_STACKED = (
    ("hyper_connection.input_mix_weight_down.weight", "hyper_connection.input_mix_weight_down_block_inject.weight"),
    ("hyper_connection.block_inject_weight.weight", "hyper_connection.input_mix_weight_down_block_inject.weight"),
)
INDEXER_PROJ = "indexer.index_qk_proj."
INDEXER_FUSED_INTO = "qkv_proj."
MIXER_INJECTION = "hyper_connection_mixer.block_inject_weight"
# AutoWeightsLoader's ignore_unexpected_suffixes (model.py:142-151, utils.py:458); under the QSA attention,
# whose own loader is plain, only `.bias` (nvidia/qsa.py:547).
IGNORED_SUFFIXES = (".bias", "_bias", ".k_scale", "_k_scale", ".v_scale", "_v_scale", "_weight_scale", "_input_scale")


def _checkpoint_name(name: str) -> str | None:
    """`_remap_mtp_weight_name` (nvidia/mtp.py:97-123): None for names outside the draft."""
    for prefix in ("model.language_model.", "language_model."):
        if name.startswith(prefix):
            name = name.removeprefix(prefix)
            break
    if name.startswith("embed_tokens."):
        name = f"model.{name}"
    if name.startswith("model.mtp."):
        name = name.removeprefix("model.")
    for head in ("mtp.shared_head.head.", "model.shared_head.head.", "shared_head.head."):
        if name.startswith(head):
            return name.replace(head, "lm_head.", 1)
    if name.startswith("model.lm_head."):
        return name.removeprefix("model.")
    if name.startswith("mtp."):
        return name.replace("mtp.", "model.", 1)
    if name.startswith(("model.embed_tokens.", "lm_head.")):
        return name
    return None


def _ignored(name: str, params: Collection[str]) -> bool:
    """AutoWeightsLoader skips a missing parameter (not a missing module) whose name ends in an ignored suffix (utils.py:430-436)."""
    module = name.rsplit(".", 1)[0] + "."
    suffixes = (".bias",) if ".self_attn." in name else IGNORED_SUFFIXES
    return name.endswith(suffixes) and any(param.startswith(module) for param in params)


def qwen4_exp_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`Qwen4ExpMTP.load_weights` (nvidia/mtp.py:470-484) and the predictor's (:382-397): names outside
    the draft and the mixer's injection are skipped; below `model.` Qwen3-Next's stacked renames, the
    hyper-connection and indexer fusions and FusedMoE's expert mapping apply."""
    mapped = _checkpoint_name(name)
    if mapped is None or MIXER_INJECTION in mapped:
        return None
    name = mapped
    if name.startswith("model."):
        name = loader_names.qwen_predictor(name, geometry)
        for old, new in HC_STACKED:
            if old in name:
                name = name.replace(old, new, 1)
        if ".self_attn." + INDEXER_PROJ in name:
            name = name.replace(INDEXER_PROJ, INDEXER_FUSED_INTO, 1)
    if name not in params and _ignored(name, params):
        return None
    return name


FACTS = (
    "vLLM 0.33.0 config/speculative.py:915-935: model_type qwen4_exp or qwen4_exp_text routes to Qwen4ExpMTP; n_predict is text_config.mtp_num_hidden_layers, else num_nextn_predict_layers; hc_mult is hc_count",
    "vLLM 0.33.0 vllm/models/qwen4_exp/__init__.py:22-50: CUDA loads nvidia/mtp.py, ROCm amd/mtp.py, whose load_weights and parameter names are the same but for the indexer (amd/qsa.py keeps indexer.index_qk_proj apart, nvidia/qsa.py:508-516 fuses it into qkv_proj); XPU and TPU are refused",
    "vLLM 0.33.0 vllm/models/qwen4_exp/nvidia/mtp.py:172-259: the predictor reads the target's text config; mtp_num_hidden_layers defaults to 1; embed_tokens, fc_embedding and fc_hidden (hidden x hidden), layers mtp.layers.{0..n-1} of type qwen_sparse_attention, pre_fc_norm_embedding (hidden), pre_fc_norm_hidden (hc_count x hidden), hyper_connection_mixer without injection; no final norm",
    "vLLM 0.33.0 qwen4_exp/nvidia/model.py:191-279: each MTP layer holds self_attn (QSA when indexer_n_heads is set, :235-254), mlp (Qwen3-Next's sparse MoE block, qwen3_next.py:150-215) and attn_/mlp_hyper_connection (GatedResidual, nvidia/hyperconnection.py:70-135); PLE only for layers whose number + 1 is in ple_layer_ids (:209-225)",
    "vLLM 0.33.0 qwen4_exp/nvidia/qsa.py:409-437: qkv_proj with the output gate always packed beside q, no bias; o_proj; q_norm, k_norm; indexer_qsa.py:132-146: index_qk_proj ((indexer_n_heads + indexer_kv_heads) x indexer_head_dim rows), q_layernorm, k_layernorm",
    "vLLM 0.33.0 qwen4_exp/nvidia/mtp.py:97-123, 470-484 and :382-397: language_model. is stripped, mtp.* becomes model.*, shared_head.head becomes lm_head, names outside the draft are skipped, hyper_connection_mixer.block_inject_weight is dropped; the predictor maps with Qwen3_5Model.hf_to_vllm_mapper (qwen3_5.py:226-233 over qwen3_next.py:634-645) and model.py:155-167 (input_mix_weight_down and block_inject_weight into input_mix_weight_down_block_inject); AutoWeightsLoader raises ValueError for a name it cannot place (utils.py:442-448) except the suffixes of model.py:142-151",
    "vLLM 0.33.0 qwen4_exp/nvidia/mtp.py:126-169, 196-230: the MTP linears take the draft's own quantization config (get_draft_quant_config, utils.py:985-1007), None for a draft without quantization_config; the hyper-connection linears and the router never take one",
    "vLLM 0.33.0 llm_base_proposer.py:1418-1575: embed_tokens and lm_head are replaced by the target's",
    "unverified: checkpoint layout unverified (no public checkpoint read); Qwen4ExpTextConfig comes from transformers, not the wheel, so no config default is assumed but vLLM's own: mtp_num_hidden_layers falls back to 1 (nvidia/mtp.py:190) only if transformers' Qwen4ExpTextConfig has no default of its own; hc_count, hc_lowrank, the indexer widths and ple_layer_ids are required; mtp_use_dedicated_embeddings is read nowhere in the wheel",
)
CARD_NOTES = (
    "vLLM assumes one MTP layer when the config has no `mtp_num_hidden_layers`; set `num_speculative_tokens` explicitly.",
    "vLLM builds this MTP with the draft's own quantization config: this draft has none, so the MTP loads in BF16 whatever the target's exclude list says.",
    "vLLM feeds this MTP the target's `hc_count` hidden streams; it runs on CUDA or ROCm only.",
    "The checkpoint layout of this family has not been checked against a public checkpoint.",
)

QWEN4_EXP = Family(
    name="qwen4_exp",
    summary="Qwen4 Exp: the mtp.* block (fc_embedding, fc_hidden, norms, hyper-connection mixer, sparse-attention MoE layers counted by mtp_num_hidden_layers); embed_tokens and lm_head are optional copies",
    vllm_class="Qwen4ExpMTP",
    route_model_types=("qwen4_exp", "qwen4_exp_text"),
    route_architectures=(),
    source_prefixes=("mtp.layers.{layer}.",),
    output_prefix="mtp.layers.{layer}.",
    layer_tensors=LAYER_TENSORS,
    extra_tensors=EMBED_AND_HEAD_COPIES,
    per_layer_arrays=(),
    mtp_layer_type=QSA,
    replay=qwen4_exp_mtp,
    read_geometry=read_geometry,
    block_tensors=BLOCK_TENSORS,
    block_prefix="mtp.",
    param_prefix="model.layers.{layer}.",
    count_key=COUNT_KEY,
    count_default=COUNT_DEFAULT,
    quantization_from="draft",
    unknown_name_error="ValueError",
    skipped_names=(f"mtp.{MIXER_INJECTION}.weight",),
    vllm_file="vllm/models/qwen4_exp/nvidia/mtp.py",
    facts=FACTS,
    card_notes=CARD_NOTES,
)
