"""Model card rendering: data shaped into plain values, then one strict Jinja2 template.

Front matter is built as data through huggingface_hub's `ModelCardData`; the body comes from
`card_templates/`. The environment is strict (an undefined variable stops the render) and
templates only loop and branch: every value arrives sorted, formatted and, for table cells,
escaped. Nothing here touches the network or the clock, so a render is byte-stable.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCardData

from pipeline import __version__
from pipeline.card.attribution import attribution_view
from pipeline.card.markdown import escape_cell
from pipeline.errors import InputError
from pipeline.families import Family
from pipeline.recipe.loader import HubRef, Recipe

if TYPE_CHECKING:
    import jinja2

# The required top-level card_templates/ folder, shipped inside this package as its data.
TEMPLATES = Path(str(importlib.resources.files("pipeline.card") / "templates"))
TEMPLATE = "mtp-draft.md.j2"
CARD_TAGS = ("speculative-decoding", "mtp", "nextn", "draft-model")
HUB_URL = "https://huggingface.co"
UNRESOLVED = "not yet resolved"
NOT_SHOWN = "—"  # a table cell with no figure
NOT_GIVEN = "not given"  # a label no input file or recipe states


def environment(folder: Path = TEMPLATES) -> jinja2.Environment:
    """The one template environment: strict undefined, no autoescape (Markdown), stable whitespace."""
    import jinja2  # here, not at the top: only card rendering needs it, and it costs every command's start-up

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class CardInputs:
    recipe: Recipe
    family: Family
    lock: Mapping[str, Any]
    config: Mapping[str, Any] | None
    benchmarks: Mapping[str, Any] | None
    plot: str | None = None
    forced_verdict: str | None = None


def front_matter(recipe: Recipe, license_id: str) -> str:
    """The YAML metadata: one base_model (the weight source) so the Hub does not file a merge."""
    tags = [*CARD_TAGS, *recipe.card.tags]
    base_model = None
    if isinstance(recipe.target, HubRef):
        tags.append(f"draft-for:{recipe.target.repo_id}")
    if isinstance(recipe.source, HubRef):
        base_model = recipe.source.repo_id
    data = ModelCardData(
        base_model=base_model,
        license=license_id,
        library_name="vllm",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(tags)),
        base_model_relation=recipe.card.base_model_relation if base_model else None,
    )
    return data.to_yaml()


def _repo_view(ref: Any, locked: Mapping[str, Any]) -> dict[str, str]:
    if isinstance(ref, HubRef):
        commit = locked.get("commit")
        return {
            "name": ref.repo_id,
            "link": f"{HUB_URL}/{ref.repo_id}",
            "cell": escape_cell(ref.repo_id),
            "revision": escape_cell(ref.revision),
            "commit": f"`{commit}`" if commit else UNRESOLVED,
        }
    return {"name": "a local folder", "link": "#provenance", "cell": "a local folder", "revision": "—", "commit": "—"}


def speculative_command(recipe: Recipe) -> str:
    """The exact serve command; the JSON has no spaces so it survives copy-paste into any shell."""
    config = {
        "method": "mtp",
        "model": recipe.destination.repo_id if recipe.destination else "<draft-folder>",
        "num_speculative_tokens": recipe.card.num_speculative_tokens,
    }
    target = recipe.target.repo_id if isinstance(recipe.target, HubRef) else "<target-folder>"
    return f"vllm serve {target} --speculative-config '{json.dumps(config, separators=(',', ':'))}'"


def _k_note(recipe: Recipe, n_predict: int) -> str:
    k = recipe.card.num_speculative_tokens
    if n_predict == 1:
        return f"`num_speculative_tokens` is {k}. The draft has one MTP layer, which every step reuses, so any K is accepted."
    return (
        f"`num_speculative_tokens` is {k}. The draft has {n_predict} MTP layers; step j uses layer j mod {n_predict}, "
        f"so a K above {n_predict} must be a multiple of {n_predict}."
    )


def _why(lock: Mapping[str, Any]) -> list[str]:
    inspect = lock.get("inspect") or {}
    lines = []
    if inspect.get("summary"):
        checked = f" (on {inspect['checked_at']})" if inspect.get("checked_at") else ""
        lines.append(f"Why: {inspect['summary']}{checked}.")
    lines.append("vLLM routes this config to its MTP drafter and loads these tensors by their original names and layer indices.")
    return lines


def redundant_notice(recipe: Recipe, inspect: Mapping[str, Any]) -> str | None:
    """For a draft inspection found redundant: which target commit ships its own MTP, and how to serve it alone.

    Without a `model`, vLLM's MTP drafter loads the target's own MTP layers
    (vllm/config/speculative.py, `SpeculativeConfig.__post_init__`, vLLM 0.33.0).
    """
    if inspect.get("verdict") != "redundant" or not isinstance(recipe.target, HubRef):
        return None
    commit = inspect.get("target_commit")
    config = json.dumps({"method": "mtp", "num_speculative_tokens": recipe.card.num_speculative_tokens}, separators=(",", ":"))
    revision = f" --revision {commit}" if commit else ""
    at = f" at commit `{commit}`" if commit else ""
    return (
        f"This draft is redundant for {recipe.target.repo_id}{at}: that revision ships its own MTP layers. "
        f"Serve it without this draft: `vllm serve {recipe.target.repo_id}{revision} --speculative-config '{config}'`."
    )


def _files(lock: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"name": escape_cell(name), "size": str(entry["size"]), "sha256": entry["sha256"]}
        for name, entry in sorted((lock.get("files") or {}).items())
    ]


def benchmark_view(doc: Mapping[str, Any] | None, plot: str | None) -> dict[str, Any] | None:
    """Tables for the card from the normalized benchmarks file; every cell escaped, nothing recomputed.

    A table appears only when it has rows; each figure names its dataset; a row with no
    speculative run shows the target alone and says so.
    """
    if not doc:
        return None
    rows = []
    ks: set[int] = set()
    alone = []
    for row in doc["summary"]:
        shown = row["display"]
        if row["k"] is not None:
            ks.add(row["k"])
        if row["speculative"] is None:
            alone.append(escape_cell(row["name"]))
        rows.append(
            [
                escape_cell(row["name"]),
                _dataset_cell(row["dataset"], row["synthetic"]),
                escape_cell(shown["baseline_decode_tok_s"]),
                *(
                    escape_cell(shown[key] or NOT_SHOWN)
                    for key in ("speculative_decode_tok_s", "speedup", "acceptance_rate", "acceptance_length")
                ),
                f"{row['baseline']['runs']} + {row['speculative']['runs'] if row['speculative'] else 0}",
            ]
        )
    matrix = doc.get("matrix")
    matrix_view = None
    if matrix:
        measured = [cell for line in matrix["cells"] for cell in line if cell["speedup"] is not None]
        datasets = sorted({_dataset_cell(cell["dataset"], cell["synthetic"]) for cell in measured})
        matrix_view = {
            "name": escape_cell(matrix["name"]),
            "datasets": ", ".join(datasets) if datasets else NOT_GIVEN,
            "k": ", ".join(str(k) for k in matrix.get("k", [])),
            "columns": [f"C={escape_cell(c)}" for c in matrix["concurrencies"]],
            "rows": [
                [escape_cell(context), *(NOT_SHOWN if cell["speedup"] is None else escape_cell(cell["display"]) for cell in cells)]
                for context, cells in zip(matrix["contexts"], matrix["cells"], strict=True)
            ],
        }
    provenance = [
        f"{escape_cell(key.replace('_', ' '))}: {escape_cell(', '.join(str(v) for v in values))}"
        for key, values in sorted((doc.get("provenance") or {}).items())
        if isinstance(values, list) and values
    ]
    dates = (doc.get("provenance") or {}).get("dates")
    if dates:
        provenance.append(f"measured: {escape_cell(dates['first'])} to {escape_cell(dates['last'])}")
    all_cells = [cell for line in (matrix or {}).get("cells", []) for cell in line]
    return {
        "k": ", ".join(str(k) for k in sorted(ks)),
        "synthetic": any(item["synthetic"] for item in [*doc["summary"], *all_cells]),
        "rows": rows,
        "alone": alone,
        "matrix": matrix_view,
        "plot": plot,
        "provenance": provenance,
        "warnings": [escape_cell(w) for w in doc.get("warnings", [])],
    }


def _dataset_cell(dataset: str | None, synthetic: bool) -> str:
    if dataset is None:
        return NOT_GIVEN
    return escape_cell(dataset) + (" (synthetic)" if synthetic else "")


def card_context(inputs: CardInputs) -> dict[str, Any]:
    """Every value the template uses, already shaped."""
    recipe, lock = inputs.recipe, inputs.lock
    source_lock, target_lock = lock.get("source") or {}, lock.get("target") or {}
    n_predict = 0
    if inputs.config is not None:
        # The family's count key, text_config first; Qwen3-Next's config may lack it and vLLM then assumes 1.
        n_predict = inputs.family.declared_mtp_count(inputs.config) or 0
        if inputs.family.mtp_layer_limit is not None:
            n_predict = min(n_predict, inputs.family.mtp_layer_limit)
    else:
        n_predict = len({t["name"].split(".")[2] for t in lock.get("tensors", []) if t["name"].startswith("model.layers.")})
    inspect = lock.get("inspect") or {}
    forced = None
    if inputs.forced_verdict:
        forced = f"Published with --force although inspection found this draft {inputs.forced_verdict}: {inspect.get('summary', 'see the provenance section')}."
    license_id = source_lock.get("license") or recipe.license
    return {
        "title": escape_cell(recipe.card.title or (recipe.destination.repo_id.split("/")[1] if recipe.destination else recipe.name)),
        "draft": recipe.name,
        "mtp_layers": "Multi-Token-Prediction (MTP) layer" if n_predict == 1 else f"{n_predict} Multi-Token-Prediction (MTP) layers",
        "extra_tensors": [f"`{extra.name}`" for extra in inputs.family.shipped_extras],
        "source": _repo_view(recipe.source, source_lock),
        "target": _repo_view(recipe.target, target_lock),
        "why": _why(lock),
        "forced_warning": forced,
        "redundant_notice": redundant_notice(recipe, inspect),
        "vllm_command": speculative_command(recipe),
        "k_note": _k_note(recipe, max(n_predict, 1)),
        "min_vllm": escape_cell(recipe.card.min_vllm) if recipe.card.min_vllm else None,
        "benchmarks": benchmark_view(inputs.benchmarks, inputs.plot),
        "loader_rules_vllm": inputs.family.vllm_release,
        "notes": [*inputs.family.card_notes, *filter(None, [inputs.family.shared_weights_note()])],
        "inspect_line": inspect.get("summary"),
        "tool_version": lock.get("tool_version", __version__),
        "checks": [f"`{c}`" for c in (lock.get("verify") or {}).get("checks", [])],
        "unresolved": list(lock.get("unresolved", [])),
        "files": _files(lock),
        "license": license_id,
        "license_checked": bool(source_lock.get("license")),
        "benchmark_note": " ".join(recipe.card.benchmark_note.split()) if recipe.card.benchmark_note else None,
        "attribution": attribution_view(recipe, inputs.family, lock, license_id, n_predict),
        "changelog": [{"version": escape_cell(n.version), "notes": " ".join(n.notes.split())} for n in recipe.card.release_notes],
    }


def render(inputs: CardInputs, templates: Path = TEMPLATES) -> str:
    """The whole README.md: front matter, then the body."""
    import jinja2

    context = card_context(inputs)
    try:
        body = environment(templates).get_template(TEMPLATE).render(**context)
    except jinja2.UndefinedError as exc:
        raise InputError(f"{templates / TEMPLATE}: undefined template variable ({exc.message})") from None
    return f"---\n{front_matter(inputs.recipe, context['license'])}\n---\n\n{body}"
