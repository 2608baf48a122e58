"""The draft lock (`artifacts/<draft>/draft.lock.json`): resolved revisions and every byte's sha256.

Written by a build from its fetch, extract and verify records and committed, so reviewers see a
release as a diff; a `--locked` build must reproduce it exactly or stop, naming what differs.
Fields that cannot be known yet (a draft whose source was never fetched) are listed under
`unresolved` instead of being filled with invented values.

`source.shard_sha256` records the Hub's LFS sha256 of every source shard holding a draft tensor,
so `watch` can tell from a file listing alone whether a new source commit changed the draft's
bytes. Locks written before it existed lack it; a lock without it still reproduces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline.checkpoint.files import atomic_write_bytes, atomic_write_json
from pipeline.checkpoint.readers import CARD_FILE, read_card_citation
from pipeline.errors import CheckFailed, InputError
from pipeline.families import Family, Geometry
from pipeline.recipe.layout import REVIEWED_CONFIG, Artifacts, Workdir
from pipeline.recipe.loader import HubRef, LocalRef, ModelRef, Recipe

if TYPE_CHECKING:
    from pipeline.checkpoint.sources import ModelSource

SCHEMA = "mtp-draft-lock/v1"
UNLOCKED_KEYS = ("tool_version", "inspect")
DIFF_ORDER = ("source", "target", "tensors", "files", "verify", "inspect")
# Fields added after the first locks were committed: a committed lock that lacks one is not a difference.
LATER_FIELDS = ("source.shard_sha256",)


def _ref(ref: ModelRef, commit: str | None) -> dict[str, Any]:
    if isinstance(ref, LocalRef):
        return {"kind": "local", "commit": None}
    return {"kind": "hub", "repo": ref.repo_id, "revision": ref.revision, "commit": commit}


def build_lock(
    recipe: Recipe, workdir: Workdir, inspect: Mapping[str, Any] | None = None, source: ModelSource | None = None
) -> dict[str, Any]:
    """The lock document for a finished, verified build in `workdir`.

    `source` is the opened source the build read; its file listing gives each shard's LFS sha256
    (None for a local folder). Without it the lock has no `shard_sha256`.
    """
    fetch = _read(workdir.fetch_manifest)
    extract = _read(workdir.extract_report)
    verify = _read(workdir.verify_report)
    if not verify.get("passed"):
        raise CheckFailed(f"{workdir.verify_report}: verify did not pass; no lock is written for an unverified build")
    source_files = fetch["source"]["files"]
    tensors = [
        {
            "name": tensor["name"],
            "dtype": tensor["dtype"],
            "shape": tensor["shape"],
            "sha256": tensor["sha256"],
            "source_file": tensor["source_file"],
            "shard": extract["tensors"][tensor["name"]]["shard"],
        }
        for tensor in fetch["tensors"]
    ]
    shards_read = sorted({t["source_file"] for t in fetch["tensors"]})
    return {
        "schema": SCHEMA,
        "draft": recipe.name,
        "family": recipe.family,
        "tool_version": __version__,
        "source": {
            **_ref(recipe.source, fetch["source"]["commit"]),
            "license": recipe.license,
            "citation": _citation(workdir),
            "files": {name: {"size": f["size"], "sha256": f["sha256"]} for name, f in sorted(source_files.items())},
            "shards_read": shards_read,
            **({"shard_sha256": {shard: source.lfs_sha256(shard) for shard in shards_read}} if source is not None else {}),
        },
        "target": {
            **_ref(recipe.target, fetch["target"]["commit"]),
            "files": {n: f["sha256"] for n, f in sorted(fetch["target"]["files"].items())},
        },
        "inspect": dict(inspect) if inspect else None,
        "tensors": tensors,
        "files": verify["files"],
        "changes": verify.get("changes", {}),
        "verify": {"passed": True, "checks": [check["id"] for check in verify["checks"]]},
        "unresolved": [],
    }


def pending_lock(recipe: Recipe, family: Family, geometry: Geometry) -> dict[str, Any]:
    """A lock for a draft whose source has not been fetched: names, dtypes and shapes from the
    family and a known geometry; every hash and commit left null and listed as unresolved."""
    return {
        "schema": SCHEMA,
        "draft": recipe.name,
        "family": recipe.family,
        "tool_version": __version__,
        "source": {**_ref(recipe.source, None), "license": None, "citation": None, "files": {}, "shards_read": []},
        "target": {**_ref(recipe.target, None), "files": {}},
        "inspect": None,
        "tensors": [
            {"name": t.name, "dtype": "BF16", "shape": list(t.shape), "sha256": None, "source_file": None, "shard": None}
            for t in family.expected_tensors(geometry)
        ],
        "files": {},
        "changes": {},
        "verify": {"passed": False, "checks": []},
        "unresolved": [
            "source.commit and target.commit: the revisions have not been resolved",
            "tensors[].sha256, source_file and shard: the source has not been fetched",
            "files: no draft has been built; sizes and sha256 appear after the first build",
            "inspect: the target has not been inspected",
            "source.license and source.citation: the source card has not been read; the recipe expects the license",
            "changes: the draft config has not been compared with the source's",
        ],
    }


def _citation(workdir: Workdir) -> str | None:
    """The BibTeX the source card asks users to cite, copied as data for the draft's card."""
    card = workdir.source_files / CARD_FILE
    return read_card_citation(card.read_text(encoding="utf-8", errors="replace")) if card.is_file() else None


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing", hint="run the build first") from None


def load_lock(path: Path) -> dict[str, Any] | None:
    """A committed lock, or None when the draft has none yet."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise InputError(f"{path}: not valid JSON") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InputError(f"{path}: schema: expected {SCHEMA}")
    return document


def differences(expected: Mapping[str, Any], actual: Mapping[str, Any], path: str = "") -> list[str]:
    """Dotted paths where two lock documents differ.

    The tool version may differ (a newer tool may rebuild the same bytes), and so may `inspect`:
    it describes the target on the day it was checked, and publish checks it again. A field of
    `LATER_FIELDS` that the expected (committed) lock lacks is not compared.
    """
    found: list[str] = []
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        keys = sorted(set(expected) | set(actual))
        if not path:  # report causes before their effects: a changed tensor before the file holding it
            keys.sort(key=lambda k: DIFF_ORDER.index(k) if k in DIFF_ORDER else len(DIFF_ORDER))
        for key in keys:
            if key in UNLOCKED_KEYS and not path:
                continue
            if f"{path}.{key}" in LATER_FIELDS and key not in expected:
                continue
            found += differences(expected.get(key), actual.get(key), f"{path}.{key}" if path else key)  # type: ignore[arg-type]
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            label = left.get("name", index) if isinstance(left, Mapping) else index
            found += differences(left, right, f"{path}[{label}]")
    elif expected != actual:
        found.append(path)
    return found


def same_finding(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Two inspect records that differ at most in the day they were made."""
    if not old:
        return False
    return {k: v for k, v in old.items() if k != "checked_at"} == {k: v for k, v in new.items() if k != "checked_at"}


def pinned(ref: ModelRef, locked: Mapping[str, Any] | None) -> ModelRef:
    """The recipe's ref with its revision replaced by the locked commit, for reproducible rebuilds."""
    if isinstance(ref, HubRef) and locked and locked.get("commit"):
        return HubRef(ref.repo_id, locked["commit"])
    return ref


def write_or_check(
    recipe: Recipe,
    workdir: Workdir,
    artifacts: Artifacts,
    *,
    locked: bool,
    inspect: Mapping[str, Any] | None = None,
    source: ModelSource | None = None,
) -> tuple[Path, bool]:
    """Write the lock and reviewed config into the draft's artifacts folder, or (locked) refuse any difference.

    Returns (lock path, whether the committed files changed).
    """
    lock_path = artifacts.lock
    committed = load_lock(lock_path)
    if committed and inspect and same_finding(committed.get("inspect"), inspect):
        inspect = committed["inspect"]  # an unchanged finding keeps its date, so the lock does not churn daily
    fresh = build_lock(recipe, workdir, inspect, source)
    config_path = artifacts.config
    built_config = (workdir.draft / REVIEWED_CONFIG).read_bytes()
    if locked:
        if committed is None:
            raise CheckFailed(
                f"{lock_path}: missing; a locked build needs a committed lock", hint="run the build without --locked and commit the lock"
            )
        diff = differences(committed, fresh)
        if diff:
            more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
            raise CheckFailed(f"{lock_path}: the build does not reproduce the lock at {diff[0]}{more}")
        if not config_path.exists() or config_path.read_bytes() != built_config:
            raise CheckFailed(f"{config_path}: differs from the built draft config.json")
        return lock_path, False
    changed = committed != fresh or not config_path.exists() or config_path.read_bytes() != built_config
    if changed:
        atomic_write_json(lock_path, fresh)
        atomic_write_bytes(config_path, built_config)
    return lock_path, changed
