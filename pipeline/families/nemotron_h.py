"""Nemotron-H (`nemotron_h`): one MTP step of layers `mtp.layers.{i}.*` that follow their own pattern.

Facts: vLLM 0.33.0's `nemotron_h_mtp.py` and `nemotron_h.py`, and transformers 5.20.2's
`NemotronHConfig` (which vLLM 0.33.0 imports). The MTP is one step (`num_nextn_predict_layers` must
be 1) made of one layer per character of the MTP pattern, `*E` by default: an attention layer and
an MoE layer, numbered from 0 under `mtp.layers.`. The step's first layer also holds the input
norms and projection (`enorm`, `hnorm`, `eh_proj`), its last the `final_layernorm`. The module has
no embedding or head of its own: vLLM always uses the target's. It is built with the draft's own
quantization config, so a draft without `quantization_config` loads unquantized. The loader drops
every name it has no parameter for without a word; `verify` replays it and refuses such names.
No public checkpoint of this family has been read here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from pipeline.families.base import Attention, Family, Geometry, LayerTensor, config_value, optional_flag, require_int
from pipeline.families.common import cols, concat_proj, hidden, matrix, rows
from pipeline.families.loader_names import expert_param

FULL = "full_attention"
MOE = "moe"
# NemotronHConfig._pattern_to_list (configuration_nemotron_h.py:268-271); the legacy names are
# remapped by remap_legacy_layer_types (configuration_utils.py:94-125).
PATTERN_TYPES = {"M": "linear_attention", "E": MOE, "*": FULL, "-": "mlp"}
LEGACY_TYPES = {"mamba": "linear_attention", "attention": FULL}
DEFAULT_MTP_TYPES = (FULL, MOE)  # configuration_nemotron_h.py:180-181
# NemotronHMultiTokenPredictor builds only attention ('*') and MoE ('E') layers (nemotron_h_mtp.py:285-292).
MTP_BUILDS = (FULL, MOE)
# NemotronHConfig.attribute_map (configuration_nemotron_h.py:84): alias -> field.
ATTRIBUTE_MAP = {"layer_types": "layers_block_type", "num_local_experts": "n_routed_experts"}
DEFAULT_HEAD_DIM = 128  # configuration_nemotron_h.py:98, what vLLM reads when config.json has no head_dim


def _listed(config: Mapping[str, Any], key: str) -> tuple[str, tuple[str, ...]] | None:
    """A layer-type list (legacy names remapped), or None when the config has none."""
    try:
        where, value = config_value(config, key)
    except KeyError:
        return None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: must be a list of strings")
    return where, tuple(LEGACY_TYPES.get(item, item) for item in map(str, value))


def _pattern(config: Mapping[str, Any], key: str) -> tuple[str, tuple[str, ...]] | None:
    """A legacy pattern string (`M*E-`) as layer types, or None when the config has none."""
    try:
        where, pattern = config_value(config, key)
    except KeyError:
        return None
    if not isinstance(pattern, str) or not pattern or any(char not in PATTERN_TYPES for char in pattern):
        raise ValueError(f"{where}: must be a string of {', '.join(PATTERN_TYPES)}, found {pattern!r}")
    return where, tuple(PATTERN_TYPES[char] for char in pattern)


def mtp_layer_types(config: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(field, types) of the MTP step's layers as NemotronHConfig.__post_init__ settles them: the
    list, unless it is the default and a legacy pattern is given (configuration_nemotron_h.py:180-188)."""
    listed = _listed(config, "mtp_layers_block_type")
    if listed is not None and listed[1] != DEFAULT_MTP_TYPES:
        return listed
    return _pattern(config, "mtp_hybrid_override_pattern") or listed or ("mtp_layers_block_type", DEFAULT_MTP_TYPES)


def read_geometry(config: Mapping[str, Any]) -> Geometry:
    """Geometry from a Nemotron-H config. `num_mtp_layers` counts the MTP step's layers and
    `layer_types` holds their types, indexed from 0 like the layers themselves."""
    steps = require_int(config, "num_nextn_predict_layers")
    if steps != 1:
        where = config_value(config, "num_nextn_predict_layers")[0]
        raise ValueError(f"{where}: vLLM 0.33.0 NemotronHMTP supports exactly 1 MTP step (nemotron_h_mtp.py:246-249), found {steps}")
    where, types = mtp_layer_types(config)
    if not types:
        raise ValueError(f"{where}: must name at least one MTP layer (vLLM 0.33.0 nemotron_h_mtp.py:251-253)")
    unbuilt = next((kind for kind in types if kind not in MTP_BUILDS), None)
    if unbuilt is not None:
        raise ValueError(f"{where}: vLLM 0.33.0 builds only attention and MoE MTP layers (nemotron_h_mtp.py:285-292), found {unbuilt}")
    # num_hidden_layers is the backbone list's length (configuration_nemotron_h.py:158-176, 228-234).
    backbone = _listed(config, _named(config, "layers_block_type")) or _pattern(config, "hybrid_override_pattern")
    hidden_size, heads = require_int(config, "hidden_size"), require_int(config, "num_attention_heads")
    sizes, flags = _moe_sizes(config, hidden_size) if MOE in types else ({}, set())
    return Geometry(
        hidden_size=hidden_size,
        vocab_size=require_int(config, "vocab_size"),
        num_hidden_layers=len(backbone[1]) if backbone else require_int(config, "num_hidden_layers"),
        num_mtp_layers=len(types),
        intermediate_size=sizes.get("moe_intermediate_size", 0),
        attention={FULL: Attention(heads, _kv_heads(config, heads), _head_dim(config, hidden_size, heads))},
        layer_types=types,
        first_mtp_layer=0,
        num_experts=require_int(config, _named(config, "n_routed_experts")) if MOE in types else 0,
        sizes=sizes,
        flags=frozenset(flags),
    )


def _named(config: Mapping[str, Any], field: str) -> str:
    """The key NemotronHConfig takes `field` from: its attribute_map alias (`layer_types`,
    `num_local_experts`; configuration_nemotron_h.py:84) when present, since the config sets the
    alias after the fields (configuration_utils.py:496-501) and so overrides them."""
    alias = next(alias for alias, target in ATTRIBUTE_MAP.items() if target == field)
    return alias if _declared(config, alias, None) is not None else field


def _kv_heads(config: Mapping[str, Any], heads: int) -> int:
    """num_key_value_heads; null means num_attention_heads (configuration_nemotron_h.py:191-192)."""
    if _declared(config, "num_key_value_heads", 0) is None:
        return heads
    return require_int(config, "num_key_value_heads")


def _head_dim(config: Mapping[str, Any], hidden_size: int, heads: int) -> int:
    """head_dim as NemotronHAttention reads it (nemotron_h.py:452-455): null means hidden / heads."""
    if _declared(config, "head_dim", DEFAULT_HEAD_DIM) is None:
        return hidden_size // heads
    return require_int(config, "head_dim", default=DEFAULT_HEAD_DIM)


def _declared(config: Mapping[str, Any], key: str, absent: Any) -> Any:
    try:
        return config_value(config, key)[1]
    except KeyError:
        return absent


def _moe_sizes(config: Mapping[str, Any], hidden_size: int) -> tuple[dict[str, int], set[str]]:
    """The MoE layer's widths (nemotron_h.py:150-253): experts act on the latent size when set."""
    sizes = {"moe_intermediate_size": require_int(config, "moe_intermediate_size"), "moe_hidden": hidden_size}
    flags = set()
    if _declared(config, "moe_latent_size", None) is not None:
        sizes["moe_hidden"] = sizes["latent"] = require_int(config, "moe_latent_size")
        flags.add("latent_moe")
        if optional_flag(config, "mlp_bias", False):
            flags.add("latent_bias")
    # Absent: transformers' default 1 (configuration_nemotron_h.py:124); null or 0: none (nemotron_h.py:178-179).
    shared = 0 if _declared(config, "n_shared_experts", 1) is None else require_int(config, "n_shared_experts", minimum=0, default=1)
    if shared:
        sizes["shared_intermediate_size"] = require_int(config, "moe_shared_expert_intermediate_size") * shared
        flags.add("shared_experts")
    return sizes, flags


def _of_type(kind: str) -> Callable[[Geometry, int], bool]:
    return lambda g, layer: g.layer_types[layer - g.mtp_layers.start] == kind


def _first(g: Geometry, layer: int) -> bool:
    return layer == g.mtp_layers.start  # has_start_projections (nemotron_h_mtp.py:267, 281)


def _last(g: Geometry, layer: int) -> bool:
    return layer == g.mtp_layers.stop - 1  # has_end_norm (nemotron_h_mtp.py:268, 282)


ATTENTION, MIXTURE = _of_type(FULL), _of_type(MOE)
QKV = "mixer.qkv_proj.weight"
LAYER_TENSORS = (
    LayerTensor("enorm.weight", hidden, "enorm.weight", in_layer=_first),
    LayerTensor("hnorm.weight", hidden, "hnorm.weight", in_layer=_first),
    LayerTensor("eh_proj.weight", concat_proj, "eh_proj.weight", in_layer=_first),
    LayerTensor("norm.weight", hidden, "norm.weight"),
    # NemotronHAttention (nemotron_h.py:460-475): no biases whatever attention_bias says.
    LayerTensor("mixer.q_proj.weight", lambda g, a: (a.heads * a.head_dim, g.hidden_size), QKV, in_layer=ATTENTION),
    LayerTensor("mixer.k_proj.weight", lambda g, a: (a.kv_groups * a.head_dim, g.hidden_size), QKV, in_layer=ATTENTION),
    LayerTensor("mixer.v_proj.weight", lambda g, a: (a.kv_groups * a.head_dim, g.hidden_size), QKV, in_layer=ATTENTION),
    LayerTensor("mixer.o_proj.weight", lambda g, a: (g.hidden_size, a.heads * a.head_dim), "mixer.o_proj.weight", in_layer=ATTENTION),
    # NemotronHMoE (nemotron_h.py:159-253): an unquantized router with its correction bias, an optional
    # latent projection around the routed experts, non-gated experts (up and down only), a shared expert.
    LayerTensor("mixer.gate.weight", lambda g, a: (g.num_experts, g.hidden_size), "mixer.gate.weight", in_layer=MIXTURE),
    LayerTensor(
        "mixer.gate.e_score_correction_bias", lambda g, a: (g.num_experts,), "mixer.gate.e_score_correction_bias", in_layer=MIXTURE
    ),
    LayerTensor("mixer.fc1_latent_proj.weight", rows("latent"), "mixer.fc1_latent_proj.weight", when="latent_moe", in_layer=MIXTURE),
    LayerTensor(
        "mixer.fc1_latent_proj.bias", lambda g, a: (g.sizes["latent"],), "mixer.fc1_latent_proj.bias", when="latent_bias", in_layer=MIXTURE
    ),
    LayerTensor("mixer.fc2_latent_proj.weight", cols("latent"), "mixer.fc2_latent_proj.weight", when="latent_moe", in_layer=MIXTURE),
    LayerTensor("mixer.fc2_latent_proj.bias", hidden, "mixer.fc2_latent_proj.bias", when="latent_bias", in_layer=MIXTURE),
    LayerTensor(
        "mixer.experts.{expert}.up_proj.weight",
        matrix("moe_intermediate_size", "moe_hidden"),
        "mixer.experts.routed_experts.w13_weight",
        in_layer=MIXTURE,
    ),
    LayerTensor(
        "mixer.experts.{expert}.down_proj.weight",
        matrix("moe_hidden", "moe_intermediate_size"),
        "mixer.experts.routed_experts.w2_weight",
        in_layer=MIXTURE,
    ),
    LayerTensor(
        "mixer.shared_experts.up_proj.weight",
        rows("shared_intermediate_size"),
        "mixer.shared_experts.up_proj.weight",
        when="shared_experts",
        in_layer=MIXTURE,
    ),
    LayerTensor(
        "mixer.shared_experts.down_proj.weight",
        cols("shared_intermediate_size"),
        "mixer.shared_experts.down_proj.weight",
        when="shared_experts",
        in_layer=MIXTURE,
    ),
    LayerTensor("final_layernorm.weight", hidden, "final_layernorm.weight", in_layer=_last),
)

# (checkpoint part, fused parameter part): the non-gated expert mapping (nemotron_h_mtp.py:435-447,
# layers/fused_moe/routed_experts.py:1130-1291 with ckpt_gate_proj_name="up_proj", no up shard).
EXPERT_PARTS = (("up_proj", "w13"), ("down_proj", "w2"))
STACKED = (("qkv_proj", "q_proj"), ("qkv_proj", "k_proj"), ("qkv_proj", "v_proj"))  # nemotron_h_mtp.py:428-433


def nemotron_h_mtp(name: str, geometry: Geometry, params: Collection[str]) -> str | None:
    """`NemotronHMTP.load_weights` (nemotron_h_mtp.py:426-544). Every branch skips a name it has no
    parameter for instead of raising, so None here is a tensor vLLM drops without a word."""
    name = name.removeprefix("language_model.")  # :455, the multimodal release's nesting
    if not name.startswith("mtp.") or "rotary_emb.inv_freq" in name:
        return None  # is_unused_checkpoint_weight (:419-424): embedding and head are the target's
    name = name.replace("mtp.layers.", "model.layers.")
    if ("scale" in name or "zero_point" in name) and name not in params:
        # :464-468: maybe_remap_kv_scale_name only renames k/v scales into `.attn.` buffers, which
        # an unquantized module does not declare; what stays unmatched is skipped at :535-536.
        return None
    for param, part in STACKED:
        if part in name and ".mixer." in name:
            stacked = name.replace(part, param)
            return stacked if stacked in params else None  # :471-497
    expert = expert_param(name, geometry, EXPERT_PARTS)
    if expert is not None:
        return expert if expert in params else None  # :499-530
    return name if name in params else None  # :532-542


NEMOTRON_H = Family(
    name="nemotron_h",
    summary="Nemotron-H: one MTP step, mtp.layers.{i}.* after the MTP pattern (attention then MoE by default); no embedding or head",
    vllm_class="NemotronHMTP",
    route_model_types=("nemotron_h",),
    route_architectures=(),
    source_prefixes=("mtp.layers.{layer}.",),
    output_prefix="mtp.layers.{layer}.",
    layer_tensors=LAYER_TENSORS,
    extra_tensors=(),
    per_layer_arrays=(),
    mtp_layer_type=FULL,
    replay=nemotron_h_mtp,
    read_geometry=read_geometry,
    param_prefix="model.layers.{layer}.",
    count_key="num_nextn_predict_layers",
    quantization_from="draft",
    shared_weights="omit",
    shared_weights_choices=("omit",),
    vllm_file="nemotron_h_mtp.py",
    facts=(
        "vLLM 0.33.0 config/speculative.py:894-906: model_type nemotron_h (or nemotron_h_puzzle, not covered here) with num_nextn_predict_layers > 0 becomes nemotron_h_mtp, which routes to NemotronHMTP (architecture NemotronHMTPModel), n_predict = num_nextn_predict_layers",
        "vLLM 0.33.0 transformers_utils/config.py:122-177, 425-450 and transformers 5.20.2 models/auto/auto_mappings.py:472: no config class is registered for model_type nemotron_h_mtp, so a config file of that type loads only as remote code, which a draft does not ship; it is not a route here",
        "vLLM 0.33.0 nemotron_h_mtp.py:237-253: the module reads the draft's own text config; num_nextn_predict_layers must be 1 (assert); the layers follow config.mtp_hybrid_override_pattern",
        "transformers 5.20.2 configuration_nemotron_h.py:180-188, 253-271: the MTP pattern comes from mtp_layers_block_type (default full_attention, moe, i.e. '*E'); a legacy mtp_hybrid_override_pattern counts only while that list is the default; :84 and configuration_utils.py:496-501: the aliases layer_types and num_local_experts set layers_block_type and n_routed_experts after the fields, so they win",
        "vLLM 0.33.0 nemotron_h_mtp.py:257-292: one layer per pattern character under mtp.layers.{i}, '*' attention and 'E' MoE (anything else raises NotImplementedError); the first has enorm, hnorm and eh_proj (:70-85), the last final_layernorm (:87-91)",
        "vLLM 0.33.0 nemotron_h.py:135-275, 426-545: attention is q/k/v fused into qkv_proj and o_proj, without biases; the MoE layer has an unquantized GateLinear router with e_score_correction_bias, non-gated experts (up_proj, down_proj), an optional shared expert and, with moe_latent_size, fc1/fc2 latent projections",
        "vLLM 0.33.0 nemotron_h_mtp.py:426-544: language_model. is removed, names outside mtp. are skipped (:419-424), mtp.layers. becomes model.layers., q/k/v under .mixer. fuse into qkv_proj, experts.{e}.up_proj/down_proj load into experts.routed_experts.{w13,w2}_weight; every name without a parameter is skipped silently, never a KeyError",
        "vLLM 0.33.0 nemotron_h_mtp.py:238-239, 366-370, 380-384 and models/utils.py:985-1007: the module is built with the draft's own quantization config, so a draft without quantization_config loads unquantized",
        "vLLM 0.33.0 nemotron_h_mtp.py:333-334, 372 and v1/spec_decode/llm_base_proposer.py:1438-1441, 1516-1518: no embedding or head of its own; both are the target's",
        "unverified: checkpoint layout unverified (no public checkpoint read); the Omni multimodal releases (NemotronH_*_Omni_Reasoning_V3, speculative.py:888-892) and nemotron_h_puzzle are not covered",
    ),
    card_notes=(
        "vLLM counts this MTP as one step (`num_nextn_predict_layers: 1`); the step runs its layers `mtp.layers.{i}` in order, one per character of the MTP pattern.",
        "vLLM builds this MTP from the draft's own config, which has no `quantization_config`: it loads unquantized whatever the target's quantization.",
        "vLLM uses the target's embedding and LM head; the draft ships neither.",
        "vLLM 0.33.0 drops draft tensors it has no parameter for without an error; `verify` replays its loader and refuses any.",
        "The checkpoint layout of this family has not been checked against a public checkpoint.",
    ),
)
