"""Atomic writes and streaming hashes: every output appears whole under its final name or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pipeline.errors import InputError

PUBLISHED_FILE_MODE = 0o644  # mkstemp makes 0600; outputs are meant to be read by others
HASH_CHUNK_BYTES = 8 * 1024 * 1024  # large reads keep hashing near disk speed without holding much memory


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces `path` only if the block finishes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, PUBLISHED_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write `data` atomically and return its sha256."""
    with atomic_output(path) as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def dump_json(document: Any) -> bytes:
    """The one JSON layout for files we write: stable, readable, newline-terminated."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice: which value a reader keeps is up to the reader."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKeyError(f"duplicate key {key[:80]!r}")
        document[key] = value
    return document


def loads_strict(text: str | bytes) -> Any:
    """Parse untrusted JSON, refusing duplicate keys (two readers could otherwise disagree)."""
    return json.loads(text, object_pairs_hook=_reject_duplicates)


def atomic_write_json(path: Path, document: Any) -> str:
    """Write `document` as JSON atomically and return the file's sha256."""
    return atomic_write_bytes(path, dump_json(document))


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remove_stale_temp_files(folder: Path) -> None:
    """Remove temp files a killed run left behind; they never carry a final name."""
    if folder.is_dir():
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


def read_json(path: Path, hint: str | None = None) -> Any:
    """A JSON file the pipeline wrote or reads; missing or malformed is one InputError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing", hint=hint) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: not valid JSON") from None
