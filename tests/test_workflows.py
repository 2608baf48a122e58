"""The GitHub Actions workflows: clean under zizmor and actionlint, hardened, calling only commands
the CLI has, in stage order; and the release workflow's jobs, run as a hosted runner would run them
on a fresh checkout of a tagged project, publish a tagged release to the embedded Hub."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import HfApi

from pipeline.cli.main import build_parser
from pipeline.flows.runner import STAGE_NAMES
from pipeline.rehearsal.hub import HubServer
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN, SOURCE_REPO, TARGET_REPO, seed_repo
from tests.release_fixtures import DESTINATION, DRAFT, RECIPE, Release

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
TOOLS = Path(sys.executable).parent  # the test extra installs zizmor, actionlint and shellcheck beside python
# Where each command stands in a release: choose the drafts, the build stages (`build` is all four),
# bench-import, the card, then the upload.
RANK = {"drafts": 0, **{name: i + 1 for i, name in enumerate(STAGE_NAMES)}, "build": STAGE_NAMES.index("verify") + 1}
RANK |= {"card": len(STAGE_NAMES) + 1, "upload": len(STAGE_NAMES) + 2, "publish": len(STAGE_NAMES) + 2}
RANK |= {"bench-plan": RANK["bench-import"]}  # the benchmark workflow plans the runs bench-import reads later
# Steps only a hosted runner runs: freeing its disk (sudo), and installing the tool, which the
# test environment already has.
RUNNER_ONLY_STEPS = {"free-disk", "install"}
PIPELINE_COMMAND = re.compile(r"python -m pipeline ([a-z-]+)([^\n]*)")
SHELL_OPERATORS = {">", ">>", "|", "||", "&&", ";", ")", "2>"}


def _workflows() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(WORKFLOWS.glob("*.yml"))}


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _job_order(workflow: dict[str, Any]) -> list[str]:
    """Jobs in an order that respects `needs`, ties kept in file order."""
    jobs, done = workflow["jobs"], []
    while len(done) < len(jobs):
        ready = [name for name, job in jobs.items() if name not in done and set(_needs(job)) <= set(done)]
        assert ready, f"the jobs {sorted(set(jobs) - set(done))} need each other"
        done.append(ready[0])
    return done


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


def _zizmor(*persona: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_tool("zizmor"), "--offline", "--format", "json", *persona, str(WORKFLOWS)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def test_zizmor_finds_nothing() -> None:
    findings = _zizmor()
    assert findings == [], [(f["ident"], f["desc"]) for f in findings]


def test_zizmor_as_auditor_finds_nothing_of_high_severity() -> None:
    high = [f for f in _zizmor("--persona", "auditor") if f["determinations"]["severity"] == "High"]
    assert high == [], [(f["ident"], f["desc"]) for f in high]


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
        for line in re.findall(r"uses: \S+.*", text):
            assert re.fullmatch(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), f"{name}: pin to a full commit: {line}"
        for job_name, job in workflow["jobs"].items():
            assert job.get("name") and job.get("permissions"), f"{name}: {job_name} needs a name and its own permissions"
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), f"{name}: {job_name} expands an expression in run: text; pass it through env:"
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{name}: {job_name} keeps the git credential"
    release = _workflows()["release.yml"]
    writers = {name for name, job in release["jobs"].items() if "write" in job["permissions"].values()}
    assert writers == {"publish"}
    assert [name for name, job in release["jobs"].items() if "secrets." in json.dumps(job)] == ["publish"]
    assert release["jobs"]["publish"]["environment"]["name"] == "release"


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
        ranks = []
        for job_name in _job_order(workflow):
            commands = [command for command, _ in _commands(workflow["jobs"][job_name])]
            job_ranks = [RANK[command] for command in commands]
            assert job_ranks == sorted(job_ranks), f"{name}: {job_name} runs {commands} out of stage order"
            ranks += job_ranks
        assert ranks == sorted(ranks), f"{name}: the jobs run the stages out of order"
    jobs = _workflows()["release.yml"]["jobs"]
    builds = [(c, args) for c, args in _commands(jobs["build"]) if "--preflight" not in args]
    assert [c for c, _ in builds] == ["build"] and "--locked" in builds[0][1]
    assert set(_needs(jobs["publish"])) >= {"build", "card"}
    assert [c for c, _ in _commands(jobs["publish"])] == ["upload"] and "--dry-run" not in _commands(jobs["publish"])[0][1]


# ---- the release workflow on a runner-like checkout ----------------------------------------------


class Context(dict):
    """An expression context: `ctx.name` reads a key, and a missing one is empty, as on GitHub."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name, "")


def _context(value: Any) -> Any:
    return Context({k: _context(v) for k, v in value.items()}) if isinstance(value, dict) else value


EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)


def _evaluate(expression: str, contexts: dict[str, Any]) -> Any:
    """The expression forms these workflows use (lookups, fromJSON, ==, &&, ||, !), in Python terms."""
    python = re.sub(r"!(?!=)", " not ", expression.replace("&&", " and ").replace("||", " or "))
    return eval(python, {"__builtins__": {}, "fromJSON": json.loads, "cancelled": lambda: False}, contexts)


def _condition(text: str, contexts: dict[str, Any]) -> bool:
    """An `if:`, written with or without `${{ }}`."""
    whole = EXPRESSION.fullmatch(text.strip())
    return bool(_evaluate(whole[1] if whole else text, contexts))


def _render(value: Any, contexts: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    whole = EXPRESSION.fullmatch(value.strip())
    if whole:
        return _evaluate(whole[1], contexts)
    return EXPRESSION.sub(lambda m: str(_evaluate(m[1], contexts)), value)


def _read_outputs(path: Path) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` blocks, as a step writes them to $GITHUB_OUTPUT."""
    outputs: dict[str, str] = {}
    block: tuple[str, str, list[str]] | None = None
    for line in path.read_text().splitlines() if path.exists() else []:
        if block is not None:
            name, delimiter, lines = block
            if line == delimiter:
                outputs[name], block = "\n".join(lines), None
            else:
                lines.append(line)
        elif re.match(r"[\w-]+<<", line):
            name, delimiter = line.split("<<", 1)
            block = (name, delimiter, [])
        else:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def _files(folder: Path) -> Iterator[Path]:
    # upload-artifact leaves out hidden files unless asked
    yield from (
        p for p in sorted(folder.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


@dataclass
class JobRun:
    workspace: Path
    temp: Path
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    attested: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunnerLikeRun:
    """Runs a workflow's jobs in order, each matrix leg on a fresh clone, sharing only artifacts."""

    workflow: dict[str, Any]
    origin: Path
    ref: str
    root: Path
    env: dict[str, str]
    secrets: dict[str, str]
    artifacts: dict[str, Path] = field(default_factory=dict)
    jobs: dict[str, list[JobRun]] = field(default_factory=dict)

    def run(self) -> dict[str, list[JobRun]]:
        for name in _job_order(self.workflow):
            job = self.workflow["jobs"][name]
            needs = {n: {"outputs": self.jobs[n][0].outputs} for n in _needs(job)}
            matrix = job.get("strategy", {}).get("matrix", {})
            legs = _render(matrix["include"], {"needs": _context(needs)}) if matrix else [{}]
            self.jobs[name] = [self._run_job(name, job, leg, needs) for leg in legs]
        return self.jobs

    def _run_job(self, name: str, job: dict[str, Any], leg: dict[str, Any], needs: dict[str, Any]) -> JobRun:
        folder = self.root / f"{name}-{len(self.jobs.get(name, []))}-{leg.get('draft', 'all')}"
        run = JobRun(folder / "workspace", folder / "runner-temp")
        run.temp.mkdir(parents=True)
        subprocess.run(["git", "clone", "--quiet", str(self.origin), str(run.workspace)], check=True)
        subprocess.run(["git", "-C", str(run.workspace), "checkout", "--quiet", self.ref], check=True)
        contexts: dict[str, Any] = {
            "matrix": _context(leg),
            "needs": _context(needs),
            "inputs": Context(),
            "secrets": _context(self.secrets),
            "runner": _context({"temp": str(run.temp)}),
            "steps": Context(),
        }
        env = dict(self.env)
        for scope in (self.workflow.get("env", {}), job.get("env", {})):
            contexts["env"] = _context(env)
            env |= {k: str(_render(v, contexts)) for k, v in scope.items()}
        for index, step in enumerate(job["steps"]):
            contexts["env"] = _context(env)
            if "if" in step and not _condition(str(step["if"]), contexts):
                continue
            if "uses" in step:
                self._action(step, run, contexts)
            elif step.get("id") not in RUNNER_ONLY_STEPS:
                self._script(name, index, step, run, env, contexts)
        run.outputs = {k: str(_render(v, contexts)) for k, v in job.get("outputs", {}).items()}
        return run

    def _script(self, job: str, index: int, step: dict[str, Any], run: JobRun, env: dict[str, str], contexts: dict[str, Any]) -> None:
        output, summary, script = run.temp / f"output-{index}", run.temp / f"summary-{index}", run.temp / f"step-{index}.sh"
        script.write_text(step["run"])
        step_env = env | {k: str(_render(v, contexts)) for k, v in step.get("env", {}).items()}
        step_env |= {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(run.temp)}
        step_env |= {"GITHUB_WORKSPACE": str(run.workspace)}
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=run.workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{job}: step {step.get('name', index)} failed\n{result.stdout}\n{result.stderr}"
        if "id" in step:
            contexts["steps"][step["id"]] = _context({"outputs": _read_outputs(output)})
        run.summary += summary.read_text() if summary.exists() else ""

    def _action(self, step: dict[str, Any], run: JobRun, contexts: dict[str, Any]) -> None:
        action = step["uses"].split("@")[0]
        inputs = {k: _render(v, contexts) for k, v in step.get("with", {}).items()}
        if action == "actions/upload-artifact":
            self._upload_artifact(run.workspace, inputs)
        elif action == "actions/download-artifact":
            shutil.copytree(self.artifacts[inputs["name"]], run.workspace / inputs.get("path", "."), dirs_exist_ok=True)
        elif action == "actions/attest":
            run.attested.append(inputs)
        # checkout happened when the job started; setup-python is the test's own interpreter

    def _upload_artifact(self, workspace: Path, inputs: dict[str, Any]) -> None:
        """Copy the files as the artifact holds them: paths relative to the searched paths' common folder."""
        searched = [workspace / line.strip() for line in inputs["path"].splitlines() if line.strip()]
        root = Path(os.path.commonpath(searched)) if len(searched) > 1 else searched[0] if searched[0].is_dir() else searched[0].parent
        found = [p for path in searched for p in ([path] if path.is_file() else _files(path) if path.is_dir() else [])]
        if not found and inputs.get("if-no-files-found") == "error":
            pytest.fail(f"artifact {inputs['name']}: no files at {inputs['path']}")
        stored = self.root / "artifacts" / inputs["name"]
        assert not stored.exists(), f"artifact {inputs['name']} uploaded twice"
        for path in found:
            (stored / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, stored / path.relative_to(root))
        self.artifacts[inputs["name"]] = stored


@pytest.fixture(scope="module")
def synthetic_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workflow-synthetic")
    return {"source": write_source(root / "source", SyntheticSpec()), "target": write_target(root / "target", SyntheticSpec())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_release_workflow_publishes_a_tagged_release_from_a_fresh_checkout(
    tmp_path: Path, hub_endpoint: HubServer, synthetic_weights: dict[str, Path]
) -> None:
    api = HfApi(endpoint=hub_endpoint.url, token=FAKE_TOKEN)
    seed_repo(api, SOURCE_REPO, synthetic_weights["source"])
    seed_repo(api, TARGET_REPO, synthetic_weights["target"])
    project = Release(tmp_path / "origin", hub_endpoint)
    project.folder.mkdir(parents=True)
    project.recipe.write_text(RECIPE)
    (project.root / ".gitignore").write_text("build/\n")
    (project.folder.parent / "another-draft").mkdir()
    (project.folder.parent / "another-draft" / "draft.yaml").write_text(RECIPE.replace(DESTINATION, "release-test/Another"))
    project.prepare(tag="v1.0.0")  # build, card, commit, tag: what a maintainer merges and tags
    tag = f"{DRAFT}/v1.0.0"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {
        "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),  # the code under test, as the Install step would have installed it
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",  # the embedded Hub speaks LFS only
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REF": f"refs/tags/{tag}",
        "GITHUB_REF_NAME": tag,
        "GITHUB_REF_TYPE": "tag",
    }
    workflow = yaml.safe_load(RELEASE.read_text())

    jobs = RunnerLikeRun(workflow, project.root, tag, tmp_path / "runner", env, {"HF_TOKEN": FAKE_TOKEN}).run()

    assert json.loads(jobs["select"][0].outputs["drafts"]) == [{"draft": DRAFT, "destination": DESTINATION}]
    commits = [c.commit_id for c in api.list_repo_commits(DESTINATION)]
    assert {t.name: t.target_commit for t in api.list_repo_refs(DESTINATION).tags} == {"v1.0.0": commits[0]}
    handed = {
        p.relative_to(tmp_path / "runner" / "artifacts" / f"draft-{DRAFT}").as_posix()
        for p in _files(tmp_path / "runner" / "artifacts" / f"draft-{DRAFT}")
    }
    assert {"verify.json", "extract.json", "fetch/fetch.json", "draft/config.json"} <= handed
    assert not any(name.startswith("fetch/tensors") for name in handed)  # the fetched bytes stay on the build runner
    assert f"### Release plan: {DRAFT} v1.0.0" in jobs["card"][0].summary and "(will be created)" in jobs["card"][0].summary
    assert f"### Release: {DRAFT} v1.0.0" in jobs["publish"][0].summary and "tag v1.0.0 created" in jobs["publish"][0].summary

    publish = jobs["publish"][0]
    [attested] = publish.attested
    subjects = dict(line.split("  ")[::-1] for line in Path(attested["subject-checksums"]).read_text().splitlines())
    locked = json.loads((project.folder / "draft.lock.json").read_text())["files"]
    assert set(subjects) == {*locked, "README.md", "draft.lock.json", "verify.json"}
    for name, digest in subjects.items():
        assert _sha256(Path(api.hf_hub_download(DESTINATION, name, revision="v1.0.0"))) == digest, name


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

    RunnerLikeRun(yaml.safe_load(text), origin, "main", tmp_path / "runner", env, {}).run()

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
    assert "HF_TOKEN" not in text and re.findall(r"secrets\.\w+", text) == ["secrets.GITHUB_TOKEN"]
    assert [(c, a) for c, a in _commands(job) if c == "watch"] == [
        ("watch", ["--all", "--propose", "--json", "--summary", "$GITHUB_STEP_SUMMARY"])
    ]


def test_the_watch_workflow_pushes_the_proposal_and_opens_a_pull_request_with_the_card_review(
    tmp_path: Path, release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    project = release
    project.prepare(tag=None)
    project.repo.git.branch("-M", "main")
    new_target = project.api.upload_folder(
        repo_id=TARGET_REPO, folder_path=str(synthetic_pairs["redundant-target"]), commit_message="Restore the MTP layers"
    ).oid
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
        "GITHUB_EVENT_NAME": "schedule",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REF_NAME": "main",
        "GITHUB_REF_TYPE": "branch",
        "GH_LOG": str(gh_log),
    }

    jobs = RunnerLikeRun(
        yaml.safe_load(WATCH.read_text()), project.root, "main", tmp_path / "runner", env, {"GITHUB_TOKEN": "ghs_test"}
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
