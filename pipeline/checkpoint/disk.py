"""Free space on the filesystem a folder lives on, and the one refusal when a build would not fit."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CheckFailed


@dataclass(frozen=True)
class DiskCheck:
    """The bytes a build still has to write into `folder`, beside what its filesystem has free."""

    folder: Path
    needed: int
    free: int

    @property
    def fits(self) -> bool:
        return self.needed <= self.free

    def describe(self) -> str:
        return f"{self.folder}: {self.free} bytes ({_gb(self.free)}) free, the build needs {self.needed} bytes ({_gb(self.needed)})"


def _gb(count: int) -> str:
    return f"{count / 1e9:.3g} GB"


def free_bytes(folder: Path) -> int:
    """Free bytes (for an unprivileged user) on the filesystem that holds, or will hold, `folder`."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_room(folder: Path, needed: int) -> DiskCheck:
    return DiskCheck(folder, needed, free_bytes(folder))


def refuse_unless_room(check: DiskCheck) -> None:
    """Stop before the first byte is written when the filesystem cannot hold the build."""
    if not check.fits:
        raise CheckFailed(check.describe(), hint="free disk space, or point --workdir at a larger filesystem")
