"""Output discipline: results to stdout (text or --json), progress and warnings to stderr.

Nothing is coloured, so NO_COLOR needs no special case.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass
class Output:
    """The one place that decides what reaches the terminal."""

    json_mode: bool = False
    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose
    stdout: TextIO = sys.stdout
    stderr: TextIO = sys.stderr

    @property
    def show_progress(self) -> bool:
        return self.verbosity >= 0 and not self.json_mode

    def info(self, message: str) -> None:
        """Progress a person may want to see; silent under -q."""
        if self.verbosity >= 0:
            print(message, file=self.stderr, flush=True)

    def detail(self, message: str) -> None:
        """Only under -v."""
        if self.verbosity > 0:
            print(message, file=self.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stderr, flush=True)

    def result(self, human: str, data: Any) -> None:
        """The command's answer: `human` as text, or `data` as JSON under --json."""
        if self.json_mode:
            print(json.dumps(data, indent=2, ensure_ascii=False), file=self.stdout, flush=True)
        elif human:
            print(human, file=self.stdout, flush=True)
