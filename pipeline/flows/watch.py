"""watch: has upstream moved since a draft's lock, and what does that mean for the draft?

For each draft with a resolved lock, resolves the source and target revisions the recipe names and
compares them with the locked commits, downloading no weights: the source through file listings,
small files and shard headers (`watch_source`), the target through `inspect` at its new commit.
With a proposal, writes the re-pinned lock and the re-rendered card for review (`watch_propose`).
Refuses (raises) only on unreadable input or a remote that keeps failing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.checkpoint.files import sha256_bytes
from pipeline.checkpoint.readers import CARD_FILE, CONFIG_FILE, INDEX_FILE
from pipeline.checkpoint.selection import TOKENIZER_FILES
from pipeline.checkpoint.sources import ModelSource
from pipeline.flows.build import inspect_summary
from pipeline.flows.inspect import inspect_recipe
from pipeline.flows.watch_report import DraftWatch, TargetWatch
from pipeline.flows.watch_source import SourceComparison, compare_source
from pipeline.recipe.loader import HubRef
from pipeline.recipe.lock import load_lock, same_finding
from pipeline.stages.context import Context

# The target files a build records in the lock (the fetch stage's list).
TARGET_FILES = (CONFIG_FILE, INDEX_FILE, CARD_FILE, *TOKENIZER_FILES)
REBUILD_NOTE = "rebuild at the new source commit: the proposal cannot know these bytes without downloading them"


@dataclass(frozen=True)
class WatchResult:
    """A draft's finding, and the lock a proposal would commit (None when nothing changed)."""

    report: DraftWatch
    lock: dict[str, Any] | None


def watch_draft(ctx: Context, today: str) -> WatchResult:
    """Compare the draft in `ctx` with upstream; `today` dates a new inspect finding."""
    recipe = ctx.recipe
    source_repo = recipe.source.repo_id if isinstance(recipe.source, HubRef) else None
    target_repo = recipe.target.repo_id if isinstance(recipe.target, HubRef) else None
    lock = load_lock(ctx.artifacts.lock)
    skipped = _why_skipped(recipe.source, recipe.target, lock)
    if skipped is not None or lock is None:
        return WatchResult(DraftWatch(recipe.name, source_repo, target_repo, skipped=skipped), None)
    assert isinstance(recipe.source, HubRef) and isinstance(recipe.target, HubRef)

    new_source = ctx.open_source(recipe.source, "source", ctx.api, recipe.retries)
    new_target = ctx.open_source(recipe.target, "target", ctx.api, recipe.retries)
    source_commit, target_commit = new_source.resolve(), new_target.resolve()
    assert source_commit is not None and target_commit is not None
    comparison = None
    if source_commit != lock["source"]["commit"]:
        old_source = ctx.open_source(HubRef(recipe.source.repo_id, lock["source"]["commit"]), "source", ctx.api, recipe.retries)
        comparison = compare_source(old_source, new_source, ctx.family, lock)
    target, finding = None, None
    if target_commit != lock["target"]["commit"] or comparison is not None:
        pins = {"source": HubRef(recipe.source.repo_id, source_commit), "target": HubRef(recipe.target.repo_id, target_commit)}
        pinned = Context(recipe=recipe, workdir=ctx.workdir, out=ctx.out, api=ctx.api, open_source=ctx.open_source, pins=pins)
        report = inspect_recipe(pinned, today)
        finding = inspect_summary(report)
        old = lock.get("inspect") or {}
        target = TargetWatch(
            lock["target"]["commit"], target_commit, old.get("verdict"), report.verdict, tuple(report.reasons), report.summary_line()
        )
    result = DraftWatch(recipe.name, source_repo, target_repo, comparison.watch if comparison else None, target)
    if not result.changed:
        return WatchResult(result, None)
    assert finding is not None
    return WatchResult(result, repinned_lock(lock, comparison, new_target, finding))


def _why_skipped(source: Any, target: Any, lock: Mapping[str, Any] | None) -> str | None:
    if not isinstance(source, HubRef) or not isinstance(target, HubRef):
        return "the source or target is a local folder; only Hub repos move"
    if lock is None:
        return "no committed lock"
    if not lock["source"].get("commit") or not lock["target"].get("commit"):
        return "the lock is not resolved yet; its first build resolves it"
    return None


def repinned_lock(
    lock: Mapping[str, Any], source: SourceComparison | None, target: ModelSource, finding: Mapping[str, Any]
) -> dict[str, Any]:
    """The committed lock moved to the new commits.

    When the source's draft bytes are proven unchanged this is exactly what a build at the new
    commits writes. Otherwise the tensors not proven equal, the draft's files and the verify record
    are cleared and listed under `unresolved`, for a rebuild to fill in.
    """
    fresh = copy.deepcopy(dict(lock))
    fresh["target"]["commit"] = target.resolve()
    fresh["target"]["files"] = {name: sha256_bytes(target.read(name)) for name in TARGET_FILES if target.exists(name)}
    previous = lock.get("inspect") or {}
    fresh["inspect"] = dict(previous) if same_finding(previous, finding) else dict(finding)
    if source is None:
        return fresh
    fresh["source"]["commit"] = source.watch.new_commit
    fresh["source"]["files"] = dict(sorted(source.files.items()))
    fresh["source"]["shards_read"] = sorted({shard for shard in source.tensor_shards.values() if shard})
    fresh["source"]["shard_sha256"] = {shard: source.shard_sha256[shard] for shard in fresh["source"]["shards_read"]}
    for tensor in fresh["tensors"]:
        tensor["source_file"] = source.tensor_shards[tensor["name"]]
        if tensor["name"] in source.changed_tensors:
            tensor["sha256"] = None
    if source.watch.state == "rebuild-needed":
        fresh["files"] = {}
        fresh["verify"] = {"passed": False, "checks": []}
        fresh["unresolved"] = [
            *lock.get("unresolved", []),
            *(f"source: {reason}" for reason in source.watch.reasons),
            f"{_cleared(source.changed_tensors)}files and verify: {REBUILD_NOTE}",
        ]
    return fresh


def _cleared(tensors: tuple[str, ...]) -> str:
    return f"tensors[].sha256 of {len(tensors)} tensor(s), " if tensors else ""
