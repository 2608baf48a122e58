"""What a model family is: MTP tensor layout, config arrays and the vLLM loader's name rules, as data."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Shape = tuple[int, ...]
SharedWeights = Literal["copy", "omit"]
SHARED_WEIGHTS_CHOICES: tuple[SharedWeights, ...] = ("copy", "omit")


@dataclass(frozen=True)
class Attention:
    heads: int
    kv_groups: int
    head_dim: int


@dataclass(frozen=True)
class Geometry:
    """The text-model numbers that fix every MTP tensor's shape."""

    hidden_size: int
    vocab_size: int
    num_hidden_layers: int
    num_mtp_layers: int
    intermediate_size: int
    attention: Mapping[str, Attention]
    layer_types: tuple[str, ...]
    # None: the MTP layers follow the backbone (index num_hidden_layers); Qwen3-Next and MiMo count from 0.
    first_mtp_layer: int | None = None
    num_experts: int = 0
    sizes: Mapping[str, int] = field(default_factory=dict)  # family-specific widths (MLA ranks, expert sizes)
    flags: frozenset[str] = frozenset()  # config switches that add tensors or change shapes (attention bias, qk norm)

    @property
    def mtp_layers(self) -> range:
        first = self.num_hidden_layers if self.first_mtp_layer is None else self.first_mtp_layer
        return range(first, first + self.num_mtp_layers)

    @property
    def total_layers(self) -> int:
        return self.num_hidden_layers + self.num_mtp_layers


@dataclass(frozen=True)
class LayerTensor:
    """One tensor of an MTP layer: its checkpoint suffix, shape and the vLLM parameter it fills.

    A suffix holding `{expert}` stands for one tensor per routed expert. `when` names a geometry
    flag the tensor exists under (e.g. q/k/v biases); `top_level` marks a parameter that is not
    under the layer (DeepSeek's per-layer `embed_tokens` loads into `model.embed_tokens`).
    `shared` marks a copy vLLM replaces with the target's weight after loading (the recipe's
    `shared_weights` decides whether it ships); `fallback_sources` are whole source names tried
    after the per-layer ones (GLM-4.6 keeps only the top-level `lm_head` and embedding).
    `in_layer`, given the geometry and an MTP layer number, says whether that layer has the tensor
    (Nemotron-H's MTP layers differ by type and position); None: every MTP layer has it.
    """

    suffix: str
    shape: Callable[[Geometry, Attention], Shape]
    param: str
    when: str | None = None
    top_level: bool = False
    shared: bool = False
    fallback_sources: tuple[str, ...] = ()
    in_layer: Callable[[Geometry, int], bool] | None = None

    def suffixes(self, geometry: Geometry) -> list[str]:
        if self.when is not None and self.when not in geometry.flags:
            return []
        if "{expert}" in self.suffix:
            return [self.suffix.format(expert=expert) for expert in range(geometry.num_experts)]
        return [self.suffix]


@dataclass(frozen=True)
class ExtraTensor:
    """A tensor outside the MTP layers: a copy the draft must still ship (the embedding), or a
    tensor of the MTP block itself (Qwen3-Next's `mtp.fc`, listed in `Family.block_tensors`)."""

    name: str
    shape: Callable[[Geometry], Shape]
    source_names: tuple[str, ...]
    param: str
    shared: bool = False


@dataclass(frozen=True)
class QuantModule:
    """A module of the MTP layer that vLLM builds through a quantization config, by its vLLM
    module prefix (`{layer}` is the vLLM layer number). Exclude lists are matched against these
    prefixes, not against checkpoint names; a fused module is also matched through its `shards`
    (the checkpoint parts it fuses). `kind` is `linear`, `experts` (one FusedMoE module) or
    `head` (a ParallelLMHead, quantized by ModelOpt and compressed-tensors but not by FP8).
    `unquantized_under` names vLLM quantization configs under which the module is forced
    unquantized (Qwen3-Next's `fc` under `modelopt_fp4`); `when` names a geometry flag the
    module exists under, as for `LayerTensor`; `in_layer`, as for `LayerTensor`, says which MTP
    layers build it (Step5's attention differs by layer type)."""

    prefix: str
    kind: Literal["linear", "experts", "head"] = "linear"
    shards: tuple[str, ...] = ()
    unquantized_under: tuple[str, ...] = ()
    shared: bool = False
    when: str | None = None
    in_layer: Callable[[Geometry, int], bool] | None = None
    # (list field of the target config, entry): built unquantized when that list holds the entry
    # (LongCat-Flash's `eh_proj` under `disable_quant_module: [mtp]`).
    unquantized_if: tuple[str, str] | None = None


# (checkpoint name, geometry, the parameters the module declares) -> the parameter filled, or None.
Replay = Callable[[str, "Geometry", Collection[str]], "str | None"]


@dataclass(frozen=True)
class Family:
    """Everything the pipeline knows about one model family's MTP layers."""

    name: str
    summary: str
    vllm_class: str
    route_model_types: tuple[str, ...]
    route_architectures: tuple[str, ...]
    source_prefixes: tuple[str, ...]
    output_prefix: str
    layer_tensors: tuple[LayerTensor, ...]
    extra_tensors: tuple[ExtraTensor, ...]
    per_layer_arrays: tuple[str, ...]
    mtp_layer_type: str
    replay: Replay
    read_geometry: Callable[[Mapping[str, Any]], Geometry]
    facts: tuple[str, ...] = ()
    card_notes: tuple[str, ...] = ()
    # MTP tensors outside any layer (Qwen3-Next's `mtp.fc`), all under `block_prefix`.
    block_tensors: tuple[ExtraTensor, ...] = ()
    block_prefix: str | None = None
    # The loader's per-layer parameter prefix when it differs from `output_prefix` (Qwen3-Next: mtp. -> model.).
    param_prefix: str | None = None
    count_key: str = "num_nextn_predict_layers"
    count_default: int | None = None  # what vLLM assumes when the config lacks `count_key`
    # How many MTP layers vLLM builds whatever the config declares (MiMo-V2: one); None: as many as declared.
    mtp_layer_limit: int | None = None
    # Whose quantization config vLLM builds the MTP module with: the draft's own (Step-3.5/3.7) or the target's.
    quantization_from: Literal["draft", "target"] = "target"
    quant_modules: tuple[QuantModule, ...] = ()
    # vLLM numbers the MTP parameters and modules after the backbone although the checkpoint counts from 0 (MiMo).
    param_layer_after_backbone: bool = False
    shared_weights: SharedWeights = "omit"
    shared_weights_choices: tuple[SharedWeights, ...] = SHARED_WEIGHTS_CHOICES
    vllm_release: str = "0.33.0"
    vllm_file: str = ""  # the model file the loader rules were read from, under vllm/model_executor/models/ unless it starts with vllm/
    # Suffixes of source tensors in an MTP layer that vLLM's loader skips (Kimi K3's attention-residual
    # weights): known, so not refused as foreign, and never shipped.
    skipped_suffixes: tuple[str, ...] = ()
    # Whole source names outside the MTP layers that vLLM's loader drops (Qwen4 Exp's mixer injection): known, never shipped.
    skipped_names: tuple[str, ...] = ()
    # What vLLM raises for a name it matches but cannot place: `params_dict[name]` in hand-written
    # loaders, AutoWeightsLoader's "There is no module or parameter named" (models/utils.py:442-448).
    unknown_name_error: str = "KeyError"
    # How vLLM renames the target's quantization module lists before building the MTP (the target
    # class's hf_to_vllm_mapper, model_loader/utils.py:367-386); None: entries are matched as written.
    target_module_rename: Callable[[str, Geometry], str] | None = None
    # The config field that counts the backbone's layers, compared with the target's (LongCat-Flash: num_layers).
    layer_count_key: str = "num_hidden_layers"
    # Parameters the vLLM module declares that no checkpoint name can fill, because the proposer
    # always replaces them with the target's (LongCat-Flash's top-level `lm_head.weight`).
    unfilled_params: tuple[str, ...] = ()
    # vLLM routes on any entry of `architectures` (Step5, speculative.py:1055-1058); False: on the first only.
    route_any_architecture: bool = False

    def with_shared_weights(self, choice: str) -> Family:
        """This family shipping (`copy`) or leaving out (`omit`) the copies vLLM replaces; ValueError names the reason."""
        if choice not in self.shared_weights_choices:
            allowed = " or ".join(self.shared_weights_choices)
            raise ValueError(f"must be {allowed} for {self.name}: {self.shared_weights_reason}")
        return replace(self, shared_weights=choice)

    @property
    def shared_weights_reason(self) -> str:
        if "copy" not in self.shared_weights_choices:
            return f"vLLM's {self.vllm_class} has no embedding or head of its own and always uses the target's, so there is nothing to copy"
        if self.shared_weights_choices == ("copy",):
            return f"vLLM's {self.vllm_class} keeps the draft's own per-layer heads and reads its embedding, so they always ship"
        return f"vLLM's {self.vllm_class} replaces the draft's embedding and heads with the target's; copies matter only with pipeline parallelism above 1"

    def shared_weights_note(self) -> str | None:
        """The card's sentence on the `shared_weights` choice; None where there is no choice (Step)."""
        if len(self.shared_weights_choices) < 2:
            return None
        names = " and ".join(f"`{name}`" for name in self.shared_names())
        if self.shared_weights == "omit":
            return (
                f"This draft leaves out {names} (`shared_weights: omit`): vLLM {self.vllm_release} replaces them with the target's "
                "when it loads the draft. Copies would matter only with pipeline parallelism above 1, where the embedding is not shared."
            )
        return (
            f"This draft ships copies of {names} (`shared_weights: copy`): vLLM {self.vllm_release} replaces them with the target's "
            "under pipeline parallelism 1; the embedding copy is used with pipeline parallelism above 1."
        )

    def shared_names(self) -> list[str]:
        """The checkpoint names of the copies `shared_weights` decides on, `{layer}` for per-layer ones."""
        names = [extra.name for extra in self.extra_tensors if extra.shared]
        names += [self.output_prefix.replace("{layer}", "N") + tensor.suffix for tensor in self.layer_tensors if tensor.shared]
        return names

    def param_layer(self, geometry: Geometry, layer: int) -> int:
        return layer + geometry.num_hidden_layers if self.param_layer_after_backbone else layer

    def declared_params(self, geometry: Geometry) -> set[str]:
        """Every parameter the vLLM MTP module declares for this geometry, shared copies included."""
        return {tensor.param for tensor in self._tensors(geometry)} | set(self.unfilled_params)

    def known_source_names(self, geometry: Geometry) -> set[str]:
        """Every source name of an MTP tensor this family knows, shipped or not."""
        layer_prefixes = [self.layer_prefix(template, layer) for template in self.source_prefixes for layer in geometry.mtp_layers]
        skipped = {prefix + suffix for prefix in layer_prefixes for suffix in self.skipped_suffixes}
        return skipped | set(self.skipped_names) | {name for tensor in self._tensors(geometry) for name in tensor.source_names}

    def vllm_param(self, name: str, geometry: Geometry) -> str | None:
        """The parameter vLLM's loader fills with checkpoint tensor `name`, or None when it skips it;
        a result outside `declared_params` is a KeyError in vLLM."""
        return self.replay(name, geometry, self.declared_params(geometry))

    def quant_module_prefixes(self, geometry: Geometry) -> list[QuantModule]:
        """The MTP modules built through a quantization config, with concrete prefixes, shipped ones only."""
        modules: dict[str, QuantModule] = {}
        for layer in geometry.mtp_layers:
            for module in self.quant_modules:
                if (module.shared and self.shared_weights == "omit") or (module.when is not None and module.when not in geometry.flags):
                    continue
                if module.in_layer is not None and not module.in_layer(geometry, layer):
                    continue
                prefix = module.prefix.format(layer=self.param_layer(geometry, layer))
                modules.setdefault(prefix, replace(module, prefix=prefix))
        return list(modules.values())

    def layer_prefix(self, template: str, layer: int) -> str:
        return template.format(layer=layer)

    def mtp_prefixes(self, layers: range) -> list[tuple[str, str]]:
        """(concrete prefix, template) of every name that belongs to the MTP, layer prefixes first."""
        pairs = [(self.layer_prefix(template, layer), template) for template in self.source_prefixes for layer in layers]
        if self.block_prefix:
            pairs.append((self.block_prefix, self.block_prefix))
        return pairs

    def declared_mtp_count(self, config: Mapping[str, Any]) -> Any:
        """The MTP layer count as vLLM reads it: `count_key` (text_config first), else the family's default."""
        return optional_value(config, self.count_key, self.count_default)

    def attention_for(self, geometry: Geometry, layer: int) -> Attention:
        kind = geometry.layer_types[layer] if layer < len(geometry.layer_types) else self.mtp_layer_type
        return geometry.attention.get(kind, geometry.attention[self.mtp_layer_type])

    def expected_tensors(self, geometry: Geometry) -> list[ExpectedTensor]:
        """The draft's tensors in their fixed output order: extras, block tensors, then layer by layer.

        Shared copies are left out when the family is configured with `shared_weights: omit`."""
        return [tensor for tensor in self._tensors(geometry) if not (tensor.shared and self.shared_weights == "omit")]

    @property
    def shipped_extras(self) -> tuple[ExtraTensor, ...]:
        return tuple(extra for extra in self.extra_tensors if not (extra.shared and self.shared_weights == "omit"))

    def _tensors(self, geometry: Geometry) -> list[ExpectedTensor]:
        expected = [
            ExpectedTensor(extra.name, extra.shape(geometry), extra.source_names, extra.param, extra.shared)
            for extra in (*self.extra_tensors, *self.block_tensors)
        ]
        for layer in geometry.mtp_layers:
            attention = self.attention_for(geometry, layer)
            out_prefix = self.layer_prefix(self.output_prefix, layer)
            param_prefix = self.layer_prefix(self.param_prefix or self.output_prefix, self.param_layer(geometry, layer))
            for tensor in self.layer_tensors:
                suffixes = tensor.suffixes(geometry)
                if not suffixes or (tensor.in_layer is not None and not tensor.in_layer(geometry, layer)):
                    continue  # the shape of a tensor the geometry lacks may not be computable
                shape = tensor.shape(geometry, attention)
                param = tensor.param if tensor.top_level else param_prefix + tensor.param
                for suffix in suffixes:
                    sources = tuple(self.layer_prefix(p, layer) + suffix for p in self.source_prefixes) + tensor.fallback_sources
                    expected.append(ExpectedTensor(out_prefix + suffix, shape, sources, param, tensor.shared))
        return expected


@dataclass(frozen=True)
class ExpectedTensor:
    name: str
    shape: Shape
    source_names: tuple[str, ...]
    param: str
    shared: bool = False


def config_value(config: Mapping[str, Any], key: str) -> tuple[str, Any]:
    """Read `text_config.key` first, then the top level; returns (dotted path, value) or raises KeyError."""
    text = config.get("text_config")
    if isinstance(text, Mapping) and key in text:
        return f"text_config.{key}", text[key]
    if key in config:
        return key, config[key]
    raise KeyError(key)


def optional_value(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """`config_value`'s value, or `default` when the field is absent."""
    try:
        return config_value(config, key)[1]
    except KeyError:
        return default


def field_path(config: Mapping[str, Any], key: str) -> str:
    """How an error names `key`: under `text_config.` when the model's fields live there."""
    return f"text_config.{key}" if isinstance(config.get("text_config"), Mapping) else key


def require_int(config: Mapping[str, Any], key: str, *, minimum: int = 1, default: int | None = None) -> int:
    """A positive integer config field (or `default` when absent); ValueError names the dotted field."""
    try:
        where, value = config_value(config, key)
    except KeyError:
        if default is not None:
            return default
        raise ValueError(f"{field_path(config, key)}: is required") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: must be an integer >= {minimum}, found {value!r}")
    return value


def optional_flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    """A true/false config field, `default` when absent; ValueError names the dotted field."""
    try:
        where, value = config_value(config, key)
    except KeyError:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{where}: must be true or false, found {value!r}")
    return value


def require_flag(config: Mapping[str, Any], key: str, source: str) -> bool:
    """A true/false config field vLLM reads without a default; `source` says where it reads it."""
    try:
        config_value(config, key)
    except KeyError:
        raise ValueError(f"{field_path(config, key)}: is required ({source} reads it without a default)") from None
    return optional_flag(config, key, False)
