"""The command line as a user meets it: option clashes, refusals under --json, and status offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import RecipeMaker, run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_draft_and_recipe_together_are_a_usage_error() -> None:
    result = run_cli("build", "--draft", "step-3.7-flash-mtp-draft", "--recipe", str(ROOT / "artifacts" / "demo" / "draft.yaml"))

    assert result.code == 2
    assert result.stderr == "error: python -m pipeline build: argument --recipe: not allowed with argument --draft\n"


def test_a_refusal_under_json_also_says_why_on_stdout(tmp_path: Path) -> None:
    missing = tmp_path / "draft.yaml"

    result = run_cli("inspect", "--recipe", str(missing), "--json")

    assert result.code == 2
    assert json.loads(result.stdout) == {
        "error": f"{missing}: recipe not found",
        "hint": "create it, or pass --recipe PATH",
        "exit_code": 2,
    }
    assert result.stderr.splitlines()[0] == f"error: {missing}: recipe not found"


def test_status_asks_an_unreachable_hub_once_and_says_it_cannot_tell(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    recipe = tmp_path / "draft.yaml"
    recipe.write_text(
        "family: step3p7\nsource: org/source\ntarget: org/target\nlicense: apache-2.0\nretries: {attempts: 6, backoff_seconds: 5}\n"
    )

    result = run_cli("status", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"), "--json")

    assert result.code == 0, result.stderr
    rows = {row["stage"]: row for row in json.loads(result.stdout)["stages"]}
    assert rows["fetch"]["reason"].startswith("cannot tell: source org/source@main")
    assert "last of 1 attempt(s)" in rows["fetch"]["reason"]


def test_card_renders_through_the_runner_so_status_sees_it(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe("card: {credit: mtp-draft-pipeline (synthetic weights)}\n")
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0

    carded = run_cli("card", "--recipe", str(recipe), "--workdir", str(workdir), "--json")
    status = run_cli("status", "--recipe", str(recipe), "--workdir", str(workdir), "--json")

    assert carded.code == 0 and json.loads(carded.stdout)["readme"].endswith("README.md")
    assert {row["stage"]: row["current"] for row in json.loads(status.stdout)["stages"]}["card"] is True


def test_starting_the_cli_leaves_the_libraries_of_single_stages_unloaded() -> None:
    """numpy (verify's scan), git (releases) and jinja2 (card) load where they are used: every
    command's start-up, a stage's included, would otherwise pay for all three."""
    probe = "import sys, pipeline.cli.main; print(sorted(m for m in ('numpy', 'git', 'jinja2') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()

    assert loaded == "[]"
