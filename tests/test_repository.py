"""The repository checks itself: lint, formatting, CLI help and README coverage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)  # type: ignore[attr-defined]


def _ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("ruff is not installed; install the test extra: pip install -e '.[test]'")
    return [found]


def test_ruff_lint_is_clean() -> None:
    result = subprocess.run([*_ruff(), "check", "pipeline", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = subprocess.run([*_ruff(), "format", "--check", "pipeline", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_subcommand_has_help_an_example_and_a_readme_mention() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, parser in _subcommands().items():
        text = parser.format_help()  # type: ignore[attr-defined]
        assert parser.description, name  # type: ignore[attr-defined]
        assert "Example:" in text and "python -m pipeline" in text, name
        assert re.search(rf"python -m pipeline {re.escape(name)}\b", readme), f"README does not show `python -m pipeline {name}`"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme


def test_guarantees_table_counts_match_the_suite() -> None:
    from tests.test_corpus import CORPUS
    from tests.test_fault_campaigns import DROP_CAMPAIGNS, PUBLISH_CRASH_POINTS
    from tests.test_malformed_inputs import RECIPES, SOURCE_DAMAGE
    from tests.test_resume import EXTRACT_CRASH_POINTS, FETCH_CRASH_POINTS
    from tests.test_verify_failures import DRAFT_DAMAGE

    readme = (ROOT / "README.md").read_text()
    assert f"| {len(CORPUS) + len(RECIPES) + len(SOURCE_DAMAGE)} inputs |" in readme
    assert f"| {len(DRAFT_DAMAGE) + 3} damages |" in readme  # + NaN in a source tensor, two target geometries
    crash_points = len(PUBLISH_CRASH_POINTS) + len(EXTRACT_CRASH_POINTS) + len(FETCH_CRASH_POINTS) + 1  # + the Hub fetch killed mid-tensor
    assert f"| {crash_points} crash points |" in readme
    # drop campaigns + 4 storm statuses + 4 fault kinds in the Hub build tests
    assert f"| {DROP_CAMPAIGNS + 4 + 4} fault scenarios |" in readme


def test_types_check() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.fail("mypy is not installed; install the test extra: pip install -e '.[test]'")
    result = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _locked(path: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (version, sha256 hashes, the `# via` sources) of a `uv pip compile --generate-hashes` file."""
    entries: dict[str, tuple[str, list[str], list[str]]] = {}
    current: str | None = None
    in_via = False
    for line in path.read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pinned:
            current, in_via = canonicalize_name(pinned[1]), False
            entries[current] = (pinned[2], [], [])
        elif current and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            entries[current][1].append(digest[1])
        elif current and (via := re.match(r"^\s+# via(?: (.+))?$", line)):
            in_via = True
            if via[1]:
                entries[current][2].append(via[1])
        elif current and in_via and (source := re.match(r"^\s+#\s+(.+)$", line)):
            entries[current][2].append(source[1])
        else:
            assert line.startswith("#") or not line.strip(), f"{path}: a line the lock format does not have: {line}"
    return entries


def test_the_release_lock_matches_pyproject() -> None:
    """requirements/release.txt pins, with hashes, exactly what pyproject.toml depends on, and was
    made by the command the README gives; the build lock pins the declared build backend."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = (ROOT / "README.md").read_text()
    for lock, source, declared in [
        ("requirements/release.txt", "mtp-draft-pipeline (pyproject.toml)", project["project"]["dependencies"]),
        ("requirements/build.txt", "-r requirements/build.in", project["build-system"]["requires"]),
    ]:
        path = ROOT / lock
        command = path.read_text().splitlines()[1].strip("# ")
        assert command.startswith("uv pip compile ") and "--generate-hashes" in command and command in readme, command
        entries = _locked(path)
        assert all(hashes for _, hashes, _ in entries.values()), f"{lock}: an entry without hashes"
        direct = {name for name, (_, _, via) in entries.items() if source in via}
        wanted = {canonicalize_name(Requirement(text).name): Requirement(text) for text in declared}
        assert direct == set(wanted), f"{lock}: pins {sorted(direct)} for {sorted(wanted)}: regenerate it (README: Releasing)"
        for name, requirement in wanted.items():
            assert requirement.specifier.contains(entries[name][0]), f"{lock}: {name}=={entries[name][0]} is outside {requirement}"
    build_in = [line for line in (ROOT / "requirements" / "build.in").read_text().splitlines() if not line.startswith("#")]
    assert build_in == project["build-system"]["requires"]
