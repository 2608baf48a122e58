"""The GitHub Actions workflows: clean under zizmor and actionlint, hardened, calling only commands
the CLI has, in stage order, installing nothing unpinned where a credential can be minted; and the
release workflow's jobs, run by a strict model of a hosted runner on fresh checkouts of a tagged
project, publish exactly the pushed tag to the embedded Hub, or refuse in `select`."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile

from pipeline.cli.main import build_parser
from pipeline.flows.runner import STAGE_NAMES
from pipeline.rehearsal.hub import HubServer
from pipeline.rehearsal.hub.oidc import GITHUB_ISSUER, Publisher, TrustedPublishers, mint_id_token
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN, OIDC_KEY, SOURCE_REPO, TARGET_REPO, seed_repo
from tests.release_fixtures import DESTINATION, DRAFT, RECIPE, Release
from tests.workflow_runner import (
    RUNNER_ONLY_STEPS,
    IdTokenProvider,
    RunnerLikeRun,
    id_token_claims,
    job_order,
    needs_of,
    tag_push_starts_a_run,
)

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / ".github"
WORKFLOWS = GITHUB / "workflows"
RELEASE = WORKFLOWS / "release.yml"
TOOLS = Path(sys.executable).parent  # the test extra installs zizmor, actionlint and shellcheck beside python
# Where each command stands in a release: choose the draft, the build stages (`build` is all four),
# bench-import, the card, then the upload (a dry-run upload only plans it).
RANK = {"drafts": 0, **{name: i + 1 for i, name in enumerate(STAGE_NAMES)}, "build": STAGE_NAMES.index("verify") + 1}
RANK |= {"card": len(STAGE_NAMES) + 1, "upload": len(STAGE_NAMES) + 2, "publish": len(STAGE_NAMES) + 2}
RANK |= {"bench-plan": RANK["bench-import"]}  # the benchmark workflow plans the runs bench-import reads later
PIPELINE_COMMAND = re.compile(r"python -m pipeline ([a-z-]+)([^\n]*)")
SHELL_OPERATORS = {">", ">>", "|", "||", "&&", ";", ")", "2>"}
REPOSITORY = "release-test/drafts"  # the GitHub repository the runner model pretends to be
LOCK = "requirements/release.txt"
# The only ways a release job may install code: the hash-pinned lock (wheels only), or the tool's
# own wheel once its sha256 was checked against what `package` reported, without dependencies.
PINNED_INSTALLS = {
    "python -m pip install --quiet --require-hashes --only-binary :all: -r requirements/release.txt",
    'python -m pip install --quiet --no-deps --no-index "dist/$WHEEL"',
}
WHEEL_CHECK = 'echo "$WHEEL_SHA256  dist/$WHEEL" | sha256sum --check --strict'


def _workflows() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(WORKFLOWS.glob("*.yml"))}


def _release() -> dict[str, Any]:
    return yaml.safe_load(RELEASE.read_text())


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def _commands(job: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each `python -m pipeline` call in a job's scripts: the command and its arguments."""
    found = []
    for step in job["steps"]:
        for match in PIPELINE_COMMAND.finditer(step.get("run", "").replace("\\\n", " ")):
            lexer = shlex.shlex(match[2], posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            arguments = []
            for token in lexer:
                if token in SHELL_OPERATORS:
                    break
                arguments.append(token)
            found.append((match[1], arguments))
    return found


def _upstream(workflow: dict[str, Any], name: str) -> set[str]:
    """Every job `name` needs, directly or through others."""
    found: set[str] = set()
    for need in needs_of(workflow["jobs"][name]):
        found |= {need, *_upstream(workflow, need)}
    return found


@pytest.mark.parametrize("persona", ["regular", "pedantic", "auditor"])
def test_zizmor_finds_nothing(persona: str) -> None:
    # Given .github/, zizmor audits the workflows and the Dependabot config.
    result = subprocess.run(
        [_tool("zizmor"), "--offline", "--format", "json", "--persona", persona, str(GITHUB)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.stdout.strip(), result.stderr
    findings = json.loads(result.stdout)
    assert findings == [], [(f["ident"], f["desc"]) for f in findings]
    assert "dependabot.yml" in result.stderr  # it did read the Dependabot config


def test_actionlint_finds_nothing() -> None:
    # shellcheck on PATH lets actionlint check every run: script too.
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [_tool("actionlint"), *sorted(map(str, WORKFLOWS.glob("*.yml")))], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_hardened() -> None:
    for name, workflow in _workflows().items():
        text = (WORKFLOWS / name).read_text()
        assert workflow["permissions"] == {}, f"{name}: start with no permissions and grant them per job"
        triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
        assert "pull_request_target" not in triggers and "workflow_run" not in triggers, name
        for line in re.findall(r"^\s*(?:- )?(uses: \S+.*)", text, re.M):
            assert re.fullmatch(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), f"{name}: pin to a full commit: {line}"
        for job_name, job in workflow["jobs"].items():
            assert job.get("name") and job.get("permissions"), f"{name}: {job_name} needs a name and its own permissions"
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), f"{name}: {job_name} expands an expression in run: text; pass it through env:"
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{name}: {job_name} keeps the git credential"


def test_only_the_publish_job_in_the_release_environment_holds_a_hub_credential() -> None:
    jobs = _release()["jobs"]
    writers = {name: job["permissions"] for name, job in jobs.items() if "write" in job["permissions"].values()}
    # attest signs with its OIDC token; publish exchanges its own at the Hub.
    assert writers == {"attest": {"id-token": "write", "attestations": "write"}, "publish": {"contents": "read", "id-token": "write"}}
    assert {name for name, job in jobs.items() if "environment" in job} == {"publish"}
    assert jobs["publish"]["environment"]["name"] == "release"
    # attest runs no project code and checks nothing out: it only signs the list it is handed.
    assert [step["uses"].split("@")[0] for step in jobs["attest"]["steps"]] == ["actions/download-artifact", "actions/attest"]
    # The token secret reaches the upload step alone, never a job or the whole publish job.
    holders = [(job_name, step.get("name")) for job_name, job in jobs.items() for step in job["steps"] if "secrets." in json.dumps(step)]
    assert holders == [("publish", "Upload exactly the attested files to the Hub (one commit, one tag)")]
    assert not any("secrets." in json.dumps({k: v for k, v in job.items() if k != "steps"}) for job in jobs.values())


def test_oidc_subjects_let_only_the_release_environment_mint_a_hub_token() -> None:
    """A trusted publisher pinned to `repo:OWNER/REPO:environment:release` matches the publish job
    and no other: the attest job can mint an id token too, but its subject names the tag."""
    workflow = _release()
    github = {"repository": REPOSITORY, "ref": f"refs/tags/{DRAFT}/v1.0.0", "ref_type": "tag", "event_name": "push"}
    minting = {name: job for name, job in workflow["jobs"].items() if (job["permissions"] or {}).get("id-token") == "write"}
    subjects = {name: id_token_claims("release.yml", job, github, "https://huggingface.co")["sub"] for name, job in minting.items()}

    assert subjects == {"attest": f"repo:{REPOSITORY}:ref:refs/tags/{DRAFT}/v1.0.0", "publish": f"repo:{REPOSITORY}:environment:release"}
    readme = (ROOT / "README.md").read_text()
    assert "`repo:OWNER/REPO:environment:release`" in readme


def test_every_pipeline_command_the_workflows_run_exists_with_its_options() -> None:
    parser = build_parser()
    subcommands = next(action for action in parser._actions if action.dest == "command").choices  # type: ignore[attr-defined]
    seen = set()
    for name, workflow in _workflows().items():
        for job in workflow["jobs"].values():
            for command, arguments in _commands(job):
                assert command in subcommands, f"{name}: python -m pipeline {command} is not a command"
                known = subcommands[command]._option_string_actions
                for option in (a for a in arguments if a.startswith("-")):
                    assert option in known, f"{name}: python -m pipeline {command} has no option {option}"
                seen.add(command)
    assert {"drafts", "build", "bench-import", "card", "upload"} <= seen


def test_the_free_disk_step_asks_the_build_itself_before_building() -> None:
    steps = _workflows()["release.yml"]["jobs"]["build"]["steps"]
    ids = [step.get("id") for step in steps]
    free_disk = steps[ids.index("free-disk")]
    assert _commands({"steps": [free_disk]}) == [("build", ["--draft", "$DRAFT", "--locked", "--preflight"])]
    first_build = next(i for i, step in enumerate(steps) if step is not free_disk and _commands({"steps": [step]}))
    assert ids.index("install") < ids.index("free-disk") < first_build


def test_the_jobs_run_the_stages_in_order() -> None:
    for name, workflow in _workflows().items():
        for job_name in job_order(workflow):
            commands = [command for command, _ in _commands(workflow["jobs"][job_name])]
            ranks = [RANK[command] for command in commands]
            assert ranks == sorted(ranks), f"{name}: {job_name} runs {commands} out of stage order"
            for upstream in _upstream(workflow, job_name):
                before = [RANK[c] for c, arguments in _commands(workflow["jobs"][upstream]) if "--dry-run" not in arguments]
                assert not ranks or max(before, default=0) <= min(ranks), f"{name}: {job_name} runs a stage before {upstream} does"
    jobs = _release()["jobs"]
    builds = [(c, args) for c, args in _commands(jobs["build"]) if "--preflight" not in args]
    assert [c for c, _ in builds] == ["build", "bench-import", "upload"] and "--locked" in builds[0][1]
    assert {"build", "card", "attest"} <= _upstream(_release(), "publish") and "build" in _upstream(_release(), "attest")
    [(command, arguments)] = _commands(jobs["publish"])
    assert command == "upload" and "--dry-run" not in arguments
    assert arguments[arguments.index("--tag") + 1] == "$RELEASE_TAG" and "--attested" in arguments


def test_release_jobs_install_only_hash_pinned_code() -> None:
    workflow = _release()
    for name, job in workflow["jobs"].items():
        scripts = [step.get("run", "") for step in job["steps"]]
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert set(step["with"]) == {"python-version"}, f"{name}: setup-python must not restore a cache"
        for script in scripts:
            for line in (line.strip() for line in script.splitlines()):
                if "pip install" in line and name != "package":
                    assert line in PINNED_INSTALLS, f"{name}: installs something not hash-pinned: {line}"
        installing = [step for step in job["steps"] if "pip install" in step.get("run", "")]
        if name == "package":
            [step] = installing
            assert step["id"] == "wheel"
            lines = [line.strip() for line in step["run"].splitlines()]
            assert lines[0] == "python -m pip install --quiet --require-hashes --only-binary :all: -r requirements/build.txt"
            assert lines[1] == "python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist ."
            continue
        if not installing:
            assert name == "attest", f"{name}: runs the tool without installing it"
            continue
        [step] = installing
        lines = [line.strip() for line in step["run"].splitlines()]
        # The wheel is checked before anything is installed, against the digest package reported.
        assert lines == [WHEEL_CHECK, *sorted(PINNED_INSTALLS, reverse=True)], name
        assert step["env"] == {"WHEEL": "${{ needs.package.outputs.wheel }}", "WHEEL_SHA256": "${{ needs.package.outputs.sha256 }}"}
        assert "package" in needs_of(job) and step["id"] in RUNNER_ONLY_STEPS
    outputs = workflow["jobs"]["package"]["outputs"]
    assert outputs == {"wheel": "${{ steps.wheel.outputs.name }}", "sha256": "${{ steps.wheel.outputs.sha256 }}"}
    assert "package" not in {name for name, job in workflow["jobs"].items() if "write" in job["permissions"].values()}


def test_release_triggers_on_final_release_tags_only() -> None:
    workflow = _release()
    for tag in ("v1.0.0", "v10.20.30", f"{DRAFT}/v1.0.0", "step-3.7-flash-mtp-draft/v2.1.0"):
        assert tag_push_starts_a_run(workflow, tag), tag
    for tag in ("v1.0.0-rc1", f"{DRAFT}/v1.0.0-rc.1", "v1.0", "v1.0.0+build", "1.0.0", "a/b/v1.0.0", "vx.y.z", "release"):
        assert not tag_push_starts_a_run(workflow, tag), tag
    assert workflow[True]["workflow_dispatch"] is None  # no inputs: a dispatch runs from the tag it is started on
    assert "branches" not in workflow[True]["push"]


def test_release_artifacts_outlive_a_week_of_waiting_for_approval() -> None:
    uploads = [step for job in _release()["jobs"].values() for step in job["steps"] if step.get("uses", "").startswith("actions/upload-")]
    assert uploads and all(step["with"]["retention-days"] == 7 and step["with"]["if-no-files-found"] == "error" for step in uploads)


def test_dependabot_keeps_the_pins_current() -> None:
    config = yaml.safe_load((GITHUB / "dependabot.yml").read_text())
    watched = {(update["package-ecosystem"], update["directory"]) for update in config["updates"]}
    assert watched == {("github-actions", "/"), ("pip", "/requirements")}
    assert (ROOT / LOCK).exists() and (ROOT / "requirements" / "build.txt").exists()


def test_the_runner_model_fails_on_what_it_does_not_model(tmp_path: Path) -> None:
    for case, (change, message) in enumerate(
        [
            (lambda w: w["jobs"]["package"].update({"services": {}}), "does not know ['services']"),
            (lambda w: w["jobs"]["package"]["steps"][0].update({"continue-on-error": True}), "does not know"),
            (lambda w: w["jobs"]["package"]["steps"].insert(0, {"uses": "actions/cache@" + "0" * 40}), "the action actions/cache"),
        ]
    ):
        workflow = copy.deepcopy(_release())
        change(workflow)
        run = RunnerLikeRun("release.yml", workflow, ROOT, tmp_path / str(case), {}, {"ref_name": "HEAD"})
        with pytest.raises(pytest.fail.Exception, match=re.escape(message)):
            run.run()


# ---- the release workflow on a runner-like checkout ----------------------------------------------


@pytest.fixture(scope="module")
def synthetic_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workflow-synthetic")
    return {"source": write_source(root / "source", SyntheticSpec()), "target": write_target(root / "target", SyntheticSpec())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _origin(tmp_path: Path, hub: HubServer, weights: dict[str, Path]) -> Release:
    """The project as a maintainer merged it: one draft built and carded, committed on `main`, plus
    the rehearsal draft and a draft without a destination, which publish nowhere."""
    api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
    seed_repo(api, SOURCE_REPO, weights["source"])
    seed_repo(api, TARGET_REPO, weights["target"])
    project = Release(tmp_path / "origin", hub)
    project.folder.mkdir(parents=True)
    project.recipe.write_text(RECIPE)
    (project.root / ".gitignore").write_text("build/\n")
    for name, recipe in (
        ("demo", RECIPE.replace(DESTINATION, "demo/Rehearsal")),
        ("local-only", RECIPE.replace(f"destination: {{repo: {DESTINATION}}}\n", "")),
    ):
        (project.folder.parent / name).mkdir()
        (project.folder.parent / name / "draft.yaml").write_text(recipe)
    project.prepare(tag=None)
    project.repo.git.branch("-M", "main")
    return project


def _run(tmp_path: Path, project: Release, ref: str, *, event: str = "push", run_name: str = "runner", **kwargs: Any) -> RunnerLikeRun:
    """Run release.yml as GitHub would for `ref` (a tag, or the branch `main`)."""
    ref_type = "branch" if ref == "main" else "tag"
    full_ref = f"refs/heads/{ref}" if ref_type == "branch" else f"refs/tags/{ref}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {
        "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),  # the code under test, as the Install step would have installed it
        "HF_HOME": str(tmp_path / f"hf-home-{run_name}"),
        "HF_HUB_DISABLE_XET": "1",  # the embedded Hub speaks LFS only
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_REF": full_ref,
        "GITHUB_REF_NAME": ref,
        "GITHUB_REF_TYPE": ref_type,
        "GITHUB_REPOSITORY": REPOSITORY,
    }
    github = {
        "ref": full_ref,
        "ref_name": ref,
        "ref_type": ref_type,
        "event_name": event,
        "repository": REPOSITORY,
        "event": {"repository": {"default_branch": "main"}},
    }
    secrets = kwargs.pop("secrets", {"release": {"HF_TOKEN": FAKE_TOKEN}})  # an environment secret, as the README sets it up
    workflow = kwargs.pop("workflow", None) or _release()
    run = RunnerLikeRun("release.yml", workflow, project.root, tmp_path / run_name, env, github, secrets, **kwargs)
    run.run()
    return run


def _statuses(run: RunnerLikeRun) -> dict[str, list[str]]:
    return {name: [leg.status for leg in legs] for name, legs in run.jobs.items()}


def test_a_tag_push_publishes_exactly_the_pushed_tag(tmp_path: Path, hub_endpoint: HubServer, synthetic_weights: dict[str, Path]) -> None:
    project = _origin(tmp_path, hub_endpoint, synthetic_weights)
    # Two version tags on one commit, and a bare tag: the only releasable draft is tiny-draft.
    project.repo.create_tag("v1.0.0")
    project.repo.create_tag("v2.0.0")

    run = _run(tmp_path, project, "v1.0.0")

    jobs = run.jobs
    assert all(status == ["success"] for status in _statuses(run).values()), {n: legs[0].log for n, legs in jobs.items()}
    head = project.repo.head.commit.hexsha
    assert json.loads(jobs["select"][0].outputs["drafts"]) == [
        {"draft": DRAFT, "destination": DESTINATION, "tag": "v1.0.0", "commit": head}
    ]
    assert "### Release selected" in jobs["select"][0].summary
    api = project.api
    assert project.tags() == {"v1.0.0": project.commits()[0]}  # not v2.0.0, though it marks the same commit
    assert f"### Release plan: {DRAFT} v1.0.0" in jobs["card"][0].summary and "(will be created)" in jobs["card"][0].summary
    assert f"### Release: {DRAFT} v1.0.0" in jobs["publish"][0].summary and "tag v1.0.0 created" in jobs["publish"][0].summary

    # Attested before the upload, in its own job: every published file, with its published sha256.
    [attested] = jobs["attest"][0].attested
    subjects = {name: digest for digest, name in (line.split("  ", 1) for line in attested["subjects"].splitlines())}
    assert run.events.index("attest: actions/attest") < run.events.index(
        "publish: Upload exactly the attested files to the Hub (one commit, one tag)"
    )
    published = {entry.path for entry in api.list_repo_tree(DESTINATION, revision="v1.0.0", recursive=True) if isinstance(entry, RepoFile)}
    assert set(subjects) == published - {".gitattributes"}  # the Hub's own file, not part of the release
    locked = json.loads((project.folder / "draft.lock.json").read_text())["files"]
    assert {*locked, "README.md", "draft.lock.json", "verify.json"} <= set(subjects)
    for name, digest in subjects.items():
        assert _sha256(Path(api.hf_hub_download(DESTINATION, name, revision="v1.0.0"))) == digest, name
    handed = {p.relative_to(run.artifacts[f"draft-{DRAFT}"]).as_posix() for p in run.artifacts[f"draft-{DRAFT}"].rglob("*") if p.is_file()}
    assert {"verify.json", "extract.json", "fetch/fetch.json", "draft/config.json", "stages/bench-import.json"} <= handed
    assert not any(name.startswith("fetch/tensors") for name in handed)  # the fetched bytes stay on the build runner


def test_a_tag_off_the_default_branch_is_refused_in_select(
    tmp_path: Path, hub_endpoint: HubServer, synthetic_weights: dict[str, Path]
) -> None:
    project = _origin(tmp_path, hub_endpoint, synthetic_weights)
    project.repo.git.checkout("-b", "unreviewed")
    (project.root / "NOTES.md").write_text("pushed to a branch, never merged\n")
    project.commit_and_tag("v1.0.0")

    run = _run(tmp_path, project, f"{DRAFT}/v1.0.0")

    statuses = _statuses(run)
    assert statuses["select"] == ["failure"]
    assert {name: status for name, status in statuses.items() if name not in ("package", "select")} == {
        name: ["skipped"] for name in ("build", "card", "attest", "publish")
    }
    summary = run.jobs["select"][0].summary
    assert summary.startswith("### Release refused") and "is not on origin/main" in summary
    assert not project.api.repo_exists(DESTINATION)


def test_an_unresolved_lock_is_refused_in_select(tmp_path: Path, hub_endpoint: HubServer, synthetic_weights: dict[str, Path]) -> None:
    project = _origin(tmp_path, hub_endpoint, synthetic_weights)
    pending = ROOT / "artifacts" / "step-3.7-flash-mtp-draft" / "draft.lock.json"  # the first real draft, not yet built
    unresolved = json.loads(pending.read_text())["unresolved"]
    (project.folder / "draft.lock.json").write_text(pending.read_text())
    project.commit_and_tag("v1.0.0")

    run = _run(tmp_path, project, f"{DRAFT}/v1.0.0")

    assert _statuses(run)["select"] == ["failure"] and _statuses(run)["build"] == ["skipped"]
    summary = run.jobs["select"][0].summary
    assert "### Release refused" in summary and all(entry in summary for entry in unresolved)


def test_a_dispatch_repeats_the_release_from_its_tag_and_is_refused_from_a_branch(
    tmp_path: Path, hub_endpoint: HubServer, synthetic_weights: dict[str, Path]
) -> None:
    project = _origin(tmp_path, hub_endpoint, synthetic_weights)
    project.repo.create_tag(f"{DRAFT}/v1.0.0")
    assert _statuses(_run(tmp_path, project, f"{DRAFT}/v1.0.0", run_name="push"))["publish"] == ["success"]
    released = project.commits()

    again = _run(tmp_path, project, f"{DRAFT}/v1.0.0", event="workflow_dispatch", run_name="again")
    from_branch = _run(tmp_path, project, "main", event="workflow_dispatch", run_name="branch")

    assert _statuses(again)["publish"] == ["success"], again.jobs["publish"][0].log
    assert "no new commit (nothing changed); tag v1.0.0 unchanged" in again.jobs["publish"][0].summary
    assert project.commits() == released and project.tags() == {"v1.0.0": released[0]}
    assert _statuses(from_branch)["select"] == ["failure"] and _statuses(from_branch)["publish"] == ["skipped"]
    assert "A release runs from its release tag, not from the branch main." in from_branch.jobs["select"][0].summary


def test_trusted_publishing_pinned_to_the_release_environment_publishes_from_that_job_alone(
    tmp_path: Path, hub_endpoint: HubServer, synthetic_weights: dict[str, Path]
) -> None:
    """Without an HF_TOKEN secret the upload step uses trusted publishing: the client asks GitHub for
    an id token with the Hub as audience and exchanges it at `POST /oauth/token`. A publisher whose
    `sub` is pinned to the release environment refuses the same job run outside that environment,
    as a copy of the workflow on any branch or tag could be."""
    project = _origin(tmp_path, hub_endpoint, synthetic_weights)
    project.repo.create_tag(f"{DRAFT}/v1.0.0")
    project.api.create_repo(DESTINATION)  # a trusted publisher is configured on an existing repo
    release_subject = f"repo:{REPOSITORY}:environment:release"
    hub_endpoint.app.publishers = TrustedPublishers([Publisher(DESTINATION, {"sub": release_subject})], {GITHUB_ISSUER: OIDC_KEY})
    provider = IdTokenProvider(
        lambda claims: mint_id_token(
            OIDC_KEY,
            audience=claims["aud"],
            subject=claims["sub"],
            issuer=claims["iss"],
            claims={k: v for k, v in claims.items() if k not in ("iss", "aud", "sub")},
        )
    )
    unprotected = _release()
    del unprotected["jobs"]["publish"]["environment"]
    try:
        outside = _run(tmp_path, project, f"{DRAFT}/v1.0.0", run_name="outside", secrets={}, id_tokens=provider, workflow=unprotected)
        refused_subjects = [claims["sub"] for claims in provider.issued]
        provider.issued.clear()
        inside = _run(tmp_path, project, f"{DRAFT}/v1.0.0", run_name="inside", secrets={}, id_tokens=provider)
    finally:
        provider.close()

    # attest is modelled without Sigstore, so only the upload steps asked for an id token.
    assert refused_subjects == [f"repo:{REPOSITORY}:ref:refs/tags/{DRAFT}/v1.0.0"]
    assert _statuses(outside)["publish"] == ["failure"]
    assert "refused the Trusted Publisher exchange" in outside.jobs["publish"][0].log and "sub" in outside.jobs["publish"][0].log
    assert _statuses(inside)["publish"] == ["success"], inside.jobs["publish"][0].log
    assert [(claims["sub"], claims["aud"]) for claims in provider.issued] == [(release_subject, hub_endpoint.url)]
    assert hub_endpoint.stats.requests_by_route["token_exchange"] == 2  # one refused, one granted
    commits = project.commits()
    assert project.tags() == {"v1.0.0": commits[0]} and len(commits) == 2  # the repo's first commit, then the release


def test_the_runner_model_evaluates_job_conditions_and_skips_after_a_failure(tmp_path: Path) -> None:
    def job(run: str, **keys: Any) -> dict[str, Any]:
        return {"name": run, "runs-on": "ubuntu-24.04", "permissions": {}, **keys, "steps": [{"run": run}]}

    workflow = {
        True: {"push": {"tags": ["v*"]}},
        "jobs": {
            "first": job("true"),
            "on-branch": job("true", needs="first", **{"if": "github.ref_type == 'branch'"}),
            "on-tag": job("false", needs="first", **{"if": "${{ github.ref_type == 'tag' }}"}),
            "after-failure": job("true", needs="on-tag", **{"if": "${{ failure() }}"}),
            "after-success": job("true", needs="on-tag"),
            "after-skip": job("true", needs="on-branch"),
        },
    }
    github = {"ref_name": "HEAD", "ref_type": "tag", "ref": "refs/tags/v1.0.0", "repository": REPOSITORY, "event_name": "push"}
    run = RunnerLikeRun("release.yml", workflow, ROOT, tmp_path / "model", dict(os.environ), github)

    run.run()

    assert _statuses(run) == {
        "first": ["success"],
        "on-branch": ["skipped"],
        "on-tag": ["failure"],
        "after-failure": ["success"],
        "after-success": ["skipped"],
        "after-skip": ["skipped"],
    }


# ---- the benchmark workflow: plan, sweep on a GPU runner, pull request ---------------------------

BENCHMARK = WORKFLOWS / "benchmark.yml"


def test_the_benchmark_workflow_holds_no_hub_credential_and_writes_only_where_it_opens_the_pull_request() -> None:
    workflow = _workflows()["benchmark.yml"]
    assert list(workflow[True]) == ["workflow_dispatch"]
    assert set(workflow[True]["workflow_dispatch"]["inputs"]) == {"draft", "runner-label", "image"}
    text = BENCHMARK.read_text()
    assert "secrets." not in text and "HF_TOKEN" not in text
    jobs = workflow["jobs"]
    assert jobs["sweep"]["runs-on"] == ["self-hosted", "${{ inputs.runner-label }}"]
    writers = {name: job["permissions"] for name, job in jobs.items() if "write" in job["permissions"].values()}
    assert writers == {"pull-request": {"contents": "write", "pull-requests": "write"}}
    assert [c for job in jobs.values() for c, _ in _commands(job)] == ["bench-plan"]


def test_the_benchmark_workflow_plans_sweeps_and_proposes_results_that_import_with_the_plan_alone(tmp_path: Path) -> None:
    from tests import fake_docker, fake_vllm_sweep
    from tests.test_bench_plan import fake_executables, real_prompts_plan, step_recipe

    draft, run_id = "bench-test", "4242"
    origin = tmp_path / "origin"
    recipe = step_recipe() | {"benchmarks": {"plan": real_prompts_plan()}}
    (origin / "artifacts" / draft).mkdir(parents=True)
    (origin / "artifacts" / draft / "draft.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(origin)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "recipe"], check=True)
    fakes = {"vllm": fake_vllm_sweep.__file__, "docker": fake_docker.__file__}
    bin_dir = fake_executables(tmp_path / "fake-bin", fakes)
    gh_log = tmp_path / "gh.log"
    (bin_dir / "gh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(gh_log))}\n')
    (bin_dir / "gh").chmod(0o755)
    # The dispatch inputs and the job token, as GitHub would fill them in.
    text = BENCHMARK.read_text()
    for expression, value in {"inputs.draft": draft, "inputs.runner-label": "gpu-test", "inputs.image": "", "github.token": "t"}.items():
        text = text.replace("${{ " + expression + " }}", value)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path / "home"),
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_REF_NAME": "main",
        "GITHUB_RUN_ID": run_id,
    }

    github = {
        "ref": "refs/heads/main",
        "ref_name": "main",
        "ref_type": "branch",
        "event_name": "workflow_dispatch",
        "repository": REPOSITORY,
    }
    run = RunnerLikeRun("benchmark.yml", yaml.safe_load(text), origin, tmp_path / "runner", env, github)
    run.run()
    assert all(status == ["success"] for status in _statuses(run).values()), {n: legs[0].log for n, legs in run.jobs.items()}

    [branch] = [
        b
        for b in subprocess.run([*git, "branch", "--format=%(refname:short)"], capture_output=True, text=True).stdout.split()
        if b != "main"
    ]
    date = branch.removeprefix(f"benchmarks/{draft}/").removesuffix(f"-{run_id}")
    proposed = tmp_path / "proposed"
    subprocess.run(["git", "clone", "--quiet", "-b", branch, str(origin), str(proposed)], check=True)
    folder = proposed / "artifacts" / draft / "benchmarks" / date
    assert {"serve_params.json", "bench_params.json", "run.sh", "RUN.md"} <= {p.name for p in folder.iterdir()}
    assert len(list(folder.glob("*/SERVE--*-BENCH--*/run=*.json"))) == 2 * 20 * 3  # 2 servers x 20 cells x 3 runs
    gh_calls = gh_log.read_text().splitlines()
    assert gh_calls[0] == "auth setup-git" and gh_calls[1].startswith(
        f"pr create --base main --head {branch} --title Benchmarks of {draft}"
    )

    # The pull request's instruction: name the folder in the plan, and bench-import pairs every cell.
    recipe["benchmarks"]["plan"]["results"] = date
    (proposed / "artifacts" / draft / "draft.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = run_cli("bench-import", "--recipe", str(proposed / "artifacts" / draft / "draft.yaml"), "--workdir", str(tmp_path / "work"))
    assert result.code == 0, result.stderr
    document = json.loads((tmp_path / "work" / "benchmarks" / "benchmarks.json").read_text())
    assert len(document["summary"]) == 4 and all(row["speculative"] for row in document["summary"])
    assert all(cell["speedup"] is not None for row in document["matrix"]["cells"] for cell in row)


# ---- the watch workflow -------------------------------------------------------------------------

WATCH = WORKFLOWS / "watch.yml"
RANK["watch"] = 0  # watch decides what there is to review, before any stage runs
# A stand-in for the GitHub CLI: it records each call, keeps the body of a created pull request,
# and answers `pr view` as GitHub does when the branch has no pull request yet.
FAKE_GH = """#!/bin/bash
printf '%s\\n' "$*" >> "$GH_LOG"
case "$1 $2" in
  "pr view") exit 1 ;;
  "pr create")
    while [ $# -gt 0 ]; do
      if [ "$1" = --body-file ]; then cp "$2" "$GH_LOG.body"; fi
      shift
    done ;;
esac
"""


def test_the_watch_workflow_runs_daily_and_on_demand_with_only_branch_and_pull_request_rights() -> None:
    workflow = _workflows()["watch.yml"]
    assert set(workflow[True]) == {"schedule", "workflow_dispatch"} and workflow[True]["schedule"][0]["cron"]
    [job] = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    text = WATCH.read_text()
    assert "HF_TOKEN" not in text and set(re.findall(r"secrets\.\w+", text)) == {"secrets.GITHUB_TOKEN"}
    assert [(c, a) for c, a in _commands(job) if c == "watch"] == [
        ("watch", ["--all", "--propose", "--json", "--summary", "$GITHUB_STEP_SUMMARY"])
    ]


def _gh_job_env(tmp_path: Path, event: str) -> tuple[dict[str, str], Path]:
    """A job's environment on main with a stand-in `gh` that logs its calls; no Hub token in it."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "gh").write_text(FAKE_GH)
    (tools / "gh").chmod(0o755)
    gh_log = tmp_path / "gh.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {
        "PATH": f"{tools}{os.pathsep}{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REF_NAME": "main",
        "GITHUB_REF_TYPE": "branch",
        "GH_LOG": str(gh_log),
    }
    return env, gh_log


def test_the_watch_workflow_pushes_the_proposal_and_opens_a_pull_request_with_the_card_review(
    tmp_path: Path, release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    project = release
    project.prepare(tag=None)
    project.repo.git.branch("-M", "main")
    new_target = project.api.upload_folder(
        repo_id=TARGET_REPO, folder_path=str(synthetic_pairs["redundant-target"]), commit_message="Restore the MTP layers"
    ).oid
    env, gh_log = _gh_job_env(tmp_path, "schedule")

    github = {"ref": "refs/heads/main", "ref_name": "main", "ref_type": "branch", "event_name": "schedule", "repository": REPOSITORY}
    jobs = RunnerLikeRun(
        "watch.yml", yaml.safe_load(WATCH.read_text()), project.root, tmp_path / "runner", env, github, {"": {"GITHUB_TOKEN": "ghs_test"}}
    ).run()

    branch = project.repo.commit(f"watch/{DRAFT}")
    assert branch.parents == (project.repo.commit("main"),)
    assert {d.a_path for d in branch.parents[0].diff(branch)} == {f"artifacts/{DRAFT}/draft.lock.json", f"artifacts/{DRAFT}/README.md"}
    assert json.loads((branch.tree / f"artifacts/{DRAFT}/draft.lock.json").data_stream.read())["target"]["commit"] == new_target
    calls = gh_log.read_text().splitlines()
    title = f"{DRAFT}: target at {new_target[:12]}: now redundant"
    assert calls[0] == "auth setup-git" and calls[1].startswith(f"pr view watch/{DRAFT}")
    assert calls[2].startswith(f"pr create --head watch/{DRAFT} --base main --title {title} --body-file ")
    body = Path(f"{gh_log}.body").read_text()
    assert not body.startswith("# ") and "| Target | synthetic/Step-3.7-Flash-NVFP4 |" in body and "now redundant" in body
    assert "### Card review\n\n- `card --check`: the committed card equals a fresh render of the committed lock." in body
    # a redundant draft's release is refused unless forced, and the body says so with the hint
    assert "- The release plan was refused:\n\n```text\nerror: inspect: the draft is redundant" in body and "publish --force" in body
    [run] = jobs["watch"]
    assert "### Upstream watch" in run.summary and f"| {DRAFT} | target moved" in run.summary

    RunnerLikeRun(
        "watch.yml", yaml.safe_load(WATCH.read_text()), project.root, tmp_path / "runner-2", env, github, {"": {"GITHUB_TOKEN": "ghs_test"}}
    ).run()

    assert project.repo.commit(f"watch/{DRAFT}") == branch  # nothing new upstream: the pushed proposal is kept, not rewritten
    again = gh_log.read_text().splitlines()[3:]
    assert again[0] == "auth setup-git" and again[1].startswith(f"pr view watch/{DRAFT}")  # the pull request is still brought up to date


# ---- the lock workflow: a pending draft built in CI and proposed as a pull request ---------------

LOCK_WORKFLOW = WORKFLOWS / "lock.yml"
RANK["lock"] = RANK["build"]  # lock is the build, then the card rendered from the lock it wrote


def test_the_lock_workflow_runs_on_demand_with_only_branch_and_pull_request_rights_and_keeps_no_weights() -> None:
    workflow = _workflows()["lock.yml"]
    assert list(workflow[True]) == ["workflow_dispatch"] and workflow[True]["workflow_dispatch"]["inputs"]["draft"]["required"]
    [job] = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    text = LOCK_WORKFLOW.read_text()
    assert "HF_TOKEN" not in text and re.findall(r"secrets\.\w+", text) == ["secrets.GITHUB_TOKEN"]
    actions = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]
    assert actions == ["actions/checkout", "actions/setup-python"]  # no artifact, no cache: the weights die with the runner
    assert _commands(job)[:2] == [
        ("build", ["--draft", "$DRAFT", "--preflight"]),
        ("lock", ["--draft", "$DRAFT", "--propose", "--json"]),
    ]
    ids = [step.get("id") for step in job["steps"]]
    proposing = next(i for i, step in enumerate(job["steps"]) if ("lock" in dict(_commands({"steps": [step]}))))
    assert ids.index("install") < ids.index("free-disk") < proposing  # the disk is checked before the build


def test_the_lock_workflow_proposes_a_pending_drafts_first_lock_and_then_has_nothing_to_do(tmp_path: Path, release: Release) -> None:
    from tests.test_lock_flow import REVIEW_FILES, commit_pending_draft

    project = release
    commit_pending_draft(project)
    main = project.repo.commit("main")
    env, gh_log = _gh_job_env(tmp_path, "workflow_dispatch")
    workflow = yaml.safe_load(LOCK_WORKFLOW.read_text().replace("${{ inputs.draft }}", DRAFT))  # the dispatch input

    github = {
        "ref": "refs/heads/main",
        "ref_name": "main",
        "ref_type": "branch",
        "event_name": "workflow_dispatch",
        "repository": REPOSITORY,
    }
    secrets = {"": {"GITHUB_TOKEN": "ghs_test"}}

    [run] = RunnerLikeRun("lock.yml", workflow, project.root, tmp_path / "runner", env, github, secrets).run()["lock"]

    assert run.status == "success", run.log

    branch = project.repo.commit(f"lock/{DRAFT}")
    assert branch.parents == (main,) and {d.a_path for d in main.diff(branch)} == REVIEW_FILES
    lock = json.loads((branch.tree / f"artifacts/{DRAFT}/draft.lock.json").data_stream.read())
    assert lock["unresolved"] == [] and lock["source"]["commit"] == project.api.repo_info(SOURCE_REPO).sha
    assert all(tensor["sha256"] for tensor in lock["tensors"]) and lock["inspect"]["verdict"] == "needed"
    calls = gh_log.read_text().splitlines()
    title = f"{DRAFT}: resolve the lock at source {lock['source']['commit'][:12]}, target {lock['target']['commit'][:12]} (inspect: needed)"
    assert calls[0] == "auth setup-git" and calls[1].startswith(f"pr view lock/{DRAFT}")
    assert calls[2].startswith(f"pr create --head lock/{DRAFT} --base main --title {title} --body-file ")
    body = Path(f"{gh_log}.body").read_text()
    assert not body.startswith("# ") and "### Verify\n\n- passed: " in body and "### Inspect\n\n- **needed**: " in body
    assert "### Card review\n\n- `card --check`: the committed card equals a fresh render of the committed lock" in body
    assert f"### Release plan: {DRAFT}" in body and "The release plan was refused" not in body
    assert "### Card review" in run.summary
    assert not (tmp_path / "runner" / "artifacts").exists()

    # After the pull request is merged, a second run finds the lock resolved and proposes nothing.
    project.repo.git.merge(f"lock/{DRAFT}", ff_only=True)
    gh_log.unlink()
    [again] = RunnerLikeRun("lock.yml", workflow, project.root, tmp_path / "runner-again", env, github, secrets).run()["lock"]
    assert again.status == "success" and not gh_log.exists() and "already resolved" in again.summary
    assert project.repo.commit(f"lock/{DRAFT}") == branch
