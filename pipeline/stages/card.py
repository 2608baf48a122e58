"""card: render the model card from committed data, and check or diff it for reviewers.

Reads the recipe, `artifacts/<draft>/draft.lock.json`, the reviewed `config.json`, the normalized
`benchmarks.json` (when the recipe declares benchmarks) and `card_templates/`. Writes
`artifacts/<draft>/README.md`. Needs no weights. Refuses an undefined template variable, a lock
that is missing, or benchmarks declared but not imported.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

from pipeline.card.render import CardInputs, render
from pipeline.checkpoint.files import atomic_write_bytes, read_json, sha256_bytes
from pipeline.checkpoint.readers import CARD_FILE
from pipeline.errors import InputError
from pipeline.families import Family
from pipeline.recipe.layout import REVIEWED_CONFIG, Artifacts
from pipeline.recipe.loader import Recipe
from pipeline.recipe.lock import load_lock
from pipeline.recipe.versions import latest_release
from pipeline.remote.calls import RetryPolicy, call
from pipeline.stages.context import Context, Stage, StageOutcome, file_digest

BENCHMARKS_FILE = "benchmarks.json"
PLOT_FILE = "speedup.png"


@dataclass(frozen=True)
class CardStageInputs:
    recipe: Recipe
    family: Family
    benchmarks_dir: Path
    artifacts: Artifacts
    forced_verdict: str | None = None

    @property
    def readme(self) -> Path:
        return self.artifacts.readme


def inputs_for(ctx: Context, forced_verdict: str | None = None) -> CardStageInputs:
    """The card's inputs as a run sees them: the recipe, the reviewed files and the imported benchmarks."""
    return CardStageInputs(ctx.recipe, ctx.family, ctx.workdir.benchmarks, ctx.artifacts, forced_verdict)


@dataclass(frozen=True)
class CardResult:
    readme: Path
    sha256: str
    changed: bool


def render_card(inputs: CardStageInputs) -> str:
    """A fresh render from the committed inputs; parsed back with ModelCard so bad metadata stops here."""
    recipe = inputs.recipe
    lock = load_lock(inputs.artifacts.lock)
    if lock is None:
        raise InputError(f"{inputs.artifacts.lock}: missing", hint="run the build to write the lock")
    config_path = inputs.artifacts.config
    config = read_json(config_path) if config_path.exists() else None
    benchmarks, plot = None, None
    if recipe.benchmarks is not None:
        path = inputs.benchmarks_dir / BENCHMARKS_FILE
        if not path.exists():
            raise InputError(f"{path}: missing", hint="run the bench-import stage first")
        benchmarks = read_json(path)
        plot = f"benchmarks/{PLOT_FILE}" if (inputs.benchmarks_dir / PLOT_FILE).exists() else None
    text = render(CardInputs(recipe, inputs.family, lock, config, benchmarks, plot, inputs.forced_verdict))
    try:
        ModelCard(text)
    except Exception as exc:  # the library raises several types for invalid metadata
        raise InputError(f"{inputs.readme}: rendered front matter is invalid ({exc})") from None
    return text


def run(inputs: CardStageInputs) -> CardResult:
    """Render and write README.md into the draft's review folder, only if it changed."""
    text = render_card(inputs)
    data = text.encode("utf-8")
    changed = not inputs.readme.exists() or inputs.readme.read_bytes() != data
    if changed:
        atomic_write_bytes(inputs.readme, data)
    return CardResult(inputs.readme, sha256_bytes(data), changed)


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name))


def check(inputs: CardStageInputs, built_config: Path | None) -> str:
    """The diff between committed files and a fresh render (empty when they agree)."""
    fresh = render_card(inputs)
    committed = inputs.readme.read_text(encoding="utf-8") if inputs.readme.exists() else ""
    diff = unified_diff(committed, fresh, f"committed/{CARD_FILE}", f"rendered/{CARD_FILE}")
    reviewed = inputs.artifacts.config
    if built_config is not None and built_config.exists():
        old = reviewed.read_text(encoding="utf-8") if reviewed.exists() else ""
        diff += unified_diff(old, built_config.read_text(encoding="utf-8"), f"committed/{REVIEWED_CONFIG}", f"built/{REVIEWED_CONFIG}")
    return diff


def diff_against_release(inputs: CardStageInputs, api: HfApi, policy: RetryPolicy) -> tuple[str | None, str]:
    """(latest release tag, diff from its card to a fresh render); an unreleased destination diffs against nothing."""
    recipe = inputs.recipe
    if recipe.destination is None:
        raise InputError(f"{recipe.path}: destination: is required to compare with the Hub")
    destination = recipe.destination.repo_id
    try:
        tags = [
            ref.name
            for ref in call(
                "read release tags",
                lambda: api.list_repo_refs(destination).tags,
                policy,
                repo=destination,
                passthrough=(RepositoryNotFoundError,),
            )
        ]
    except RepositoryNotFoundError:
        tags = []
    latest = latest_release(tags)
    old = ""
    if latest is not None:
        try:
            path = call(
                f"read the card of {latest.tag}",
                lambda: hf_hub_download(destination, CARD_FILE, revision=latest.tag, endpoint=api.endpoint, token=api.token),
                policy,
                repo=destination,
                passthrough=(RemoteEntryNotFoundError,),
            )
            old = Path(path).read_text(encoding="utf-8")
        except RemoteEntryNotFoundError:
            old = ""
    label = latest.tag if latest else None
    return label, unified_diff(old, render_card(inputs), f"hub/{label or 'none'}/{CARD_FILE}", f"rendered/{CARD_FILE}")


def _inputs(ctx: Context) -> dict[str, Any]:
    artifacts = ctx.artifacts
    return {
        "recipe": file_digest(ctx.recipe.path),
        "lock": file_digest(artifacts.lock),
        "config": file_digest(artifacts.config),
        "benchmarks": file_digest(ctx.workdir.benchmarks / BENCHMARKS_FILE),
        "plot": file_digest(ctx.workdir.benchmarks / PLOT_FILE),
    }


def _run(ctx: Context) -> StageOutcome:
    result = run(inputs_for(ctx))
    ctx.out.info(f"card: {result.readme} {'updated' if result.changed else 'unchanged'}")
    return [result.readme], {"readme": str(result.readme), "sha256": result.sha256, "changed": result.changed}


STAGE = Stage("card", "render the model card README.md from the lock, config and benchmarks", _inputs, _run)
