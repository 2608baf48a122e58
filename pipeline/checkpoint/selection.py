"""What fetch will move, decided from the source's metadata alone: tensors, shard layout, small files.

Reads the source's config, index and the needed shards' headers (a few small range reads) and the
target's config; writes nothing. The plan fixes every draft shard's name, header and tensor
offsets, so fetch can land each byte at its final place and the disk preflight can count the
bytes a build will write before it writes any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.checkpoint.readers import (
    CARD_FILE,
    CONFIG_FILE,
    INDEX_FILE,
    LICENSE_FILES,
    WeightIndex,
    auto_map_files,
    read_config,
    read_shard_header,
    read_weight_index,
)
from pipeline.checkpoint.safetensors_format import Header
from pipeline.checkpoint.shard_layout import ShardLayout, TensorSlot, lay_out
from pipeline.checkpoint.sources import ModelSource
from pipeline.errors import CheckFailed, InputError
from pipeline.families import ExpectedTensor, Family
from pipeline.families.arrays import refuse_short_arrays
from pipeline.families.quant_excludes import QUANT_CONFIG_FILE

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


@dataclass(frozen=True)
class Selected:
    """A tensor chosen from the source: where it lives and where its copy goes."""

    index: int
    expected: ExpectedTensor
    source_name: str
    shard: str
    start: int
    end: int
    dtype: str

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def slot(self) -> TensorSlot:
        return TensorSlot(self.expected.name, self.dtype, tuple(self.expected.shape), self.nbytes)


@dataclass(frozen=True)
class FetchPlan:
    """Everything fetch will read and write, known before the first tensor byte moves."""

    source_commit: str | None
    target_commit: str | None
    selected: tuple[Selected, ...]
    shards: tuple[ShardLayout, ...]
    source_files: tuple[str, ...]
    target_files: tuple[str, ...]
    small_file_bytes: int  # the small files' total size, source and target
    source_shards: tuple[tuple[str, int], ...]  # the source shards holding selected tensors, with their sizes

    @property
    def tensor_bytes(self) -> int:
        return sum(item.nbytes for item in self.selected)

    @property
    def shard_bytes(self) -> int:
        return sum(shard.size for shard in self.shards)

    def shard_of(self) -> dict[str, tuple[ShardLayout, int]]:
        """Tensor name -> its shard and the absolute offset of its first byte there."""
        return {placed.slot.name: (shard, placed.offset) for shard in self.shards for placed in shard.tensors}


def plan_fetch(source: ModelSource, target: ModelSource, family: Family, max_shard_bytes: int) -> FetchPlan:
    """Resolve both repos, select the draft's tensors and lay out its shards; refuse what cannot build."""
    source_commit, target_commit = source.resolve(), target.resolve()
    config = read_config(source)
    try:
        geometry = family.read_geometry(config)
    except ValueError as exc:
        raise InputError(f"{source.label}: {CONFIG_FILE}: {exc}") from None
    refuse_short_arrays(f"{source.label}: {CONFIG_FILE}", config, family, geometry)  # before moving gigabytes
    index = read_weight_index(source)
    expected = family.expected_tensors(geometry)
    _refuse_unknown_mtp_tensors(source.label, family, geometry.mtp_layers, index, family.known_source_names(geometry))
    selected = _select(source, index, expected)
    read_config(target)
    source_files, target_files = _source_small_files(source, config), _target_small_files(target, family)
    small = sum(source.size(name) for name in source_files if source.exists(name)) + sum(target.size(name) for name in target_files)
    shards = lay_out([item.slot for item in selected], max_shard_bytes)
    read = tuple((name, source.size(name)) for name in sorted({item.shard for item in selected}))
    return FetchPlan(source_commit, target_commit, tuple(selected), tuple(shards), tuple(source_files), tuple(target_files), small, read)


def _refuse_unknown_mtp_tensors(label: str, family: Family, mtp_layers: range, index: WeightIndex, known: set[str]) -> None:
    prefixes = tuple(prefix for prefix, _ in family.mtp_prefixes(mtp_layers))
    unknown = sorted(name for name in index.weight_map if name.startswith(prefixes) and name not in known)
    if unknown:
        raise CheckFailed(
            f"{label}: {len(unknown)} MTP tensor(s) the {family.name} family does not know, first {unknown[0]}",
            hint="the checkpoint may belong to another family or revision",
        )


def _select(source: ModelSource, index: WeightIndex, expected: list[ExpectedTensor]) -> list[Selected]:
    chosen: list[tuple[ExpectedTensor, str, str]] = []
    for tensor in expected:
        found = next((name for name in tensor.source_names if name in index.weight_map), None)
        if found is None:
            raise CheckFailed(
                f"{source.label}: {INDEX_FILE}: tensor {tensor.name} is missing", hint="is this the BF16 release that keeps the MTP layers?"
            )
        chosen.append((tensor, found, index.weight_map[found]))
    headers: dict[str, Header] = {shard: read_shard_header(source, shard) for shard in sorted({c[2] for c in chosen})}
    selected = []
    for position, (tensor, name, shard) in enumerate(chosen):
        entry = headers[shard].tensors.get(name)
        if entry is None:
            raise InputError(f"{source.label}: {INDEX_FILE}: weight_map.{name} points at {shard}, whose header lacks it")
        if entry.shape != tensor.shape:
            raise CheckFailed(f"{source.label}: {shard}: {name} has shape {list(entry.shape)}, the config implies {list(tensor.shape)}")
        start, end = headers[shard].absolute_range(name)
        selected.append(Selected(position, tensor, name, shard, start, end, entry.dtype))
    return selected


def _source_small_files(source: ModelSource, config: dict[str, Any]) -> list[str]:
    names = [CONFIG_FILE, INDEX_FILE, CARD_FILE, *LICENSE_FILES, *auto_map_files(config)]
    return [name for name in dict.fromkeys(names) if source.exists(name) or name in auto_map_files(config)]


def _target_small_files(target: ModelSource, family: Family) -> list[str]:
    # The legacy ModelOpt quantization file matters only where vLLM builds the MTP with the target's config.
    quant = [QUANT_CONFIG_FILE] if family.quantization_from == "target" else []
    names = [CONFIG_FILE, *quant, INDEX_FILE, CARD_FILE, *TOKENIZER_FILES]
    return [name for name in names if target.exists(name)]
