"""The layout of `build/<draft>/`: heavy outputs and stage records, never committed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def fetch(self) -> Path:
        return self.root / "fetch"

    @property
    def source_files(self) -> Path:
        return self.fetch / "source"

    @property
    def target_files(self) -> Path:
        return self.fetch / "target"

    @property
    def landed_shards(self) -> Path:
        """Where fetch lands the draft's shards before extract seals them into `draft/`."""
        return self.fetch / "shards"

    def landed_shard(self, shard: str) -> Path:
        """Where fetch lands one shard's tensor bytes, header space left empty, before extract seals it."""
        return self.landed_shards / (shard.removesuffix(".safetensors") + ".unsealed")

    @property
    def fetch_manifest(self) -> Path:
        return self.fetch / "fetch.json"

    @property
    def draft(self) -> Path:
        return self.root / "draft"

    @property
    def extract_report(self) -> Path:
        return self.root / "extract.json"

    @property
    def verify_report(self) -> Path:
        return self.root / "verify.json"

    @property
    def benchmarks(self) -> Path:
        return self.root / "benchmarks"

    @property
    def stages(self) -> Path:
        return self.root / "stages"


LOCK_FILE = "draft.lock.json"
REVIEWED_CONFIG = "config.json"
CARD_FILE = "README.md"

# Files that mark a folder as a model's (or someone else's), never a draft's own review folder.
FOREIGN_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".index.json")
FOREIGN_FILE_NAMES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json")
RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Artifacts:
    """Where one draft's reviewed files live: the lock, the reviewed config and the card."""

    folder: Path

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def config(self) -> Path:
        return self.folder / REVIEWED_CONFIG

    @property
    def readme(self) -> Path:
        return self.folder / CARD_FILE


def owns_folder(recipe_path: Path, model_folders: tuple[Path, ...]) -> bool:
    """Whether the recipe's folder is its draft's own: no model files, no other recipe, no source or target.

    The pipeline writes review files only into such a folder, so it never overwrites a file it did
    not write and two recipes never share one lock.
    """
    folder = recipe_path.resolve().parent
    if any(folder == model.resolve() for model in model_folders):
        return False
    for entry in folder.iterdir():
        name = entry.name
        if entry.is_file() and (name.endswith(FOREIGN_FILE_SUFFIXES) or name in FOREIGN_FILE_NAMES):
            return False
        if entry.is_file() and name.endswith(RECIPE_SUFFIXES) and entry.resolve() != recipe_path.resolve():
            return False
    return True


def artifacts_for(recipe_path: Path, model_folders: tuple[Path, ...], workdir: Workdir) -> Artifacts:
    """The recipe's own folder when it owns it, else `<workdir>/review/`."""
    if owns_folder(recipe_path, model_folders):
        return Artifacts(recipe_path.parent)
    return Artifacts(workdir.root / "review")
