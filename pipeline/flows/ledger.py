"""Stage records: what each stage read and wrote, so unchanged stages are skipped and runs resume.

A record lives at `<workdir>/stages/<stage>.json`. A stage is current when its input fingerprint
is unchanged and every output it recorded still has the same size and modification time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.checkpoint.files import atomic_write_json

SCHEMA = "mtp-stage-record/v1"


def fingerprint(inputs: dict[str, Any]) -> str:
    """A stable digest of a stage's named inputs (values and file hashes)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def file_state(path: Path) -> dict[str, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass(frozen=True)
class Ledger:
    folder: Path

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def load(self, stage: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path(stage).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None

    def why_stale(self, stage: str, inputs_digest: str, root: Path) -> str | None:
        """None when the stage is current, else a short reason it must run."""
        record = self.load(stage)
        if record is None:
            return "never ran"
        if record.get("fingerprint") != inputs_digest:
            return "inputs changed"
        for name, state in record.get("outputs", {}).items():
            if file_state(root / name) != state:
                return f"output {name} changed or missing"
        return None

    def record(self, stage: str, inputs_digest: str, root: Path, outputs: list[Path], summary: dict[str, Any]) -> None:
        states = {_record_name(path, root): file_state(path) for path in outputs}
        atomic_write_json(
            self.path(stage),
            {
                "schema": SCHEMA,
                "stage": stage,
                "tool_version": __version__,
                "fingerprint": inputs_digest,
                "outputs": states,
                "summary": summary,
            },
        )

    def forget(self, stage: str) -> None:
        self.path(stage).unlink(missing_ok=True)


def _record_name(path: Path, root: Path) -> str:
    """Outputs inside the workdir are recorded relative to it; others (the card beside its recipe) absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path.resolve())
