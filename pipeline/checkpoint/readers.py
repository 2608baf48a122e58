"""Reading a checkpoint's structure (config, index, shard headers) through any source, defensively."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from pipeline.checkpoint.files import DuplicateKeyError, loads_strict
from pipeline.checkpoint.safetensors_format import Header, HeaderError, read_header
from pipeline.checkpoint.sources import ModelSource, check_repo_path
from pipeline.errors import InputError

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CARD_FILE = "README.md"
# A fenced block (``` or ~~~, any length) and its info string; the closing fence repeats the opening one.
FENCED_BLOCK = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.MULTILINE | re.DOTALL)
BIBTEX_ENTRY = re.compile(r"^\s*@[A-Za-z]+\s*[{(]")
BIBTEX_LANGUAGES = ("bibtex", "bib")
QUANTIZATION_KEY = "quantization_config"  # dropped from the draft config: the MTP layers stay BF16
LICENSE_TEXT_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt")
NOTICE_FILES = ("NOTICE", "NOTICE.md", "NOTICE.txt")
LICENSE_FILES = (*LICENSE_TEXT_FILES, *NOTICE_FILES)


def read_json(source: ModelSource, name: str) -> Any:
    """A small JSON file from a source; InputError names the file when it does not parse."""
    try:
        return loads_strict(source.read(name).decode("utf-8"))
    except DuplicateKeyError as exc:
        raise InputError(f"{source.label}: {name}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{source.label}: {name}: not valid JSON ({exc.__class__.__name__})") from None


def read_config(source: ModelSource) -> dict[str, Any]:
    if not source.exists(CONFIG_FILE):
        raise InputError(f"{source.label}: {CONFIG_FILE} is missing")
    config = read_json(source, CONFIG_FILE)
    if not isinstance(config, dict):
        raise InputError(f"{source.label}: {CONFIG_FILE}: must be a JSON object")
    return config


@dataclass(frozen=True)
class WeightIndex:
    """Which shard holds each tensor, as the checkpoint declares it."""

    weight_map: Mapping[str, str]
    total_size: int | None
    from_index_file: bool

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values()))


def read_weight_index(source: ModelSource) -> WeightIndex:
    """The index file, or the header of a single-file checkpoint."""
    if source.exists(INDEX_FILE):
        return parse_index(read_json(source, INDEX_FILE), f"{source.label}: {INDEX_FILE}")
    if source.exists(SINGLE_FILE):
        header = read_shard_header(source, SINGLE_FILE)
        return WeightIndex({name: SINGLE_FILE for name in header.tensors}, None, False)
    raise InputError(f"{source.label}: neither {INDEX_FILE} nor {SINGLE_FILE} exists")


def parse_index(document: object, where: str) -> WeightIndex:
    """Validate an index document: a weight_map of tensor name to a shard inside the repo."""
    if not isinstance(document, dict):
        raise InputError(f"{where}: must be a JSON object")
    weight_map = document.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{where}: weight_map: must be a non-empty object")
    for tensor, shard in weight_map.items():
        check_repo_path(shard, f"{where}: weight_map.{tensor[:80]}")
        if not shard.endswith(".safetensors"):
            raise InputError(f"{where}: weight_map.{tensor[:80]}: {shard[:80]!r} is not a .safetensors file")
    metadata = document.get("metadata") or {}
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise InputError(f"{where}: metadata.total_size: must be a non-negative integer")
    return WeightIndex(dict(weight_map), total, True)


def read_shard_header(source: ModelSource, shard: str) -> Header:
    """A shard's header via two small range reads; malformed headers are bad input."""
    size = source.size(shard)
    try:
        return read_header(lambda start, end: source.read_range(shard, start, end), size)
    except HeaderError as exc:
        raise InputError(f"{source.label}: {shard}: {exc}") from None


def auto_map_files(config: dict[str, Any]) -> list[str]:
    """Python files named by `auto_map` (entries pointing at another repo, `repo--module.Class`, excluded)."""
    auto_map = config.get("auto_map") or {}
    if not isinstance(auto_map, dict):
        raise InputError(f"{CONFIG_FILE}: auto_map: must be an object")
    files = []
    for key, value in auto_map.items():
        for reference in value if isinstance(value, list) else [value]:
            if reference is None:
                continue
            if not isinstance(reference, str) or "." not in reference:
                raise InputError(f"{CONFIG_FILE}: auto_map.{key}: {reference!r} is not module.Class")
            if "--" in reference:
                continue
            module = reference.rsplit(".", 1)[0]
            files.append(check_repo_path(module.replace(".", "/") + ".py", f"{CONFIG_FILE}: auto_map.{key}"))
    return sorted(set(files))


def read_card_license(card_path: Path, where: str) -> str | None:
    """The `license` in a model card's front matter, or None when there is none."""
    try:
        card = ModelCard(card_path.read_text(encoding="utf-8"), ignore_metadata_errors=True)
    except Exception as exc:  # a remote card is untrusted text; any parse failure is bad input
        raise InputError(f"{where}: front matter does not parse ({exc.__class__.__name__})") from None
    license_id = card.data.get("license")
    if license_id is not None and not isinstance(license_id, str):
        raise InputError(f"{where}: license: must be a string")
    return license_id


def read_card_citation(text: str) -> str | None:
    """The BibTeX the card asks users to cite (its fenced BibTeX blocks, verbatim), or None.

    A block counts when its info string says bibtex/bib or its first line opens a BibTeX entry.
    """
    blocks = []
    for match in FENCED_BLOCK.finditer(text):
        language = match.group("info").strip().lower()
        body = match.group("body").rstrip("\n")
        if body.strip() and (language in BIBTEX_LANGUAGES or (not language and BIBTEX_ENTRY.match(body))):
            blocks.append(body)
    return "\n\n".join(blocks) or None
