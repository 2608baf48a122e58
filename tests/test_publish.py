"""Publishing against the embedded Hub: one commit and one tag per release, idempotent reruns,
card-only releases without weights, refusals, and a token that never leaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.flows.publish import ReleaseReport, summary_markdown
from pipeline.rehearsal.hub import FaultPlan
from pipeline.rehearsal.synthetic import SyntheticSpec, write_target
from pipeline.stages.upload import PlannedFile, UploadPlan
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN, SOURCE_REPO, TARGET_REPO, seed_repo
from tests.release_fixtures import DESTINATION, Release


def test_first_publish_makes_one_commit_and_one_tag_and_a_rerun_makes_none(release: Release) -> None:
    release.prepare()

    first = release.cli("publish")

    assert first.code == 0, first.stderr
    commits = release.commits()
    assert len(commits) == 2  # the Hub's initial commit, then the release
    assert release.tags() == {"v1.0.0": commits[0]}
    uploaded = {f.path for f in release.api.list_repo_tree(DESTINATION, recursive=True)}
    assert {"README.md", "config.json", "draft.lock.json", "verify.json", "model.safetensors.index.json", "LICENSE"} <= uploaded
    message = release.api.list_repo_commits(DESTINATION)[0]
    assert "v1.0.0" in message.title and SOURCE_REPO in message.title
    release.server.stats.reset()

    second = release.cli("publish", "--json")

    assert second.code == 0, second.stderr
    assert release.server.stats.writes == 0
    assert release.commits() == commits
    result = json.loads(second.stdout)["result"]
    assert result == {"commit": commits[0], "created_commit": False, "created_tag": False, "uploaded_bytes": 0}


def test_card_only_release_uploads_no_weights(release: Release) -> None:
    release.prepare()
    assert release.cli("publish").code == 0
    text = release.recipe.read_text().replace("First release.", "First release.}\n    - {version: v1.1.0, notes: Clearer card.")
    release.recipe.write_text(text.replace("- {version: v1.0.0", "- {version: v1.0.0", 1))
    assert release.cli("card").code == 0
    release.commit_and_tag("v1.1.0")
    release.server.stats.reset()
    before = release.commits()

    result = release.cli("publish", "--json")

    assert result.code == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert [f["path"] for f in plan["files"] if f["action"] not in ("unchanged", "keep")] == ["README.md"]
    assert release.server.stats.lfs_bytes_received == 0
    assert len(release.commits()) == len(before) + 1
    assert set(release.tags()) == {"v1.0.0", "v1.1.0"}


def test_dry_run_writes_nothing_and_prints_the_plan(release: Release) -> None:
    release.prepare(tag=None)
    release.server.stats.reset()

    result = release.cli("publish", "--dry-run", "--json")

    assert result.code == 0, result.stderr
    assert release.server.stats.writes == 0
    plan = json.loads(result.stdout)["plan"]
    assert plan["tag"] is None and plan["version"].startswith("0.0.0.dev0+g")
    assert {f["action"] for f in plan["files"]} == {"add"}
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in plan["files"])
    assert "+++ release/README.md" in json.loads(result.stdout)["card_diff"]


def test_an_untagged_checkout_may_only_dry_run(release: Release) -> None:
    release.prepare(tag=None)
    result = release.cli("publish")
    assert result.code == 1
    assert "dev version can only --dry-run" in result.stderr


def test_a_dirty_tree_is_refused(release: Release) -> None:
    release.prepare()
    (release.folder / "notes.txt").write_text("uncommitted")
    result = release.cli("publish")
    assert result.code == 1
    assert "uncommitted changes" in result.stderr


def test_an_existing_tag_at_another_commit_is_refused(release: Release) -> None:
    release.prepare()
    release.api.create_repo(DESTINATION, exist_ok=True)
    head = release.api.model_info(DESTINATION).sha
    release.api.create_tag(DESTINATION, tag="v1.0.0", revision=head)

    result = release.cli("publish")

    assert result.code == 1
    assert "tag v1.0.0 already exists" in result.stderr
    assert release.tags() == {"v1.0.0": head}


def test_a_version_not_newer_than_the_latest_release_is_refused(release: Release) -> None:
    release.prepare(tag="v0.9.0")
    release.api.create_repo(DESTINATION, exist_ok=True)
    release.api.create_tag(DESTINATION, tag="v1.0.0", revision=release.api.model_info(DESTINATION).sha)

    result = release.cli("publish")

    assert result.code == 1
    assert "not newer than the latest release v1.0.0" in result.stderr


def test_a_stale_parent_is_replanned_once(release: Release) -> None:
    release.prepare()
    release.server.faults = FaultPlan(concurrent_commits=1)

    result = release.cli("publish", "--json")

    assert result.code == 0, result.stderr
    assert "planning again" in result.stderr and json.loads(result.stdout)["replanned"] is True
    commits = release.commits()
    assert len(commits) == 3  # initial, the other writer's, ours on top: nothing overwritten blindly
    assert release.tags() == {"v1.0.0": commits[0]}
    assert release.api.file_exists(DESTINATION, "CONCURRENT_WRITER.md")  # their file is kept


def test_a_branch_that_keeps_moving_stops_the_release(release: Release) -> None:
    release.prepare()
    release.server.faults = FaultPlan(concurrent_commits=5)

    result = release.cli("publish")

    assert result.code == 1
    assert "moved twice" in result.stderr
    assert release.tags() == {}


def test_a_concurrent_commit_makes_the_planned_commit_fail_instead_of_overwriting(release: Release) -> None:
    from pipeline.remote.errors import BranchMoved, status_of
    from pipeline.stages.upload import apply_plan, plan_upload

    release.api.create_repo(DESTINATION, exist_ok=True)
    local = release.root / "notes.md"
    local.write_text("ours\n")
    plan = plan_upload(release.api, DESTINATION, {"notes.md": local}, "v1.0.0", "v1.0.0", "release", "")
    release.api.upload_file(path_or_fileobj=b"theirs\n", path_in_repo="notes.md", repo_id=DESTINATION)

    with pytest.raises(BranchMoved) as caught:
        apply_plan(release.api, plan)

    assert status_of(caught.value.__cause__) == 412
    assert Path(release.api.hf_hub_download(DESTINATION, "notes.md")).read_text() == "theirs\n"
    assert release.tags() == {}


def test_a_redundant_draft_is_refused_unless_forced_and_then_the_card_says_so(release: Release, synthetic_pairs: dict[str, Path]) -> None:
    seed_repo(release.api, TARGET_REPO, synthetic_pairs["redundant-target"])
    release.prepare(tag=None)

    refused = release.cli("publish", "--dry-run")
    forced = release.cli("publish", "--dry-run", "--force")

    assert refused.code == 1 and "the draft is redundant" in refused.stderr
    assert forced.code == 0, forced.stderr
    card = (release.workdir / "card" / "README.md").read_text()
    assert "Published with --force although inspection found this draft redundant" in card


def test_the_token_appears_in_no_output_or_file(release: Release) -> None:
    release.prepare()
    summary = release.workdir / "job-summary.md"
    outputs = [
        release.cli("publish", "--dry-run", "--json"),
        release.cli("publish", "-v", "--summary", str(summary)),
        release.cli("status"),
        release.cli("card", "--diff", "hub"),
    ]
    release.server.faults = FaultPlan(error_status=500, error_route="*", error_times=1000)
    outputs.append(release.cli("publish", "--dry-run"))

    for result in outputs:
        assert FAKE_TOKEN not in result.stdout + result.stderr
    for path in [*release.root.rglob("*")]:
        if path.is_file() and ".git" not in path.parts:
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for path in release.server.root.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_upload_refuses_a_draft_changed_after_verify(release: Release) -> None:
    release.prepare()
    assert release.cli("publish", "--dry-run").code == 0
    shard = next((release.workdir / "draft").glob("model-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))

    result = release.cli("upload")

    assert result.code == 1
    assert "changed after verify" in result.stderr
    assert not release.api.repo_exists(DESTINATION)


def test_the_demo_publishes_and_its_second_run_is_a_no_op(tmp_path: Path) -> None:
    result = run_cli("demo", "--root", str(tmp_path / "demo"))
    assert result.code == 0, result.stderr
    assert "released demo/Step-3.7-Flash-MTP-draft v1.0.0" in result.stdout
    assert "second run: no commit, no tag, no write request" in result.stdout


def test_a_locked_build_of_hub_repos_reproduces_the_lock(release: Release, tmp_path: Path) -> None:
    release.prepare()
    lock = (release.folder / "draft.lock.json").read_text()

    again = run_cli("build", "--locked", "--recipe", str(release.recipe), "--workdir", str(tmp_path / "fresh"))

    assert again.code == 0, again.stderr
    assert (release.folder / "draft.lock.json").read_text() == lock
    assert '"revision": "main"' in lock


def test_a_plan_from_the_lock_needs_no_weights_and_matches_the_published_files(release: Release, tmp_path: Path) -> None:
    release.prepare()
    assert release.cli("publish").code == 0
    release.server.stats.reset()
    elsewhere = ["--recipe", str(release.recipe), "--workdir", str(tmp_path / "no-build")]

    result = run_cli("upload", "--dry-run", "--from-lock", "--json", *elsewhere)

    assert result.code == 0, result.stderr
    assert release.server.stats.writes == 0
    assert not (tmp_path / "no-build" / "draft").exists()
    report = json.loads(result.stdout)
    assert report["from_lock"] is True
    actions = {f["path"]: f["action"] for f in report["plan"]["files"]}
    locked = json.loads((release.folder / "draft.lock.json").read_text())["files"]
    assert {path: actions[path] for path in locked} == dict.fromkeys(locked, "unchanged")  # LFS and small files alike
    assert actions["verify.json"] == "keep"  # only a build writes it; the plan leaves the published one alone


def test_a_plan_from_the_lock_sees_a_changed_file_and_is_never_applied(release: Release, tmp_path: Path) -> None:
    release.prepare()
    assert release.cli("publish").code == 0
    lock_path = release.folder / "draft.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["files"]["config.json"]["sha256"] = "0" * 64
    lock_path.write_text(json.dumps(lock))
    release.commit_and_tag("v1.1.0")
    elsewhere = ["--recipe", str(release.recipe), "--workdir", str(tmp_path / "no-build")]

    planned = run_cli("upload", "--dry-run", "--from-lock", "--json", *elsewhere)
    applied = run_cli("upload", "--from-lock", *elsewhere)

    assert planned.code == 0, planned.stderr
    actions = {f["path"]: f["action"] for f in json.loads(planned.stdout)["plan"]["files"]}
    assert [path for path, action in actions.items() if action == "change"] == ["README.md", "config.json", "draft.lock.json"]
    assert {action for path, action in actions.items() if path.startswith("model-")} == {"unchanged"}
    assert applied.code == 2 and "needs --dry-run" in applied.stderr


def test_the_summary_shows_the_plan_the_outcome_and_the_card_diff(release: Release, tmp_path: Path) -> None:
    release.prepare()
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step output\n")

    result = release.cli("publish", "--summary", str(summary))

    assert result.code == 0, result.stderr
    text = summary.read_text()
    assert text.startswith("earlier step output\n### Release: tiny-draft v1.0.0\n")
    assert f"Destination `{DESTINATION}` (will be created); tag `v1.0.0` (new)" in text
    assert "| add | model.safetensors.index.json |" in text
    assert "published: commit " in text and "tag v1.0.0 created" in text
    assert "+++ release/README.md" in text


def test_a_long_card_diff_is_cut_to_fit_the_summary_and_cannot_break_its_fence() -> None:
    plan = UploadPlan(
        "org/name", "v1.0.0", "v1.0.0", True, "a" * 40, "new", "release", "", (PlannedFile("README.md", 10, "b" * 64, "change", None),)
    )
    diff = "".join(f"+line {i} ```` with backticks\n" for i in range(5000))

    cut = summary_markdown("tiny-draft", ReleaseReport(plan, diff, None, False), dry_run=True, limit=20_000)

    assert len(cut.encode()) <= 20_000
    assert "more bytes are in the job log" in cut
    assert "\n`````diff\n" in cut and cut.rstrip().endswith("</details>")


def test_card_diff_against_the_latest_release(release: Release) -> None:
    release.prepare()
    before = release.cli("card", "--diff", "hub", "--json")
    assert before.code == 0, before.stderr
    assert json.loads(before.stdout)["release"] is None and "+# Tiny draft" in json.loads(before.stdout)["diff"]
    assert release.cli("publish").code == 0
    unchanged = release.cli("card", "--diff", "hub", "--json")
    assert json.loads(unchanged.stdout) == {"release": "v1.0.0", "diff": ""}

    release.recipe.write_text(release.recipe.read_text().replace("title: Tiny draft", "title: Tiny MTP draft"))
    changed = release.cli("card", "--diff", "hub")

    assert changed.code == 0
    assert "--- hub/v1.0.0/README.md" in changed.stdout
    assert "-# Tiny draft" in changed.stdout and "+# Tiny MTP draft" in changed.stdout


@pytest.mark.parametrize(("variant", "verdict"), [("no-mtp", "needed"), ("mtp-shard", "redundant"), ("other-vocab", "incompatible")])
def test_inspect_through_the_embedded_hub(variant: str, verdict: str, release: Release, tmp_path: Path) -> None:
    target = write_target(tmp_path / f"target-{variant}", SyntheticSpec(), variant)
    seed_repo(release.api, TARGET_REPO, target)
    release.server.stats.reset()

    result = release.cli("inspect", "--json")

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == verdict
    assert report["target"]["commit"] == release.api.model_info(TARGET_REPO).sha
    assert release.server.stats.writes == 0
    shard_bytes = sum(p.stat().st_size for p in target.glob("*.safetensors"))
    assert release.server.stats.resolve_bytes_sent < shard_bytes / 4  # headers and configs, never weights


def test_publish_reads_the_locked_commits_when_the_source_branch_moved(release: Release) -> None:
    release.prepare()
    locked = json.loads((release.folder / "draft.lock.json").read_text())["source"]["commit"]
    release.api.upload_file(path_or_fileobj=b"a later change\n", path_in_repo="NOTES.md", repo_id=SOURCE_REPO)
    assert release.api.model_info(SOURCE_REPO).sha != locked

    result = release.cli("publish")

    assert result.code == 0, result.stderr
    published = json.loads(Path(release.api.hf_hub_download(DESTINATION, "draft.lock.json")).read_text())
    assert published["source"]["commit"] == locked


def test_an_untagged_publish_is_refused_before_anything_is_fetched(release: Release) -> None:
    release.prepare(tag=None)
    fresh = release.root / "build" / "untagged"
    release.server.stats.reset()

    result = run_cli("publish", "--recipe", str(release.recipe), "--workdir", str(fresh))

    assert result.code == 1
    assert result.stderr.startswith("error: untagged checkout") and "hint: tag the release" in result.stderr
    assert release.server.stats.resolve_bytes_sent == 0 and not fresh.exists()


def test_a_version_the_changelog_does_not_name_is_refused_before_anything_is_published(release: Release) -> None:
    release.prepare(tag="v2.0.0")

    result = release.cli("publish")

    assert result.code == 1
    assert f"{release.recipe}: card.release_notes: no entry for v2.0.0" in result.stderr.splitlines()[0]
    assert not release.api.repo_exists(DESTINATION)
