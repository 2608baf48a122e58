"""What a model family is: MTP tensor layout, config arrays and the vLLM loader's name rules, as data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

    @property
    def mtp_layers(self) -> range:
        return range(self.num_hidden_layers, self.num_hidden_layers + self.num_mtp_layers)

    @property
    def total_layers(self) -> int:
        return self.num_hidden_layers + self.num_mtp_layers


@dataclass(frozen=True)
class LayerTensor:
    """One tensor of an MTP layer: its checkpoint suffix, shape and the vLLM parameter it fills."""

    suffix: str
    shape: Callable[[Geometry, Attention], Shape]
    param: str


@dataclass(frozen=True)
class ExtraTensor:
    """A tensor outside the MTP layers that the draft must still ship (e.g. the embedding)."""

    name: str
    shape: Callable[[Geometry], Shape]
    source_names: tuple[str, ...]
    param: str


@dataclass(frozen=True)
class LoaderRules:
    """How the vLLM draft loader turns checkpoint names into its parameter names.

    Applied in order: skip, keep, insert the block infix, fuse, rename, map the embedding.
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

    def layer_prefix(self, template: str, layer: int) -> str:
        return template.format(layer=layer)

    def attention_for(self, geometry: Geometry, layer: int) -> Attention:
        kind = geometry.layer_types[layer] if layer < len(geometry.layer_types) else self.mtp_layer_type
        return geometry.attention.get(kind, geometry.attention[self.mtp_layer_type])

    def expected_tensors(self, geometry: Geometry) -> list[ExpectedTensor]:
        """The draft's tensors in their fixed output order: extras first, then layer by layer."""
        expected = [ExpectedTensor(extra.name, extra.shape(geometry), extra.source_names, extra.param) for extra in self.extra_tensors]
        for layer in geometry.mtp_layers:
            attention = self.attention_for(geometry, layer)
            out_prefix = self.layer_prefix(self.output_prefix, layer)
            for tensor in self.layer_tensors:
                sources = tuple(self.layer_prefix(p, layer) + tensor.suffix for p in self.source_prefixes)
                expected.append(
                    ExpectedTensor(
                        out_prefix + tensor.suffix,
                        tensor.shape(geometry, attention),
                        sources,
                        out_prefix + tensor.param,
                    )
                )
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


def require_int(config: Mapping[str, Any], key: str, *, minimum: int = 1) -> int:
    """A positive integer config field; ValueError names the dotted field."""
    try:
        where, value = config_value(config, key)
    except KeyError:
        raise ValueError(f"text_config.{key}: is required") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: must be an integer >= {minimum}, found {value!r}")
    return value
