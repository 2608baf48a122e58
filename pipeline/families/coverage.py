"""Which of vLLM's registered MTP classes this project supports, and why the others are not yet.

A class is supported when a family names it as its `vllm_class`; every other class registered
by the vLLM release needs a reason here. The README's coverage table is rendered from this data
and the class list `registry_scan` read from the wheel (`tests/data/vllm-<release>/mtp_classes.json`);
`python -m pipeline.families.coverage <that list>` prints the table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.families import FAMILIES

NOT_REPLAYED = "not yet: its `load_weights` is not replayed here and no checkpoint of it has been read"


TRANSFORMERS_BACKEND = (
    "not a model family: the Transformers modeling backend builds the MTP from the target's config (speculative.py:715-719)"
)

# Why a registered MTP architecture is not supported, by registry key. Lines are vLLM 0.33.0's.
NOT_YET: dict[str, str] = {
    "MiMoV2OmniMTPModel": "multimodal-only: routed from `MiMoV2OmniForCausalLM`, a multimodal model (registry.py:522)",
    "EagleDeepSeekMTPModel": "not an MTP layer copy: an EAGLE draft model (`EagleDeepseekV3ForCausalLM`, deepseek_eagle.py:194)",
    "Dots3NoteMTPModel": NOT_REPLAYED,
    "BailingMoeV3MTPModel": NOT_REPLAYED,
    "BailingMoeV25MTPModel": NOT_REPLAYED,
    "InklingMTPModel": NOT_REPLAYED,
    "Gemma4MTPModel": (
        "not an MTP layer copy: the draft is a separate assistant checkpoint (`gemma4_assistant`, speculative.py:1106-1115) with its own"
        " decoder layers, hidden size, `pre_projection` / `post_projection` and tied draft-width embedding (gemma4_mtp.py:336-403, 481-488);"
        " the release's loaders (gemma4.py:1504-1506, gemma4_mm.py:2254-2274, whose ignore list holds only vision and audio"
        " prefixes) map names through tables that name none of these tensors (gemma4.py:1404-1419, gemma4_mm.py:1066-1078; unknown"
        " names raise, utils.py:441-448), so a quantized release has none to drop, and the assistant keeps its own quantization"
        " (utils.py:985-1007)"
    ),
    "ErnieMTPModel": NOT_REPLAYED,
    "ExaoneMoeMTP": NOT_REPLAYED,
    "Exaone4_5_MTP": NOT_REPLAYED,
    "GlmOcrMTPModel": "multimodal-only: routed from `GlmOcrForConditionalGeneration`, an OCR model (registry.py:436)",
    "OpenPanguMTPModel": NOT_REPLAYED,
    "ParseAuxMTPModel": "multimodal-only: routed from `RadioMBartPrefixForCausalLM` (Nemotron Parse), a document-image model (registry.py:648, speculative.py:721-732)",
    "InternS2MobiusMTP": NOT_REPLAYED,
    "HYV3MTPModel": NOT_REPLAYED,
    "HYV4MTPModel": NOT_REPLAYED,
    "TransformersForMTP": TRANSFORMERS_BACKEND,
    "TransformersMoEForMTP": TRANSFORMERS_BACKEND,
}


def supported_by() -> dict[str, str]:
    """vLLM class name -> the family that builds drafts for it."""
    return {family.vllm_class: family.name for family in FAMILIES.values()}


def coverage_rows(classes: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(architecture, class, status) for every registered MTP class, in registry order.

    ValueError names a class with neither a family nor a reason, or with both."""
    families = supported_by()
    rows = []
    for entry in classes:
        architecture, cls = str(entry["architecture"]), str(entry["class"])
        family, reason = families.get(cls), NOT_YET.get(architecture)
        if (family is None) == (reason is None):
            state = "both a family and a reason" if family else "neither a family nor a reason"
            raise ValueError(f"{architecture} ({cls}): has {state} in pipeline/families/coverage.py")
        rows.append((architecture, cls, f"supported: `{family}`" if family else str(reason)))
    return rows


def markdown_table(listing: Mapping[str, Any]) -> str:
    """The README's coverage table for a committed class list (`registry_scan` output)."""
    lines = [
        f"| vLLM {listing['vllm']} architecture | class | status |",
        "|---|---|---|",
    ]
    lines += [f"| `{arch}` | `{cls}` | {status} |" for arch, cls, status in coverage_rows(listing["registry"]["classes"])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m pipeline.families.coverage tests/data/vllm-<release>/mtp_classes.json", file=sys.stderr)
        return 2
    try:
        listing = json.loads(Path(args[0]).read_text())
        table = markdown_table(listing)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        print(
            f"error: {args[0]}: unreadable class list ({error})\nhint: regenerate it with python -m pipeline.families.registry_scan",
            file=sys.stderr,
        )
        return 2
    except ValueError as error:
        print(f"error: {error}\nhint: give the class a family (its vllm_class) or a reason in NOT_YET", file=sys.stderr)
        return 1
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
