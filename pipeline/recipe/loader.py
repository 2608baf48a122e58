"""The recipe (`artifacts/<draft>/draft.yaml`): parsed and validated once, at the boundary.

Past `load_recipe`, stages trust the types. Every problem becomes one `InputError` naming the
file and the dotted field.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.utils import HFValidationError, validate_repo_id

from pipeline.errors import InputError
from pipeline.recipe.fields import Section
from pipeline.remote.calls import RetryPolicy

RECIPE_FILE = "draft.yaml"
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
REVISION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
DRAFT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
BASE_MODEL_RELATIONS = ("adapter", "finetune", "quantized", "merge")  # the four the Hub documents
FETCH_MODES = ("ranges", "shards")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
HUB_LICENSES_FILE = "hub_licenses.txt"


@dataclass(frozen=True)
class HubRef:
    """A repo on a Hub at a revision (branch, tag or full commit id)."""

    repo_id: str
    revision: str = "main"

    @classmethod
    def parse(cls, text: str) -> HubRef:
        """Parse the compact form `org/name` or `org/name@revision`."""
        repo_id, _, revision = text.partition("@")
        validate_repo(repo_id)
        revision = revision or "main"
        validate_revision(revision)
        return cls(repo_id, revision)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class LocalRef:
    """A model folder on disk (relative paths are resolved against the recipe's folder)."""

    path: Path

    def __str__(self) -> str:
        return f"local folder {self.path.name}"


ModelRef = HubRef | LocalRef


# httpx2's default pool (huggingface_hub's client uses it) keeps 20 connections alive
# (httpx2/_config.py: DEFAULT_LIMITS, max_keepalive_connections=20).
MAX_CONNECTIONS = 20


@dataclass(frozen=True)
class FetchOptions:
    mode: str = "ranges"
    connections: int = 8


@dataclass(frozen=True)
class ReleaseNote:
    version: str
    notes: str


@dataclass(frozen=True)
class CardOptions:
    title: str | None = None
    base_model_relation: str = "adapter"
    num_speculative_tokens: int = 1
    min_vllm: str | None = None
    tags: tuple[str, ...] = ()
    release_notes: tuple[ReleaseNote, ...] = ()
    benchmark_note: str | None = None
    credit: str | None = None  # the source's authors by name, as the card credits them


@dataclass(frozen=True)
class Recipe:
    """One draft's description, as written by a person."""

    name: str
    path: Path
    family: str
    source: ModelRef
    target: ModelRef
    destination: HubRef | None
    license: str
    fetch: FetchOptions = field(default_factory=FetchOptions)
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    card: CardOptions = field(default_factory=CardOptions)
    benchmarks: Any = None
    # Ship the embedding/head copies vLLM replaces with the target's (`copy`) or not (`omit`);
    # the family's default when the recipe is silent (`omit` except Step, which always copies).
    shared_weights: str = "copy"

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def benchmarks_folder(self) -> Path:
        """The raw benchmark results beside the recipe (input to bench-import, shipped under benchmarks/raw/)."""
        return self.folder / "benchmarks"


def validate_repo(repo_id: str) -> None:
    """Raise ValueError unless `repo_id` is a valid `org/name` Hub id."""
    if repo_id.count("/") != 1:
        raise ValueError(f"{repo_id!r} is not an org/name repo id")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"{repo_id!r} is not a valid repo id") from exc


def validate_revision(revision: str) -> None:
    """Raise ValueError unless `revision` is a branch or tag name or a full commit id."""
    if not (FULL_SHA.match(revision) or REVISION_NAME.match(revision)) or ".." in revision:
        raise ValueError(f"{revision!r} is not a branch, tag or 40-hex commit id")


def parse_size(value: object) -> int:
    """Parse a byte size such as 5GB, 512MiB or a plain integer."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 5GB")
    if isinstance(value, int):
        number, unit = value, "B"
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)):
        number, unit = int(match.group(1)), (match.group(2) or "B").upper()
    else:
        raise ValueError("must be a size such as 5GB")
    if unit not in SIZE_UNITS:
        raise ValueError(f"unknown unit {unit!r} (use one of {', '.join(SIZE_UNITS)})")
    size = number * SIZE_UNITS[unit]
    if size <= 0:
        raise ValueError("must be positive")
    return size


def _model_ref(value: object, where: str, base: Path) -> ModelRef:
    if isinstance(value, str):
        return HubRef.parse(value)
    section = Section(value, where)
    if "path" in section.data:
        path = Path(section.typed("path", str, required=True))
        section.finish()
        return LocalRef(path if path.is_absolute() else (base / path))
    repo = section.convert("repo", lambda v: _checked(v, validate_repo), required=True)
    revision = section.convert("revision", lambda v: _checked(v, validate_revision), "main")
    section.finish()
    return HubRef(repo, revision)


def _checked(value: object, validator: Callable[[str], None]) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    validator(value)
    return value


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return str(value)

    return check


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("must be a non-negative number")
    return float(value)


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _release_notes(value: object) -> tuple[ReleaseNote, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list")
    notes = []
    for index, item in enumerate(value):
        section = Section(item, f"card.release_notes[{index}]")
        version = section.typed("version", str, required=True)
        text = section.typed("notes", str, required=True)
        section.finish()
        notes.append(ReleaseNote(version, text.strip()))
    return tuple(notes)


def _retries(value: object) -> RetryPolicy:
    section = Section(value, "retries")
    policy = RetryPolicy(
        attempts=section.convert("attempts", _positive_int, RetryPolicy.attempts),
        backoff_seconds=section.convert("backoff_seconds", _non_negative_number, RetryPolicy.backoff_seconds),
    )
    section.finish()
    return policy


def _card(value: object) -> CardOptions:
    section = Section(value, "card")
    card = CardOptions(
        title=section.typed("title", str),
        base_model_relation=section.convert("base_model_relation", _choice(BASE_MODEL_RELATIONS), "adapter"),
        num_speculative_tokens=section.convert("num_speculative_tokens", _positive_int, 1),
        min_vllm=section.typed("min_vllm", str),
        tags=section.convert("tags", _string_list, ()),
        release_notes=section.convert("release_notes", _release_notes, ()),
        benchmark_note=section.typed("benchmark_note", str),
        credit=section.convert("credit", _credit),
    )
    section.finish()
    return card


def _credit(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        raise ValueError("must be the authors' name on one line, e.g. StepFun")
    return " ".join(value.split())


@functools.cache
def hub_license_ids() -> frozenset[str]:
    """The licence identifiers the Hub accepts in a card (committed list; see its header for the source)."""
    text = (importlib.resources.files("pipeline.recipe") / HUB_LICENSES_FILE).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _hub_license(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    known = hub_license_ids()
    if value not in known:
        close = difflib.get_close_matches(value.lower(), sorted(known), n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{value!r} is not a Hub licence identifier{suggestion}")
    return value


def _check_release_fields(recipe: Recipe) -> None:
    """A recipe with a destination is a release: it must name whom to credit, under a licence the card can explain."""
    from pipeline.card.licenses import has_section

    credit = recipe.card.credit
    if isinstance(recipe.source, HubRef) and credit is not None and credit.lower() == recipe.source.repo_id.split("/")[0].lower():
        raise ValueError(f"card.credit: {credit!r} is the source's organisation id, not the authors' name")
    if recipe.destination is None:
        return
    if credit is None:
        raise ValueError("card.credit: is required for a release: name the source's authors, e.g. StepFun")
    if not has_section(recipe.license):
        raise ValueError(f"license: {recipe.license!r} has no section in card_templates/licenses/ yet; a release under it is refused")


def _connections(value: object) -> int:
    count = _positive_int(value)
    if count > MAX_CONNECTIONS:
        raise ValueError(
            f"must be at most {MAX_CONNECTIONS}, not {count}: huggingface_hub's HTTP client keeps"
            f" {MAX_CONNECTIONS} connections alive, so more would open a new connection for every part"
        )
    return count


def _fetch(value: object) -> FetchOptions:
    section = Section(value, "fetch")
    options = FetchOptions(
        mode=section.convert("mode", _choice(FETCH_MODES), "ranges"),
        connections=section.convert("connections", _connections, 8),
    )
    section.finish()
    return options


def _benchmarks(value: object) -> Any:
    from pipeline.bench.spec import parse_benchmark_spec

    try:
        return parse_benchmark_spec(value)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("benchmarks") else f"benchmarks.{message}") from exc


def parse_recipe(data: object, path: Path, name: str) -> Recipe:
    """Build a Recipe from already-loaded YAML; raises ValueError naming the field."""
    from pipeline.families import FAMILIES
    from pipeline.families.base import SHARED_WEIGHTS_CHOICES

    top = Section(data, "")
    family = top.convert("family", _choice(tuple(FAMILIES)), required=True)
    shared_weights = top.convert(
        "shared_weights",
        lambda value: FAMILIES[family].with_shared_weights(_choice(SHARED_WEIGHTS_CHOICES)(value)).shared_weights,
        FAMILIES[family].shared_weights,
    )
    destination = top.get("destination")
    recipe = Recipe(
        name=name,
        path=path,
        family=family,
        source=top.convert("source", lambda v: _model_ref(v, "source", path.parent), required=True),
        target=top.convert("target", lambda v: _model_ref(v, "target", path.parent), required=True),
        destination=(
            top.convert("destination", lambda v: _hub_only(_model_ref(v, "destination", path.parent))) if destination is not None else None
        ),
        license=top.convert("license", _hub_license, required=True),
        fetch=top.convert("fetch", _fetch, FetchOptions()),
        retries=top.convert("retries", _retries, RetryPolicy()),
        max_shard_bytes=top.convert("max_shard_size", parse_size, DEFAULT_MAX_SHARD_BYTES),
        card=top.convert("card", _card, CardOptions()),
        benchmarks=top.convert("benchmarks", _benchmarks, None),
        shared_weights=shared_weights,
    )
    top.finish()
    _check_release_fields(recipe)
    return recipe


def _hub_only(ref: ModelRef) -> HubRef:
    if not isinstance(ref, HubRef):
        raise ValueError("must be a Hub repo, not a local path")
    return ref


def load_recipe(path: Path) -> Recipe:
    """Load and validate a recipe file; any problem is an InputError naming file and field."""
    name = path.resolve().parent.name if path.name == RECIPE_FILE else path.stem
    if not DRAFT_NAME.match(name):
        raise InputError(f"{path}: draft name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: recipe not found", hint="create it, or pass --recipe PATH") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        # PyYAML notices an unclosed bracket or quote only lines later; name where it was opened too.
        opened = getattr(exc, "context_mark", None)
        if opened is not None and mark is not None and opened.line != mark.line:
            problem += f" ({getattr(exc, 'context', None) or 'started'} at line {opened.line + 1})"
        raise InputError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return parse_recipe(data, path, name)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def recipe_path(draft: str | None, recipe: str | None, artifacts: Path = Path("artifacts")) -> Path:
    """The recipe file named by `--draft NAME` or `--recipe PATH`."""
    if recipe:
        return Path(recipe)
    if draft:
        if not DRAFT_NAME.match(draft):
            raise InputError(f"--draft: {draft!r} is not a draft name")
        return artifacts / draft / RECIPE_FILE
    raise InputError("no draft given", hint="pass --draft NAME or --recipe PATH")
