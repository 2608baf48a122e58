"""Attestation subjects: every file one release commits, by its path in the repo and its sha256.

The release workflow writes them from the release plan before anything is uploaded, attests them
(build provenance, in the `sha256sum` format `actions/attest` reads), and the upload refuses unless
the files it is about to commit are exactly the attested ones, so what is published is what was
attested, file for file.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.checkpoint.files import atomic_write_bytes
from pipeline.errors import CheckFailed, InputError
from pipeline.stages.upload import UploadPlan

# The files of the release commit's tree that this release provides; `keep` and `delete` are not ours.
COMMITTED_ACTIONS = ("add", "change", "unchanged")
CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def release_subjects(plan: UploadPlan) -> dict[str, str]:
    """Path in the repo -> sha256 of every file the release's commit holds from this release."""
    return {f.path: f.sha256 for f in plan.files if f.action in COMMITTED_ACTIONS}


def write_subjects(path: Path, subjects: dict[str, str]) -> None:
    """`sha256  path` lines, sorted by path."""
    atomic_write_bytes(path, "".join(f"{digest}  {name}\n" for name, digest in sorted(subjects.items())).encode("utf-8"))


def read_subjects(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: missing", hint="write it with: python -m pipeline upload --dry-run --write-subjects PATH") from None
    subjects: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = CHECKSUM_LINE.match(line)
        if match is None:
            raise InputError(f"{path}:{number}: not a `sha256  path` line")
        if match[2] in subjects:
            raise InputError(f"{path}:{number}: {match[2]} is listed twice")
        subjects[match[2]] = match[1]
    return subjects


def check_attested(plan: UploadPlan, attested: Path) -> None:
    """Refuse a release whose files differ in any way from the attested list."""
    expected = read_subjects(attested)
    actual = release_subjects(plan)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            raise CheckFailed(f"{attested}: {name} was attested but is not in this release", hint="attest and upload the same build")
        if name not in expected:
            raise CheckFailed(f"{name}: in this release but not attested in {attested}", hint="attest and upload the same build")
        if expected[name] != actual[name]:
            raise CheckFailed(
                f"{name}: sha256 {actual[name][:12]} differs from the attested {expected[name][:12]} ({attested})",
                hint="attest and upload the same build",
            )
