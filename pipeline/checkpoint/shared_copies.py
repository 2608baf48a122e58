"""What `shared_weights: omit` leaves out of a draft, measured in the source's own headers."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.checkpoint.readers import read_config, read_shard_header, read_weight_index
from pipeline.checkpoint.sources import ModelSource
from pipeline.families import Family


@dataclass(frozen=True)
class OmittedCopies:
    """The copies the draft does not ship (by draft name) and the bytes they hold in the source."""

    names: tuple[str, ...]
    source_bytes: int

    def line(self) -> str:
        if not self.names:
            return "shared_weights: copy: the embedding and head copies ship"
        copies = "1 copy" if len(self.names) == 1 else f"{len(self.names)} copies"
        return f"shared_weights: omit leaves out {copies} vLLM replaces ({', '.join(self.names)}), saving {self.source_bytes} bytes"


def omitted_copies(source: ModelSource, family: Family) -> OmittedCopies:
    """The shared copies `family` (as configured) leaves out, sized from the source's shard headers
    (only the headers of shards holding one are read)."""
    if family.shared_weights != "omit" or not family.shared_names():
        return OmittedCopies((), 0)
    geometry = family.read_geometry(read_config(source))
    index = read_weight_index(source)
    omitted = [tensor for tensor in family.with_shared_weights("copy").expected_tensors(geometry) if tensor.shared]
    located = {tensor.name: next((n for n in tensor.source_names if n in index.weight_map), None) for tensor in omitted}
    headers = {shard: read_shard_header(source, shard) for shard in sorted({index.weight_map[n] for n in located.values() if n})}
    size = sum(headers[index.weight_map[name]].tensors[name].nbytes for name in located.values() if name)
    return OmittedCopies(tuple(tensor.name for tensor in omitted if located[tensor.name]), size)
