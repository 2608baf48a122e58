"""Markdown pieces that cards, release summaries and pull-request bodies share."""

from __future__ import annotations

import re


def escape_cell(value: object) -> str:
    """Text safe inside a Markdown table cell: no column breaks, no raw HTML, one line."""
    text = str(value)
    for raw, safe in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("`", "\\`")):
        text = text.replace(raw, safe)
    return " ".join(text.split())


def fence_for(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so quoted data can never close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def fenced(text: str, info: str = "") -> str:
    """`text` as a Markdown code block that nothing inside it can close."""
    fence = fence_for(text)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}\n"
