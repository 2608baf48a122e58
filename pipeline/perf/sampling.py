"""The peak allocated size of a folder while a command runs, sampled from its files' block counts."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

SAMPLE_SECONDS = 0.02  # preallocated shards take their whole size at once, so a coarse period sees them


def allocated_bytes(folder: Path) -> int:
    """Bytes the filesystem has allocated to every file below `folder` (st_blocks, not st_size).

    Each inode counts once: a file renamed from one folder to another while the walk is under way
    may be listed in both.
    """
    sizes: dict[int, int] = {}
    pending = [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    sizes[stat.st_ino] = stat.st_blocks * 512
            except FileNotFoundError:  # renamed or removed between the listing and the stat
                continue
    return sum(sizes.values())


class PeakAllocation:
    """`with PeakAllocation(folder) as peak:` samples on a thread; `peak.bytes` is the largest seen."""

    def __init__(self, folder: Path, period: float = SAMPLE_SECONDS) -> None:
        self.folder, self.period = folder, period
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-allocation", daemon=True)

    def _sample(self) -> None:
        while True:
            self.bytes = max(self.bytes, allocated_bytes(self.folder))
            if self._stop.wait(self.period):
                break

    def __enter__(self) -> PeakAllocation:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, allocated_bytes(self.folder))  # the final state counts too
