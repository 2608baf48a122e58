"""The card's licence and attribution section, shaped into plain values before rendering.

Apache-2.0 §4 asks whoever redistributes a work to give recipients the licence, mark the files
they changed, keep the source's notices and pass on its NOTICE file. The card does each in
writing: the licence by full name with a link and the shipped licence file, the authors credited
by the name the recipe gives (an organisation id is not a name, so none is guessed), exactly what
was taken and how every file differs from the source, and the source's citation quoted as data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pipeline.card.licenses import license_terms
from pipeline.card.markdown import fence_for
from pipeline.checkpoint.readers import CONFIG_FILE, INDEX_FILE, LICENSE_TEXT_FILES, NOTICE_FILES
from pipeline.errors import InputError
from pipeline.families import Family
from pipeline.recipe.loader import HubRef, Recipe

COPIED = "none: copied byte for byte from the source"
INDEX_CHANGE = "new: maps each tensor to its shard in this repository (the source's index is not shipped)"
# The release's own files: the card, the lock, the verify report and benchmark results (see flows/publish.release_files).
OWN_FILES = "`README.md`, `draft.lock.json`, `verify.json`, `benchmarks/`"
OWN_CHANGE = "new: this card and the release's provenance and benchmark records; the source's card is not shipped"


def inline(text: str) -> str:
    """Recipe text safe inside a Markdown sentence or table cell: one line, no HTML, no emphasis or links."""
    text = " ".join(str(text).split())
    for raw, safe in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("`", "\\`"), ("*", "\\*"), ("_", "\\_"), ("[", "\\[")):
        text = text.replace(raw, safe)
    return text


def _code(name: str) -> str:
    """A file or field name as inline code; a name holding a backtick cannot be code, so it is escaped instead."""
    if "`" in name:
        return inline(name)
    flat = " ".join(name.split()).replace("|", "\\|")
    return f"`{flat}`"


def _link(name: str) -> str:
    return f"[{_code(name)}]({name})"


def _config_change(lock: Mapping[str, Any], files: Mapping[str, Any], source_files: Mapping[str, Any]) -> str:
    recorded = (lock.get("changes") or {}).get(CONFIG_FILE)
    if recorded is None:
        return "the source's, minus `quantization_config` wherever it has one; the build records every field that differs"
    if recorded:
        return (
            "the source's, with "
            + "; ".join(f"{_code(item['field'])} {item['change']}" for item in recorded)
            + "; every other field unchanged"
        )
    if (source_files.get(CONFIG_FILE) or {}).get("sha256") == (files.get(CONFIG_FILE) or {}).get("sha256"):
        return COPIED
    return "the source's fields and values, unchanged; only the JSON layout differs"


def _changes(lock: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per file of the release: what it is relative to the source."""
    files = lock.get("files") or {}
    source_files = (lock.get("source") or {}).get("files") or {}
    if not files:  # the draft has not been built yet: what the stages do, by design
        rows = [
            ("`model-*.safetensors`", "re-sharded: the copied tensors, regrouped into new files; every tensor's bytes unchanged"),
            (f"`{INDEX_FILE}`", INDEX_CHANGE),
            (f"`{CONFIG_FILE}`", _config_change(lock, files, source_files)),
            ("the source's `LICENSE`, `NOTICE` and `auto_map` code files", COPIED),
        ]
    else:
        per_shard = Counter(tensor["shard"] for tensor in lock.get("tensors") or [])
        rows = []
        for name in sorted(files):
            if name.endswith(".safetensors"):
                change = f"re-sharded: holds {per_shard[name]} of the copied tensors; every tensor's bytes unchanged"
            elif name == INDEX_FILE:
                change = INDEX_CHANGE
            elif name == CONFIG_FILE:
                change = _config_change(lock, files, source_files)
            elif (source_files.get(name) or {}).get("sha256") == files[name]["sha256"]:
                change = COPIED
            else:
                change = "new: written by the build"
            rows.append((_link(name), change))
    rows.append((OWN_FILES, OWN_CHANGE))
    return [{"file": file, "change": change} for file, change in rows]


def _taken(recipe: Recipe, family: Family, lock: Mapping[str, Any], mtp_layer_count: int) -> str:
    source_lock = lock.get("source") or {}
    pattern = re.compile(re.escape(family.output_prefix).replace(re.escape("{layer}"), r"(\d+)"))
    numbered = "{layer}" in family.output_prefix  # LongCat-Flash's one MTP module has no layer number
    indices = sorted({int(m.group(1)) for t in lock.get("tensors") or [] if numbered and (m := pattern.match(t["name"]))})
    if indices:
        numbers = ", ".join(map(str, indices[:-1])) + (" and " if len(indices) > 1 else "") + str(indices[-1])
        under = family.output_prefix.replace("{layer}", "<i>")
        layers = f"every tensor of MTP layer{'s' if len(indices) > 1 else ''} {numbers} (`{under}*`)"
    else:
        layers = "the MTP layer" if mtp_layer_count == 1 else f"the {mtp_layer_count} MTP layers"
    names = {t["name"] for t in lock.get("tensors") or []}
    extras = [extra.name for extra in family.shipped_extras]
    outside = sorted(name for name in names - set(extras) if not pattern.match(name))  # e.g. Qwen's `mtp.fc.weight`
    block = [f"the MTP block's {', '.join(f'`{name}`' for name in outside)}"] if outside else []
    parts = [layers, *block, *(f"`{name}`" for name in extras)]
    count = len(names)
    if isinstance(recipe.source, HubRef):
        commit = source_lock.get("commit")
        at = f"at commit `{commit}`" if commit else f"at revision `{inline(recipe.source.revision)}` (commit not yet resolved)"
        where = f"[{recipe.source.repo_id}](https://huggingface.co/{recipe.source.repo_id}) {at}"
    else:
        where = "a local copy of the source"
    return (
        f"{count} tensors from {where}: {' and '.join(parts)}. "
        "`draft.lock.json` lists each by name with its sha256 and the source file it came from."
    )


def _licence_files(lock: Mapping[str, Any]) -> tuple[str, str]:
    """How the card points at the shipped licence text and notices (before a build: what the build guarantees)."""
    files = lock.get("files") or {}
    if not files:
        return (
            f"{_link('LICENSE')}, the source's licence file, copied byte for byte (the build refuses a source without one)",
            "the source's `NOTICE` file, when it ships one, copied byte for byte",
        )
    texts = [_link(name) for name in LICENSE_TEXT_FILES if name in files]
    notices = [_link(name) for name in NOTICE_FILES if name in files]
    text = f"{' and '.join(texts)}, the source's licence file, copied byte for byte" if texts else "the source ships no licence file"
    notice = f"{' and '.join(notices)}, the source's notice file, copied byte for byte" if notices else "the source ships no `NOTICE` file"
    return text, notice


def attribution_view(recipe: Recipe, family: Family, lock: Mapping[str, Any], license_id: str, mtp_layer_count: int) -> dict[str, Any]:
    """Every value of the licence and attribution section; refuses a card that could not credit or explain."""
    if recipe.card.credit is None:
        raise InputError(
            f"{recipe.path}: card.credit: is required: the card credits the source's authors by name", hint="e.g. credit: StepFun"
        )
    terms = license_terms(license_id)
    citation = (lock.get("source") or {}).get("citation")
    licence_text, notices = _licence_files(lock)
    source = (
        f"[{recipe.source.repo_id}](https://huggingface.co/{recipe.source.repo_id})"
        if isinstance(recipe.source, HubRef)
        else "the source model"
    )
    return {
        "credit": inline(recipe.card.credit),
        "source": source,
        "license_name": terms.name,
        "license_link": terms.link,
        "license_text": licence_text,
        "notices": notices,
        "taken": _taken(recipe, family, lock, mtp_layer_count),
        "changes": _changes(lock),
        "obligations": terms.obligations,
        "citation": {"fence": fence_for(citation), "text": citation} if citation else None,
    }
