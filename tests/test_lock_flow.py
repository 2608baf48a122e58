"""lock: a draft whose committed lock is pending is built against the embedded Hub, and the
resolved lock, config and card are proposed on `lock/<draft>`; a locked build at those pins then
reproduces the same draft, and a lock that is already resolved is left alone."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import git

from pipeline.checkpoint.files import atomic_write_json
from pipeline.families import FAMILIES
from pipeline.recipe.loader import load_recipe
from pipeline.recipe.lock import pending_lock
from pipeline.rehearsal.hub import HubServer
from pipeline.rehearsal.synthetic import SyntheticSpec, step_config
from tests.conftest import RecipeMaker, run_cli
from tests.hub_fixtures import SOURCE_REPO, TARGET_REPO, files_of
from tests.release_fixtures import DRAFT, Release

FOLDER = f"artifacts/{DRAFT}"
REVIEW_FILES = {f"{FOLDER}/draft.lock.json", f"{FOLDER}/config.json", f"{FOLDER}/README.md"}
BRANCH = f"lock/{DRAFT}"
SHA256 = re.compile(r"[0-9a-f]{64}")


def commit_pending_draft(release: Release) -> dict[str, Any]:
    """Commit the recipe, its pending lock (as the family and the synthetic geometry predict it) and
    the card rendered from that lock: what a new draft looks like before anything reached the Hub."""
    recipe = load_recipe(release.recipe)
    family = FAMILIES[recipe.family]
    pending = pending_lock(recipe, family, family.read_geometry(step_config(SyntheticSpec())))
    atomic_write_json(release.folder / "draft.lock.json", pending)
    rendered = release.cli("card")
    assert rendered.code == 0, rendered.stderr
    release.commit_and_tag(None)
    release.repo.git.branch("-M", "main")
    return pending


def _blob(commit: git.Commit, path: str) -> bytes:
    return bytes((commit.tree / path).data_stream.read())


def _lock(release: Release, *argv: str) -> dict[str, Any]:
    result = release.cli("lock", "--json", *argv)
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_lock_propose_resolves_every_entry_of_a_pending_lock_and_a_locked_build_reproduces_the_draft(
    release: Release, tmp_path: Path
) -> None:
    pending = commit_pending_draft(release)
    head = release.repo.head.commit

    report = _lock(release, "--propose")

    # the checkout is left as it was: same branch and commit, nothing changed or staged
    assert release.repo.head.commit == head and release.repo.active_branch.name == "main"
    assert not release.repo.is_dirty(untracked_files=True)
    assert report["state"] == "built" and report["proposal"]["branch"] == BRANCH
    proposed = release.repo.commit(BRANCH)
    assert report["proposal"]["commit"] == proposed.hexsha and proposed.parents == (head,)
    assert {diff.a_path for diff in head.diff(proposed)} == REVIEW_FILES == set(report["proposal"]["files"])

    lock = json.loads(_blob(proposed, f"{FOLDER}/draft.lock.json"))
    assert lock["unresolved"] == []
    assert lock["source"]["commit"] == release.api.repo_info(SOURCE_REPO).sha
    assert lock["target"]["commit"] == release.api.repo_info(TARGET_REPO).sha
    assert lock["source"]["license"] == "apache-2.0" and lock["source"]["files"] and lock["target"]["files"]
    # the build finds exactly the tensors the pending lock predicted, now with their bytes' sha256
    assert [(t["name"], t["dtype"], t["shape"]) for t in lock["tensors"]] == [
        (t["name"], t["dtype"], t["shape"]) for t in pending["tensors"]
    ]
    assert all(SHA256.fullmatch(t["sha256"]) and t["source_file"] and t["shard"] for t in lock["tensors"])
    assert lock["files"] and all(SHA256.fullmatch(f["sha256"]) for f in lock["files"].values())
    assert lock["source"]["shard_sha256"] and all(SHA256.fullmatch(s) for s in lock["source"]["shard_sha256"].values())
    assert lock["inspect"]["verdict"] == "needed" and lock["inspect"]["target_commit"] == lock["target"]["commit"]
    assert lock["verify"]["passed"] and lock["verify"]["checks"]
    built = files_of(release.workdir / "draft")
    assert {name: hashlib.sha256(data).hexdigest() for name, data in built.items()} == {
        name: f["sha256"] for name, f in lock["files"].items()
    }
    assert _blob(proposed, f"{FOLDER}/config.json") == built["config.json"]

    pull_request = (release.workdir / "lock" / "pull-request.md").read_text()
    title = (
        f"# {DRAFT}: resolve the lock at source {lock['source']['commit'][:12]}, target {lock['target']['commit'][:12]} (inspect: needed)"
    )
    assert pull_request.startswith(title + "\n\n")
    assert f"| Source | {SOURCE_REPO} | main | `{lock['source']['commit']}` |" in pull_request
    checks = len(json.loads((release.workdir / "verify.json").read_text())["checks"])
    assert f"### Verify\n\n- passed: {checks} checks; the draft is {len(lock['files'])} files" in pull_request
    assert f"### Inspect\n\n- **needed**: {lock['inspect']['summary']}" in pull_request
    assert "```diff\n" in pull_request and "+- Why: checked against" in pull_request

    # On the proposed branch: the card is a fresh render of the proposed lock, and a locked build in
    # a fresh workdir, at the pinned commits, reproduces the lock and every byte of the draft.
    release.repo.git.checkout(BRANCH)
    assert release.cli("card", "--check").code == 0
    again = run_cli("build", "--locked", "--recipe", str(release.recipe), "--workdir", str(tmp_path / "rebuild"))
    assert again.code == 0, again.stderr
    assert "lock: reproduced" in again.stdout
    assert files_of(tmp_path / "rebuild" / "draft") == built


def test_lock_on_a_resolved_lock_changes_nothing_reaches_no_hub_and_exits_0(release: Release) -> None:
    release.prepare(tag=None)
    head, before = release.repo.head.commit, files_of(release.folder)
    release.server.stats.reset()

    report = _lock(release, "--propose")

    assert report["state"] == "resolved" and report["proposal"] is None and report["build"] is None
    assert release.server.stats.requests == 0
    assert files_of(release.folder) == before and release.repo.head.commit == head
    assert not release.repo.is_dirty(untracked_files=True)
    assert BRANCH not in [h.name for h in release.repo.heads]
    assert not (release.workdir / "lock").exists()


def test_lock_without_propose_writes_the_review_files_beside_the_recipe_then_has_nothing_left_to_do(release: Release) -> None:
    commit_pending_draft(release)

    first = _lock(release)

    assert first["state"] == "built" and first["proposal"] is None
    assert first["build"]["inspect"]["verdict"] == "needed" and first["verify"]["passed"]
    changed = {item.a_path for item in release.repo.index.diff(None)} | set(release.repo.untracked_files)
    assert changed == REVIEW_FILES  # the lock and card changed in place, the config is new
    assert (release.folder / "config.json").read_bytes() == (release.workdir / "draft" / "config.json").read_bytes()
    assert json.loads((release.folder / "draft.lock.json").read_text())["unresolved"] == []
    assert release.cli("card", "--check").code == 0
    assert release.cli("build", "--locked").code == 0

    second = _lock(release)

    assert second["state"] == "resolved"


def test_propose_outside_a_git_repository_is_refused_before_reaching_the_hub(
    make_recipe: RecipeMaker, workdir: Path, hub_endpoint: HubServer
) -> None:
    hub_endpoint.stats.reset()
    result = run_cli("lock", "--propose", "--recipe", str(make_recipe()), "--workdir", str(workdir))
    assert result.code == 2
    assert "not inside a git repository" in result.stderr.splitlines()[0]
    assert not workdir.exists()


def test_lock_keeps_the_commits_a_rebuild_proposal_pinned_and_resolves_the_rest(release: Release, synthetic_pairs: dict[str, Path]) -> None:
    from tests.test_watch import MTP_TENSOR, _commit_file, _flip_one_value, _shard_of

    release.prepare(tag=None)
    before = {t["name"]: t["sha256"] for t in json.loads((release.folder / "draft.lock.json").read_text())["tensors"]}
    shard = _shard_of(synthetic_pairs["source"], MTP_TENSOR)
    retrained = _flip_one_value((synthetic_pairs["source"] / shard).read_bytes(), MTP_TENSOR)
    pinned = _commit_file(release, SOURCE_REPO, shard, retrained, "Retrain")
    assert release.cli("watch", "--propose").code == 1
    release.repo.git.checkout(f"watch/{DRAFT}")  # the watcher's rebuild proposal, merged
    assert json.loads((release.folder / "draft.lock.json").read_text())["unresolved"]
    readme = (synthetic_pairs["source"] / "README.md").read_bytes() + b"\nA later paragraph.\n"
    newest = _commit_file(release, SOURCE_REPO, "README.md", readme, "Reword the card")  # upstream moves on

    report = _lock(release)

    lock = json.loads((release.folder / "draft.lock.json").read_text())
    assert report["state"] == "built" and lock["unresolved"] == []
    assert lock["source"]["commit"] == pinned != newest  # the reviewed commit, not whatever main is now
    after = {t["name"]: t["sha256"] for t in lock["tensors"]}
    assert after[MTP_TENSOR] != before[MTP_TENSOR] and all(after[name] == before[name] for name in before if name != MTP_TENSOR)


def test_propose_refuses_review_files_outside_the_repository_before_any_build(
    tmp_path: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    recipe = make_recipe()
    git.Repo.init(recipe.parent)
    (recipe.parent / "tokenizer.json").write_text("{}")  # a model's file: the folder is not the draft's own
    result = run_cli("lock", "--propose", "--recipe", str(recipe), "--workdir", str(workdir))
    assert result.code == 2
    assert (
        result.stderr.splitlines()[0]
        == f"error: {workdir / 'review' / 'draft.lock.json'}: outside the repository at {recipe.parent.resolve()}"
    )
    assert not (workdir / "fetch").exists() and not (workdir / "lock").exists()


def test_a_release_refuses_the_pending_lock_naming_lock_and_selects_the_draft_once_the_proposal_is_merged(release: Release) -> None:
    commit_pending_draft(release)
    artifacts = str(release.root / "artifacts")
    release.repo.create_tag(f"{DRAFT}/v1.0.0")
    refused = run_cli("drafts", "--artifacts", artifacts, "--tag", f"{DRAFT}/v1.0.0", "--merged-into", "main")
    assert refused.code == 1 and ": unresolved: source.commit and target.commit" in refused.stderr
    assert f"hint: run the lock workflow for {DRAFT} (or: python -m pipeline lock --draft {DRAFT} --propose)" in refused.stderr

    _lock(release, "--propose")
    release.repo.git.merge(BRANCH, ff_only=True)  # the reviewed pull request, merged
    release.repo.create_tag(f"{DRAFT}/v1.0.1")
    selected = run_cli("drafts", "--artifacts", artifacts, "--tag", f"{DRAFT}/v1.0.1", "--merged-into", "main", "--json")

    assert selected.code == 0, selected.stderr
    assert json.loads(selected.stdout)[0]["draft"] == DRAFT
