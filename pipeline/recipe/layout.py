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
