"""Read the MTP draft classes a vLLM release registers, straight from its wheel (or unpacked tree).

`python -m pipeline.families.registry_scan vllm-0.33.0-*.whl` prints the list the coverage table
is checked against: every entry of `vllm/model_executor/models/registry.py` whose architecture
name contains `MTP` (the speculative-decoding table and the Transformers backend), and the names
of `MTPModelTypes` in `vllm/config/speculative.py`, each with its line. The files are parsed, never
imported, so no vLLM install (or GPU) is needed; the result is committed with its vLLM version.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import zipfile
from collections.abc import Sequence
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

REGISTRY_FILE = "vllm/model_executor/models/registry.py"
SPECULATIVE_FILE = "vllm/config/speculative.py"
# The registry tables an MTP draft architecture can sit in.
REGISTRY_TABLES = ("_SPECULATIVE_DECODING_MODELS", "_TRANSFORMERS_BACKEND_MODELS")
MTP_TYPES = "MTPModelTypes"


class ScanError(ValueError):
    """The wheel lacks a file or a structure the scan reads; the message names which."""


class WheelFiles:
    """Text files of a vLLM wheel (`.whl`) or of its unpacked tree, by their path inside the wheel."""

    def __init__(self, location: Path) -> None:
        self.location = location
        if location.is_file():
            if not zipfile.is_zipfile(location):
                raise ScanError(f"{location}: not a wheel (zip) file")
            with zipfile.ZipFile(location) as archive:
                self._names = archive.namelist()
        elif location.is_dir():
            self._names = [path.relative_to(location).as_posix() for path in location.glob("*.dist-info/METADATA")]
        else:
            raise ScanError(f"{location}: no such wheel or folder")

    def read(self, name: str) -> str:
        try:
            if self.location.is_file():
                with zipfile.ZipFile(self.location) as archive:
                    return archive.read(name).decode("utf-8")
            return (self.location / name).read_text(encoding="utf-8")
        except (KeyError, FileNotFoundError):
            raise ScanError(f"{self.location}: {name} is missing") from None

    def version(self) -> str:
        """The `Version:` of the wheel's `*.dist-info/METADATA`."""
        metadata = [name for name in self._names if name.endswith(".dist-info/METADATA") and name.count("/") == 1]
        if len(metadata) != 1:
            raise ScanError(f"{self.location}: expected one *.dist-info/METADATA, found {len(metadata)}")
        version = HeaderParser().parsestr(self.read(metadata[0])).get("Version")
        if not version:
            raise ScanError(f"{self.location}: {metadata[0]} has no Version")
        return str(version)


def _assigned(tree: ast.Module, name: str) -> ast.expr:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return value
    raise KeyError(name)


def registry_classes(source: str) -> list[dict[str, Any]]:
    """Every `"<arch with MTP>": (module, class)` entry of the registry tables, in file order."""
    tree = ast.parse(source)
    found = []
    for table in REGISTRY_TABLES:
        try:
            value = _assigned(tree, table)
        except KeyError:
            raise ScanError(f"{REGISTRY_FILE}: {table} is not assigned") from None
        if not isinstance(value, ast.Dict):
            raise ScanError(f"{REGISTRY_FILE}: {table} is not a dict literal")
        for key, entry in zip(value.keys, value.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)) or "MTP" not in key.value:
                continue
            parts = entry.elts if isinstance(entry, ast.Tuple) else []
            if len(parts) != 2 or not all(isinstance(part, ast.Constant) and isinstance(part.value, str) for part in parts):
                raise ScanError(f"{REGISTRY_FILE}:{key.lineno}: {key.value} is not a (module, class) pair")
            module, cls = (part.value for part in parts if isinstance(part, ast.Constant))
            found.append({"architecture": key.value, "module": module, "class": cls, "table": table, "line": key.lineno})
    return found


def mtp_model_types(source: str) -> tuple[int, list[str]]:
    """(line, names) of the `MTPModelTypes = Literal[...]` alias."""
    try:
        value = _assigned(ast.parse(source), MTP_TYPES)
    except KeyError:
        raise ScanError(f"{SPECULATIVE_FILE}: {MTP_TYPES} is not assigned") from None
    if not isinstance(value, ast.Subscript):
        raise ScanError(f"{SPECULATIVE_FILE}: {MTP_TYPES} is not a Literal[...]")
    items = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
    names = [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    if len(names) != len(items):
        raise ScanError(f"{SPECULATIVE_FILE}:{value.lineno}: {MTP_TYPES} holds a non-string entry")
    return value.lineno, names


def scan(location: Path) -> dict[str, Any]:
    """The committed list: vLLM version, registered MTP classes and MTP model types, with lines."""
    files = WheelFiles(location)
    line, types = mtp_model_types(files.read(SPECULATIVE_FILE))
    return {
        "vllm": files.version(),
        "generated_by": "python -m pipeline.families.registry_scan <vllm wheel or unpacked wheel>",
        "registry": {"file": REGISTRY_FILE, "classes": registry_classes(files.read(REGISTRY_FILE))},
        "mtp_model_types": {"file": SPECULATIVE_FILE, "line": line, "names": types},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.families.registry_scan",
        description="List the MTP draft classes a vLLM wheel registers (registry.py) and its MTPModelTypes, as JSON.",
    )
    parser.add_argument("wheel", type=Path, help="a vllm-*.whl, or the folder it was unzipped into")
    parser.add_argument("--output", type=Path, help="write the JSON here instead of standard output")
    args = parser.parse_args(argv)
    try:
        result = scan(args.wheel)
    except (ScanError, SyntaxError, UnicodeDecodeError) as error:
        print(
            f"error: {error}\nhint: pass the vLLM wheel as `pip download vllm==X --no-deps` saves it, or its unzipped folder",
            file=sys.stderr,
        )
        return 2
    text = json.dumps(result, indent=1) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
