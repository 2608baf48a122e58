"""401 and 403 on every Hub-facing command: exit 2, one line naming the cause, with or without PIPELINE_DEBUG.

The strict embedded Hub answers 401 to a token it does not know and 403 to a token whose owner
belongs to the repo's namespace but whose fine-grained scope leaves the (private) repo out.
"""

from __future__ import annotations

import pytest

from tests.conftest import CliResult, run_cli
from tests.hub_fixtures import SOURCE_REPO, TARGET_REPO
from tests.release_fixtures import DESTINATION, Release

UNKNOWN_TOKEN = "hf_unknown_token_3333"
# Read access to two unrelated repos: its owner is a member of both namespaces, and nothing more.
NAMESPACE_MEMBER = "hf_namespace_member_4444"
COMMANDS = {
    "build": ("build",),
    "inspect": ("inspect",),
    "card --diff hub": ("card", "--diff", "hub"),
    "upload": ("upload",),
    "publish": ("publish",),
}


def _run(release: Release, argv: tuple[str, ...]) -> CliResult:
    # A fresh workdir for build, so no stage is skipped and fetch has to reach the Hub.
    workdir = release.workdir.parent / "rebuild" if argv[0] == "build" else release.workdir
    return run_cli(*argv, "--recipe", str(release.recipe), "--workdir", str(workdir))


def _assert_refused(result: CliResult, debug: bool, *phrases: str) -> None:
    assert result.code == 2, result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and sum(line.startswith("hint:") for line in lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert ("Traceback" in result.stderr) is debug
    assert UNKNOWN_TOKEN not in result.stderr + result.stdout and NAMESPACE_MEMBER not in result.stderr + result.stdout


@pytest.fixture
def locked_down(release: Release) -> Release:
    """A prepared release whose source, target and destination are private."""
    release.server.app.access.add(f"{NAMESPACE_MEMBER}:read:synthetic/unrelated:release-test/unrelated")
    release.prepare()
    release.api.create_repo(DESTINATION, private=True)
    for repo in (SOURCE_REPO, TARGET_REPO):
        release.api.update_repo_settings(repo, private=True)
    return release


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_401_and_403_end_in_one_line_and_exit_2(command: str, locked_down: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = COMMANDS[command]
    for debug in (False, True):
        if debug:
            monkeypatch.setenv("PIPELINE_DEBUG", "1")
        monkeypatch.setenv("HF_TOKEN", UNKNOWN_TOKEN)
        unauthorized = _run(locked_down, argv)
        monkeypatch.setenv("HF_TOKEN", NAMESPACE_MEMBER)
        forbidden = _run(locked_down, argv)

        _assert_refused(unauthorized, debug, "HF_TOKEN is missing or invalid for " + locked_down.server.url, "HTTP 401")
        _assert_refused(forbidden, debug, "lacks read permission", "HTTP 403")
    assert locked_down.tags() == {} and len(locked_down.commits()) == 1
