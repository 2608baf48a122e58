"""Fixtures for release tests: a project checkout with one draft, and a seeded embedded Hub."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from huggingface_hub import HfApi

from pipeline.rehearsal.hub import HubServer
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import CliResult, run_cli
from tests.hub_fixtures import FAKE_TOKEN, SOURCE_REPO, TARGET_REPO, seed_repo

DRAFT = "tiny-draft"
DESTINATION = "release-test/Tiny-MTP-draft"
RECIPE = f"""family: step3p7
source: {SOURCE_REPO}
target: {TARGET_REPO}
destination: {{repo: {DESTINATION}}}
license: apache-2.0
max_shard_size: 200KB
retries: {{attempts: 3, backoff_seconds: 0.05}}
card:
  title: Tiny draft
  credit: mtp-draft-pipeline (synthetic weights)
  release_notes:
    - {{version: v0.9.0, notes: An older version.}}
    - {{version: v1.0.0, notes: First release.}}
    - {{version: v1.0.1, notes: A patch release.}}
    - {{version: v1.1.0, notes: A minor release.}}
"""


@pytest.fixture(scope="module")
def synthetic_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("publish-synthetic")
    return {
        "source": write_source(root / "source", SyntheticSpec()),
        "target": write_target(root / "target", SyntheticSpec()),
        "redundant-target": write_target(root / "redundant", SyntheticSpec(), "mtp-shard"),
    }


class Release:
    """A project checkout with one draft, a seeded embedded Hub, and helpers to tag and publish."""

    def __init__(self, root: Path, server: HubServer) -> None:
        self.root = root
        self.server = server
        self.api = HfApi(endpoint=server.url, token=FAKE_TOKEN)
        self.folder = root / "artifacts" / DRAFT
        self.recipe = self.folder / "draft.yaml"
        self.workdir = root / "build"
        self.repo = git.Repo.init(root)
        self.repo.config_writer().set_value("user", "name", "Release Bot").release()
        self.repo.config_writer().set_value("user", "email", "release@example.invalid").release()

    def cli(self, *argv: str) -> CliResult:
        return run_cli(*argv, "--recipe", str(self.recipe), "--workdir", str(self.workdir))

    def commit_and_tag(self, tag: str | None) -> None:
        self.repo.git.add(A=True)
        self.repo.index.commit(f"release {tag}")
        if tag:
            self.repo.create_tag(f"{DRAFT}/{tag}")

    def prepare(self, tag: str | None = "v1.0.0") -> None:
        """Build (writes lock and config), render the card, commit, tag."""
        assert self.cli("build").code == 0
        assert self.cli("card").code == 0
        self.commit_and_tag(tag)

    def tags(self) -> dict[str, str]:
        return {t.name: t.target_commit for t in self.api.list_repo_refs(DESTINATION).tags}

    def commits(self) -> list[str]:
        return [c.commit_id for c in self.api.list_repo_commits(DESTINATION)]


@pytest.fixture
def release(tmp_path: Path, hub_endpoint: HubServer, synthetic_pairs: dict[str, Path]) -> Release:
    api = HfApi(endpoint=hub_endpoint.url, token=FAKE_TOKEN)
    seed_repo(api, SOURCE_REPO, synthetic_pairs["source"])
    seed_repo(api, TARGET_REPO, synthetic_pairs["target"])
    checkout = Release(tmp_path / "project", hub_endpoint)
    checkout.folder.mkdir(parents=True)
    checkout.recipe.write_text(RECIPE)
    (checkout.root / ".gitignore").write_text("build/\n")
    return checkout
