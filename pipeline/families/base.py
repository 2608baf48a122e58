"""What a model family is: MTP tensor layout, config arrays and the vLLM loader's name rules, as data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]


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
    """

    suffix: str
    shape: Callable[[Geometry, Attention], Shape]
    param: str
    when: str | None = None
    top_level: bool = False

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


@dataclass(frozen=True)
class LoaderRules:
    """How the vLLM draft loader turns checkpoint names into its parameter names.

    Applied in order: skip; keep (an MTP layer prefix, a kept prefix or a kept substring); map the
    embedding; insert the block infix; fuse; pattern renames (regular expressions), plain renames;
    then the first matching prefix rename.
    """

    skip_substrings: tuple[str, ...]
    layer_prefixes: tuple[str, ...]
    keep_substrings: tuple[str, ...]
    block_exempt: tuple[str, ...]
    block_infix: str
    fusions: tuple[tuple[str, str], ...]
    fusion_exempt: tuple[str, ...]
    renames: tuple[tuple[str, str], ...]
    embed_marker: str
    embed_param: str
    keep_prefixes: tuple[str, ...] = ()
    pattern_renames: tuple[tuple[str, str], ...] = ()
    prefix_renames: tuple[tuple[str, str], ...] = ()


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
    loader: LoaderRules
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
        try:
            return config_value(config, self.count_key)[1]
        except KeyError:
            return self.count_default

    def attention_for(self, geometry: Geometry, layer: int) -> Attention:
        kind = geometry.layer_types[layer] if layer < len(geometry.layer_types) else self.mtp_layer_type
        return geometry.attention.get(kind, geometry.attention[self.mtp_layer_type])

    def expected_tensors(self, geometry: Geometry) -> list[ExpectedTensor]:
        """The draft's tensors in their fixed output order: extras, block tensors, then layer by layer."""
        expected = [
            ExpectedTensor(extra.name, extra.shape(geometry), extra.source_names, extra.param)
            for extra in (*self.extra_tensors, *self.block_tensors)
        ]
        for layer in geometry.mtp_layers:
            attention = self.attention_for(geometry, layer)
            out_prefix = self.layer_prefix(self.output_prefix, layer)
            param_prefix = self.layer_prefix(self.param_prefix or self.output_prefix, layer)
            for tensor in self.layer_tensors:
                shape = tensor.shape(geometry, attention)
                param = tensor.param if tensor.top_level else param_prefix + tensor.param
                for suffix in tensor.suffixes(geometry):
                    sources = tuple(self.layer_prefix(p, layer) + suffix for p in self.source_prefixes)
                    expected.append(ExpectedTensor(out_prefix + suffix, shape, sources, param))
        return expected


@dataclass(frozen=True)
class ExpectedTensor:
    name: str
    shape: Shape
    source_names: tuple[str, ...]
    param: str


def config_value(config: Mapping[str, Any], key: str) -> tuple[str, Any]:
    """Read `text_config.key` first, then the top level; returns (dotted path, value) or raises KeyError."""
    text = config.get("text_config")
    if isinstance(text, Mapping) and key in text:
        return f"text_config.{key}", text[key]
    if key in config:
        return key, config[key]
    raise KeyError(key)


def require_int(config: Mapping[str, Any], key: str, *, minimum: int = 1, default: int | None = None) -> int:
    """A positive integer config field (or `default` when absent); ValueError names the dotted field."""
    try:
        where, value = config_value(config, key)
    except KeyError:
        if default is not None:
            return default
        nested = isinstance(config.get("text_config"), Mapping)
        raise ValueError(f"{'text_config.' if nested else ''}{key}: is required") from None
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
