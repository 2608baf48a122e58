"""A release campaign against a Hub as strict as the real one: every refusal is one clear line.

Each case ends with the documented exit code, exactly one `error:` line and one `hint:` line, no
traceback, the token in no output or file, and the destination either untouched or holding the
complete release. Retry bounds are checked by counting requests at the server.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.rehearsal.hub import FaultPlan
from pipeline.remote.transport import RetryPolicy
from tests.conftest import CliResult
from tests.hub_fixtures import FAKE_TOKEN, trusted_publishing
from tests.release_fixtures import DESTINATION, Release

INVALID_TOKEN = "hf_revoked_token_0000"
READ_TOKEN = "hf_read_only_token_1111"
OTHER_REPO_TOKEN = "hf_other_repo_token_2222"
SECRETS = (FAKE_TOKEN, INVALID_TOKEN, READ_TOKEN, OTHER_REPO_TOKEN)
RELEASE_SUB = "repo:example/mtp-tools:environment:release"
FAST = RetryPolicy(3, 0.0)
REPO_ROOT = Path(__file__).resolve().parent.parent


def assert_one_clear_line(result: CliResult, code: int, *phrases: str) -> None:
    assert result.code == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0] + hints[0], result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


def assert_no_secret_in_files(release: Release) -> None:
    for root in (release.root, release.server.root):
        for path in root.rglob("*"):
            if path.is_file() and ".git" not in path.parts:
                data = path.read_bytes()
                assert not any(secret.encode() in data for secret in SECRETS), path


def destination_exists(release: Release) -> bool:
    return release.api.repo_exists(DESTINATION)


@pytest.fixture
def prepared(release: Release) -> Release:
    release.server.app.access.add(f"{READ_TOKEN}:read")
    release.server.app.access.add(f"{OTHER_REPO_TOKEN}:write:release-test/another-draft")
    release.prepare()
    return release


def test_no_token_is_refused_before_anything_is_written(prepared: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN")

    result = prepared.cli("publish")

    assert_one_clear_line(result, 2, "HF_TOKEN is missing or invalid for " + prepared.server.url, "no token was sent", "HF_OIDC_RESOURCE")
    assert not destination_exists(prepared)


def test_an_invalid_token_is_refused_at_the_first_request_and_never_retried(prepared: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", INVALID_TOKEN)
    prepared.server.stats.reset()

    result = prepared.cli("publish")

    assert_one_clear_line(result, 2, "HF_TOKEN is missing or invalid", "refused the token", "HF_TOKEN")
    assert prepared.server.stats.requests == 1, prepared.server.stats.requests_by_route
    assert not destination_exists(prepared)
    assert_no_secret_in_files(prepared)


def test_a_read_only_token_is_refused_before_the_repo_is_created(prepared: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)

    result = prepared.cli("publish")

    assert_one_clear_line(result, 2, f"lacks write permission on {DESTINATION}", "read role")
    assert not destination_exists(prepared)


def test_a_token_scoped_to_another_repo_leaves_the_destination_untouched(prepared: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared.api.create_repo(DESTINATION)
    before = prepared.commits()
    monkeypatch.setenv("HF_TOKEN", OTHER_REPO_TOKEN)

    result = prepared.cli("publish")

    assert_one_clear_line(result, 2, f"lacks write permission on {DESTINATION}", "fine-grained")
    assert prepared.commits() == before and prepared.tags() == {}


@pytest.fixture
def oidc(prepared: Release) -> Release:
    prepared.api.create_repo(DESTINATION)  # publishers are configured on an existing repo
    prepared.server.stats.reset()
    return prepared


def test_trusted_publishing_exchanges_an_id_token_and_releases(oidc: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    with trusted_publishing(oidc.server, monkeypatch, DESTINATION, RELEASE_SUB) as issuer:
        result = oidc.cli("publish")

    assert result.code == 0, result.stderr
    commits = oidc.commits()
    assert oidc.tags() == {"v1.0.0": commits[0]} and len(commits) == 2
    assert oidc.server.stats.requests_by_route["token_exchange"] == 1 and issuer.requests == 1
    assert oidc.server.stats.requests_by_route.get("repo_create", 0) == 0  # the repo exists: never asked to create it


def test_an_id_token_from_another_environment_is_refused_with_one_line(oidc: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    before = oidc.commits()
    with trusted_publishing(oidc.server, monkeypatch, DESTINATION, RELEASE_SUB, job_sub=RELEASE_SUB.replace("release", "staging")):
        result = oidc.cli("publish")

    assert_one_clear_line(result, 2, "refused the Trusted Publisher exchange for " + DESTINATION, "invalid_grant", "sub")
    assert oidc.commits() == before and oidc.tags() == {}


def test_a_lost_tag_answer_is_recognised_as_success(prepared: Release) -> None:
    prepared.server.faults = FaultPlan(lost_answers=1, lost_answer_route="tag_create")

    result = prepared.cli("publish")

    assert result.code == 0, result.stderr
    assert prepared.server.stats.faults_fired["lost_answer"] == 1
    commits = prepared.commits()
    assert prepared.tags() == {"v1.0.0": commits[0]} and len(commits) == 2


def test_a_tag_made_by_someone_else_at_another_commit_is_refused_naming_both_commits(prepared: Release) -> None:
    from pipeline.errors import CheckFailed
    from pipeline.stages.upload import _tag

    prepared.api.create_repo(DESTINATION)
    theirs = prepared.api.upload_file(path_or_fileobj=b"x\n", path_in_repo="a.txt", repo_id=DESTINATION).oid
    prepared.api.create_tag(DESTINATION, tag="v1.0.0", revision=theirs)
    ours = prepared.api.upload_file(path_or_fileobj=b"y\n", path_in_repo="b.txt", repo_id=DESTINATION).oid

    with pytest.raises(CheckFailed) as refused:
        _tag(prepared.api, DESTINATION, "v1.0.0", ours, "release", FAST)

    assert theirs in refused.value.message and ours in refused.value.message
    _tag(prepared.api, DESTINATION, "v1.0.0", theirs, "release", FAST)  # the same commit: success


def test_a_rerun_after_a_foreign_commit_changes_nothing(prepared: Release) -> None:
    assert prepared.cli("publish").code == 0
    prepared.api.upload_file(path_or_fileobj=b"# notes\n", path_in_repo="NOTES.md", repo_id=DESTINATION)
    before = prepared.commits()
    prepared.server.stats.reset()

    result = prepared.cli("publish")

    assert result.code == 0, result.stderr
    assert "no new commit" in result.stdout
    assert prepared.server.stats.writes == 0 and prepared.commits() == before


@pytest.mark.parametrize("route", ["tree", "preupload", "lfs_batch", "commit"])
def test_a_503_storm_ends_after_exactly_the_recipes_attempts(route: str, prepared: Release) -> None:
    prepared.server.faults = FaultPlan(error_status=503, error_route=route, error_times=1000)
    prepared.server.stats.reset()

    result = prepared.cli("publish")

    assert_one_clear_line(result, 3, "HTTP 503", "retry later")
    # The recipe says attempts: 3; the client's own retries add none.
    assert prepared.server.stats.requests_by_route[route] == 3
    assert not destination_exists(prepared), "a repo made for a release that failed is removed again"


def test_the_hub_validator_refuses_a_malformed_model_index_naming_the_field(prepared: Release, tmp_path: Path) -> None:
    from pipeline.errors import CheckFailed
    from pipeline.remote.metadata import validate_card

    readme = tmp_path / "README.md"
    readme.write_text(
        "---\nlicense: apache-2.0\nmodel-index:\n- name: d\n  results:\n  - task: {type: text-generation}\n    dataset: {name: x}\n    metrics: [{type: acc, value: 1}]\n---\n# d\n"
    )

    with pytest.raises(CheckFailed) as refused:
        validate_card(prepared.api, readme, FAST, DESTINATION)

    assert refused.value.exit_code == 1
    assert '"model-index[0].results[0].dataset.type" is required' in refused.value.message
    assert not destination_exists(prepared)


def test_an_upload_storm_within_the_budget_resends_the_whole_file(prepared: Release) -> None:
    # The LFS PUT streams a file: a retry must rewind it, or the Hub would get a short body.
    prepared.server.faults = FaultPlan(error_status=503, error_route="lfs_upload", error_times=2)

    result = prepared.cli("publish")

    assert result.code == 0, result.stderr
    assert prepared.server.stats.faults_fired["error"] == 2
    assert set(prepared.tags()) == {"v1.0.0"}
    for entry in prepared.api.list_repo_tree(DESTINATION, recursive=True):
        if getattr(entry, "lfs", None):
            local = prepared.workdir / "draft" / entry.path
            assert entry.lfs.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("tried", "retry_after", "expected"),
    [(1, None, 0.5), (2, None, 1.0), (4, None, 4.0), (1, 3.0, 3.0), (1, 3600.0, 4.0), (2, 0.1, 1.0)],
)
def test_waits_double_and_retry_after_never_exceeds_the_longest_scheduled_wait(
    tried: int, retry_after: float | None, expected: float
) -> None:
    policy = RetryPolicy(attempts=5, backoff_seconds=0.5)

    assert policy.wait(tried, retry_after) == expected
    assert policy.scheduled_seconds == 0.5 + 1 + 2 + 4
    assert policy.worst_case_seconds == 4 * 4.0


def test_trusted_publishing_from_a_child_process_as_in_ci(oidc: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real `python -m pipeline` reads HF_ENDPOINT before importing the client: no patching at all.
    with trusted_publishing(oidc.server, monkeypatch, DESTINATION, RELEASE_SUB):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HOME": str(oidc.root.parent / "hf-home")}
        child = subprocess.run(
            [sys.executable, "-m", "pipeline", "publish", "--recipe", str(oidc.recipe), "--workdir", str(oidc.workdir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert child.returncode == 0, child.stderr
    assert set(oidc.tags()) == {"v1.0.0"} and oidc.server.stats.requests_by_route["token_exchange"] == 1


def test_a_ci_provider_that_refuses_to_mint_an_id_token_is_one_line(oidc: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    with trusted_publishing(oidc.server, monkeypatch, DESTINATION, RELEASE_SUB) as issuer:
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "not-the-job-token")
        result = oidc.cli("publish")

    assert_one_clear_line(result, 2, "the CI provider refused to mint an OIDC id token (HTTP 401", "id-token: write")
    assert issuer.requests == 1 and "token_exchange" not in oidc.server.stats.requests_by_route


def test_a_card_the_hubs_validator_refuses_stops_the_release_before_the_repo_is_made(prepared: Release) -> None:
    # A Hub whose licence list no longer has the card's id (the committed copy is older than the Hub).
    from pipeline.recipe.loader import hub_license_ids

    prepared.server.app.licenses = hub_license_ids() - {"apache-2.0"}
    prepared.server.stats.reset()

    result = prepared.cli("publish")

    assert result.code == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "README.md: the Hub's metadata validator refused it" in errors[0]
    assert '"license" must be one of the Hub\'s licence identifiers' in errors[0], errors[0]
    assert "Traceback" not in result.stderr and "hint:" in result.stderr
    assert not destination_exists(prepared) and prepared.server.stats.writes == 0
