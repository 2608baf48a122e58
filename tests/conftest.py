"""Shared fixtures: tiny synthetic checkpoints built once per session, recipes, and a CLI runner."""

from __future__ import annotations

import os

os.environ["HF_HUB_DISABLE_XET"] = "1"  # the embedded Hub speaks LFS only; set before huggingface_hub is imported
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.cli.output import Output
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target

pytest_plugins = ["tests.hub_fixtures", "tests.release_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite committed cards and configs from a fresh render, for review")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> CliResult:
    """Call the CLI's main in-process and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Output(stdout=out, stderr=err))
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine source/target pair; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("synthetic")
    write_source(root / "source", SyntheticSpec())
    write_target(root / "target", SyntheticSpec())
    return root


RecipeMaker = Callable[..., Path]


@pytest.fixture
def make_recipe(tmp_path: Path, synthetic_root: Path) -> RecipeMaker:
    """Copy the synthetic pair into tmp_path and write a recipe pointing at the copies."""

    def make(extra: str = "", *, source: Path | None = None, target: Path | None = None) -> Path:
        for role, given in (("source", source), ("target", target)):
            destination = tmp_path / role
            if not destination.exists():
                shutil.copytree(given or synthetic_root / role, destination)
        recipe = tmp_path / "recipe" / "draft.yaml"
        recipe.parent.mkdir(exist_ok=True)
        recipe.write_text(f"family: step3p7\nsource: {{path: ../source}}\ntarget: {{path: ../target}}\nlicense: apache-2.0\n{extra}")
        return recipe

    return make


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"
