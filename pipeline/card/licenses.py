"""Licence sections: each licence's full name, link, tell-tale text and what it asks of a redistributor.

One Markdown file per Hub licence id in `card_templates/licenses/<id>.md`: YAML front matter
(`name`, `link`, `text_markers`) and a body, written for this project, that the card quotes as
data (never evaluated as a template). A licence without a file cannot be released: the card would
have nothing to tell recipients about their obligations.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.errors import InputError

LICENSE_SECTIONS = Path(str(importlib.resources.files("pipeline.card") / "templates" / "licenses"))
FRONT_MATTER = "---\n"


@dataclass(frozen=True)
class LicenseTerms:
    """What the card and verify need to know about one licence."""

    id: str
    name: str
    link: str
    text_markers: tuple[str, ...]  # phrases every copy of the licence text contains
    obligations: str  # Markdown: what a redistributor must do, in the project's words

    def text_lacks(self, text: str) -> list[str]:
        """The markers missing from a licence file's text (whitespace-insensitive, so wrapping does not matter)."""
        flat = " ".join(text.split())
        return [marker for marker in self.text_markers if " ".join(marker.split()) not in flat]


def section_path(license_id: str, folder: Path = LICENSE_SECTIONS) -> Path:
    return folder / f"{license_id}.md"


def has_section(license_id: str, folder: Path = LICENSE_SECTIONS) -> bool:
    return "/" not in license_id and section_path(license_id, folder).is_file()


def license_terms(license_id: str, folder: Path = LICENSE_SECTIONS) -> LicenseTerms:
    """The terms of `license_id`; InputError when no section exists yet or the file is malformed."""
    if not has_section(license_id, folder):
        raise InputError(
            f"{section_path(license_id, folder)}: no licence section for {license_id!r}; a release under it is refused",
            hint="write that file (name, link, text_markers and the redistributor's obligations in our own words) and have it reviewed",
        )
    return _load(section_path(license_id, folder))


@functools.cache
def _load(path: Path) -> LicenseTerms:
    text = path.read_text(encoding="utf-8")
    head, separator, body = text.removeprefix(FRONT_MATTER).partition(f"\n{FRONT_MATTER}")
    meta = yaml.safe_load(head) if text.startswith(FRONT_MATTER) and separator else None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: must start with YAML front matter between '---' lines")
    name, link, markers = meta.get("name"), meta.get("link"), meta.get("text_markers")
    if not isinstance(name, str) or not isinstance(link, str) or not link.startswith("https://"):
        raise InputError(f"{path}: name and link (an https URL) are required")
    if not isinstance(markers, list) or not markers or not all(isinstance(m, str) and m.strip() for m in markers):
        raise InputError(f"{path}: text_markers: must be a non-empty list of phrases")
    if not body.strip():
        raise InputError(f"{path}: the obligations text after the front matter is empty")
    return LicenseTerms(path.stem, name, link, tuple(markers), body.strip())
