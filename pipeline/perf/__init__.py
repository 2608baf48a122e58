"""Performance benchmark: bytes moved, parallel fetch, hashing, verify and peak memory, each beside its baseline.

`python -m pipeline.perf` writes a synthetic Step-3.7 source at the released tensor shapes (or a
fraction of them, `--scale`), serves it from the embedded Hub with a per-connection bandwidth cap,
and runs each build stage as a child process, so each stage's peak RSS is its own. Every figure
stands beside its baseline measured in the same run: the naive downloads, one connection, `cp`
plus `sha256sum` of the same bytes. Then the vocabulary grows 4x (the embedding and the three
shared heads grow 4x) and the stages run again, to show their memory does not follow tensor size.
It prints a table and writes it as JSON. The test suite never runs it: a default run moves GBs.
"""

from __future__ import annotations

import os

# The embedded Hub speaks LFS only, and the client reads these when it is first imported.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
