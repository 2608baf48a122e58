"""Which release a tag publishes: exactly the tag named, at HEAD, from the default branch, with a
resolved lock, and exactly the files that were attested."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import git
import pytest

from tests.conftest import CliResult, run_cli
from tests.release_fixtures import DESTINATION, DRAFT, RECIPE, Release

RESOLVED_LOCK = json.dumps({"schema": "mtp-draft-lock/v1", "unresolved": []})


def _write_drafts(artifacts: Path, destinations: dict[str, str | None]) -> None:
    for name, destination in destinations.items():
        (artifacts / name).mkdir(parents=True)
        text = RECIPE.replace(f"destination: {{repo: {DESTINATION}}}\n", f"destination: {{repo: {destination}}}\n" if destination else "")
        (artifacts / name / "draft.yaml").write_text(text)
        (artifacts / name / "draft.lock.json").write_text(RESOLVED_LOCK)


def _project(root: Path, destinations: dict[str, str | None]) -> git.Repo:
    """A git checkout on `main` holding the drafts, committed."""
    _write_drafts(root / "artifacts", destinations)
    repo = git.Repo.init(root)
    repo.config_writer().set_value("user", "name", "Release Bot").set_value("user", "email", "release@example.invalid").release()
    repo.git.add(A=True)
    repo.index.commit("drafts")
    repo.git.branch("-M", "main")
    return repo


def _drafts(root: Path, *argv: str) -> CliResult:
    return run_cli("drafts", "--artifacts", str(root / "artifacts"), *argv)


def test_drafts_lists_the_releasable_drafts_and_refuses_what_no_release_tag_names(tmp_path: Path) -> None:
    _write_drafts(tmp_path / "artifacts", {"one": "org/one", "two": "org/two", "local-only": None, "demo": "demo/x"})
    (tmp_path / "artifacts" / "examples" / "nested").mkdir(parents=True)
    (tmp_path / "artifacts" / "examples" / "nested" / "draft.yaml").write_text(RECIPE)

    everything = _drafts(tmp_path, "--json")

    assert everything.code == 0, everything.stderr
    assert json.loads(everything.stdout) == [{"draft": "one", "destination": "org/one"}, {"draft": "two", "destination": "org/two"}]
    for argv, message in [
        (("--tag", "v1.2.0"), "a bare version names a draft only where exactly one draft is releasable"),
        (("--tag", "two/1.2"), "not a release tag"),
        (("--tag", "two/v1.2.0-rc1"), "not a release tag"),  # pre-releases are never released
        (("--tag", "v1.2.0-rc1"), "not a release tag"),
        (("--tag", "three/v1.0.0"), "no " + str(tmp_path / "artifacts" / "three" / "draft.yaml")),
        (("--tag", "examples/nested/v1.0.0"), "no "),
        (("--tag", "local-only/v1.0.0"), "no releasable draft"),
        (("--tag", "demo/v1.0.0"), "publishes only to the embedded Hub"),
        (("--draft", "demo"), "publishes only to the embedded Hub"),
        (("--merged-into", "main"), "--merged-into checks a release commit: it needs --tag"),
    ]:
        refused = _drafts(tmp_path, *argv)
        assert refused.code == 2 and message in refused.stderr, (argv, refused.stderr)
    assert "pre-releases (v1.0.0-rc1) are not released" in _drafts(tmp_path, "--tag", "v1.2.0-rc1").stderr


def test_a_bare_version_tag_names_the_only_releasable_draft(tmp_path: Path) -> None:
    # The rehearsal draft and a draft without a destination publish nowhere, so they do not count.
    repo = _project(tmp_path, {"only": "org/only", "demo": "demo/x", "local-only": None})
    repo.create_tag("v2.0.0")

    result = _drafts(tmp_path, "--tag", "v2.0.0", "--merged-into", "main", "--json")

    assert result.code == 0, result.stderr
    head = repo.head.commit.hexsha
    assert json.loads(result.stdout) == [{"draft": "only", "destination": "org/only", "tag": "v2.0.0", "commit": head}]


def test_select_refuses_a_tag_that_is_not_the_checked_out_commit(tmp_path: Path) -> None:
    repo = _project(tmp_path, {"one": "org/one"})
    repo.create_tag("one/v1.0.0")
    (tmp_path / "NOTES.md").write_text("a later commit\n")
    repo.git.add(A=True)
    repo.index.commit("notes")

    refused = _drafts(tmp_path, "--tag", "one/v1.0.0")
    missing = _drafts(tmp_path, "--tag", "one/v9.0.0")

    assert refused.code == 1 and "but HEAD is" in refused.stderr and "hint: check out the tag first" in refused.stderr
    assert missing.code == 2 and "no such tag" in missing.stderr


def test_select_refuses_a_tagged_commit_that_is_not_on_the_default_branch(tmp_path: Path) -> None:
    repo = _project(tmp_path, {"one": "org/one"})
    repo.git.checkout("-b", "unreviewed")
    (tmp_path / "NOTES.md").write_text("never merged\n")
    repo.git.add(A=True)
    repo.index.commit("unreviewed change")
    repo.create_tag("one/v1.0.0")
    summary = tmp_path / "summary.md"

    refused = _drafts(tmp_path, "--tag", "one/v1.0.0", "--merged-into", "main", "--summary", str(summary))
    no_ref = _drafts(tmp_path, "--tag", "one/v1.0.0", "--merged-into", "origin/main")

    assert refused.code == 1, refused.stderr
    assert f"tag 'one/v1.0.0': commit {repo.head.commit.hexsha[:12]} is not on main" in refused.stderr
    assert summary.read_text().startswith("### Release refused\n") and "is not on main" in summary.read_text()
    assert no_ref.code == 2 and "--merged-into origin/main: no such ref" in no_ref.stderr

    repo.git.checkout("main")
    repo.git.merge("unreviewed")
    accepted = _drafts(tmp_path, "--tag", "one/v1.0.0", "--merged-into", "main", "--summary", str(summary))
    assert accepted.code == 0, accepted.stderr
    assert "### Release selected" in summary.read_text() and "`one/v1.0.0`" in summary.read_text()


def test_select_refuses_a_draft_whose_lock_is_missing_or_unresolved(tmp_path: Path) -> None:
    repo = _project(tmp_path, {"one": "org/one"})
    real = Path(__file__).resolve().parent.parent / "artifacts" / "step-3.7-flash-mtp-draft" / "draft.lock.json"
    unresolved = json.loads(real.read_text())["unresolved"]
    assert unresolved, "the committed lock of the first real draft is still pending"
    lock = tmp_path / "artifacts" / "one" / "draft.lock.json"
    lock.write_text(real.read_text())
    repo.git.add(A=True)
    repo.index.commit("pending lock")
    repo.create_tag("one/v1.0.0")

    pending = _drafts(tmp_path, "--tag", "one/v1.0.0", "--merged-into", "main")
    lock.unlink()
    repo.git.add(A=True)
    repo.index.commit("no lock")
    repo.create_tag("one/v1.0.1")
    missing = _drafts(tmp_path, "--tag", "one/v1.0.1", "--merged-into", "main")

    assert pending.code == 1, pending.stderr
    assert f"{lock}: unresolved: {unresolved[0]}" in pending.stderr and all(entry in pending.stderr for entry in unresolved)
    assert missing.code == 1 and f"{lock}: missing; a release needs a committed lock" in missing.stderr


def test_two_release_tags_on_one_commit_publish_exactly_the_one_named(release: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    release.prepare(tag="v1.0.0")
    release.repo.create_tag(f"{DRAFT}/v2.0.0")

    ambiguous = release.cli("upload", "--dry-run")
    first = release.cli("upload", "--dry-run", "--tag", f"{DRAFT}/v1.0.0", "--json")
    monkeypatch.setenv("GITHUB_REF_TYPE", "tag")
    monkeypatch.setenv("GITHUB_REF_NAME", f"{DRAFT}/v2.0.0")
    from_the_run = release.cli("upload", "--dry-run", "--json")
    other = release.cli("upload", "--dry-run", "--tag", "other-draft/v1.0.0")

    assert ambiguous.code == 2 and f"HEAD carries 2 release tags of {DRAFT}: {DRAFT}/v1.0.0, {DRAFT}/v2.0.0" in ambiguous.stderr
    assert "hint: name the one to publish: --tag <tag>" in ambiguous.stderr
    assert json.loads(first.stdout)["plan"]["tag"] == "v1.0.0"
    assert json.loads(from_the_run.stdout)["plan"]["tag"] == "v2.0.0"  # GITHUB_REF_NAME of a tag run
    assert other.code == 2 and "releases the draft 'other-draft'" in other.stderr

    published = release.cli("publish", "--tag", f"{DRAFT}/v1.0.0")

    assert published.code == 0, published.stderr
    assert release.tags() == {"v1.0.0": release.commits()[0]}


def test_a_release_tag_on_an_older_commit_is_refused(release: Release) -> None:
    release.prepare(tag="v1.0.0")
    (release.root / "NOTES.md").write_text("after the release\n")
    release.commit_and_tag(None)

    result = release.cli("upload", "--tag", f"{DRAFT}/v1.0.0")

    assert result.code == 1 and f"tag '{DRAFT}/v1.0.0' is commit" in result.stderr and "but HEAD is" in result.stderr
    assert not release.api.repo_exists(DESTINATION)


def test_the_upload_commits_exactly_the_attested_files(release: Release, tmp_path: Path) -> None:
    release.prepare(tag="v1.0.0")
    subjects = tmp_path / "release.sha256"
    planned = release.cli("upload", "--dry-run", "--write-subjects", str(subjects), "--json")
    assert planned.code == 0, planned.stderr
    lines = subjects.read_text().splitlines()
    listed = {name: digest for digest, name in (line.split("  ", 1) for line in lines)}
    assert listed == {f["path"]: f["sha256"] for f in json.loads(planned.stdout)["plan"]["files"]}
    assert {"README.md", "draft.lock.json", "verify.json", "config.json", "model.safetensors.index.json"} <= set(listed)

    tampered = tmp_path / "tampered.sha256"
    tampered.write_text("".join(f"{'0' * 64 if name == 'config.json' else digest}  {name}\n" for name, digest in listed.items()))
    short = tmp_path / "short.sha256"
    short.write_text("".join(line + "\n" for line in lines if not line.endswith("  verify.json")))
    for attested, message in [(tampered, "config.json: sha256"), (short, "verify.json: in this release but not attested")]:
        refused = release.cli("upload", "--attested", str(attested))
        assert refused.code == 1 and message in refused.stderr, refused.stderr
    assert not release.api.repo_exists(DESTINATION)

    published = release.cli("upload", "--attested", str(subjects))

    assert published.code == 0, published.stderr
    for name, digest in listed.items():
        assert hashlib.sha256(Path(release.api.hf_hub_download(DESTINATION, name, revision="v1.0.0")).read_bytes()).hexdigest() == digest
