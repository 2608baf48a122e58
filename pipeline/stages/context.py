"""What the runner hands every stage: the context, and the shape of a stage.

A stage module exports one `STAGE`: its name, a one-line summary, the named inputs it reads
(hashed into a fingerprint, so an unchanged stage is skipped) and the function that runs it and
returns the files it wrote with a short summary. The runner orders them; no stage imports another.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from pipeline.checkpoint.files import sha256_file
from pipeline.checkpoint.sources import LocalSource, ModelSource, RememberedReads
from pipeline.cli.output import Output
from pipeline.families import FAMILIES, Family
from pipeline.recipe.layout import Artifacts, Workdir, artifacts_for
from pipeline.recipe.loader import HubRef, LocalRef, ModelRef, Recipe
from pipeline.remote.calls import RetryPolicy, default_api

SourceOpener = Callable[[ModelRef, str, HfApi, RetryPolicy], ModelSource]
StageOutcome = tuple[list[Path], dict[str, Any]]  # the files a stage wrote, and its summary


def open_local_or_hub(ref: ModelRef, role: str, api: HfApi, retries: RetryPolicy) -> ModelSource:
    """The default opener: folders directly, Hub repos through the huggingface_hub client."""
    if isinstance(ref, LocalRef):
        return LocalSource(ref.path, f"{role} folder {ref.path.name}")
    from pipeline.remote.source import HubSource

    return HubSource(ref, role, api=api, attempts=retries.attempts, backoff_seconds=retries.backoff_seconds)


@dataclass(frozen=True)
class Context:
    """What every stage may use: the recipe, the workdir, the output and the way to reach sources.

    `pins` maps a role to the locked commit to read instead of the recipe's revision; it is fixed
    when the context is made. Opened sources are cached per context, so a resolved commit is reused.
    """

    recipe: Recipe
    workdir: Workdir
    out: Output
    api: HfApi = field(default_factory=default_api)
    open_source: SourceOpener = open_local_or_hub
    force: bool = False
    pins: dict[str, HubRef] = field(default_factory=dict)
    opened: dict[str, ModelSource] = field(default_factory=dict, compare=False)

    @property
    def family(self) -> Family:
        """The recipe's family, configured with its `shared_weights` choice (checked when the recipe loads)."""
        return FAMILIES[self.recipe.family].with_shared_weights(self.recipe.shared_weights)

    @functools.cached_property
    def artifacts(self) -> Artifacts:
        """Where the review files go; decided once per context (it lists the recipe's folder)."""
        local = tuple(ref.path for ref in (self.recipe.source, self.recipe.target) if isinstance(ref, LocalRef))
        return artifacts_for(self.recipe.path, local, self.workdir)

    def ref(self, role: str) -> ModelRef:
        """The source or target as this run reads it: pinned to the locked commit when pinned."""
        return self.pins.get(role) or (self.recipe.source if role == "source" else self.recipe.target)

    def source(self, role: str) -> ModelSource:
        """The opened source or target, once per context."""
        if role not in self.opened:
            # Fetch, its planner and inspect all read the small files: each is requested once per run.
            self.opened[role] = RememberedReads(self.open_source(self.ref(role), role, self.api, self.recipe.retries))
        return self.opened[role]


@dataclass(frozen=True)
class Stage:
    """One stage as the runner sees it."""

    name: str
    summary: str
    inputs: Callable[[Context], dict[str, Any]]
    run: Callable[[Context], StageOutcome]


def file_digest(path: Path) -> str | None:
    """The sha256 of a file that a stage reads, or None when it does not exist yet."""
    return sha256_file(path) if path.is_file() else None


def folder_state(folder: Path) -> list[tuple[str, int, int]]:
    """Cheap identity of a folder's files (name, size, mtime), for fingerprints."""
    if not folder.is_dir():
        return []
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
