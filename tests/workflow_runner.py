"""A model of a hosted runner, strict enough to run the release workflow's jobs as GitHub would.

Each job runs on a fresh clone of the project at the workflow's ref, in `needs` order, one leg per
matrix entry; jobs share only declared artifacts and outputs. Job-level `if:` is evaluated, a
failed step fails its job and skips every job that needs it, environment secrets reach only jobs
that declare that environment, and an OIDC id token can be requested only by jobs granted
`id-token: write` (GitHub sets ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN for those alone), with the
claims GitHub would give that job. Anything the model does not know (a job or step key, an action)
fails the test rather than being skipped, so the workflow cannot drift past it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from secrets import token_hex
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

# Steps only a hosted runner runs: freeing its disk (sudo), building the wheel and installing it
# with its hash-pinned dependencies from the package index. The test environment already has the
# code under test on PYTHONPATH and never reaches an index; tests/test_workflows.py checks what
# those steps install.
RUNNER_ONLY_STEPS = {"free-disk", "wheel", "install"}
# Artifacts only those steps make or use.
RUNNER_ONLY_ARTIFACTS = {"tool-wheel"}
MODELLED_JOB_KEYS = {
    "name",
    "needs",
    "if",
    "runs-on",
    "timeout-minutes",
    "permissions",
    "environment",
    "outputs",
    "strategy",
    "env",
    "concurrency",
    "steps",
}
MODELLED_STEP_KEYS = {"name", "id", "if", "uses", "with", "run", "env"}
# Checkout happens when a job starts (a fresh clone); setup-python is the test's own interpreter.
MODELLED_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/upload-artifact", "actions/download-artifact", "actions/attest"}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
ISSUER = "https://token.actions.githubusercontent.com"


class _Null:
    """GitHub's null: what a missing property reads as; its properties are null too, it is falsy,
    prints as nothing and equals '' (expressions compare loosely)."""

    def __getattr__(self, name: str) -> _Null:
        return self

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Null) or other in ("", None, 0, False)

    def __hash__(self) -> int:
        return 0


NULL = _Null()


class Context(dict):
    """An expression context: `ctx.name` reads a key, and a missing one is null, as on GitHub."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name, NULL)


def context(value: Any) -> Any:
    return Context({k: context(v) for k, v in value.items()}) if isinstance(value, dict) else value


def evaluate(expression: str, contexts: dict[str, Any], upstream_ok: bool = True) -> Any:
    """The expression forms these workflows use (lookups, fromJSON, ==, !=, &&, ||, !, the status
    functions), in Python terms."""
    python = re.sub(r"!(?!=)", " not ", expression.replace("&&", " and ").replace("||", " or "))
    functions = {
        "fromJSON": json.loads,
        "cancelled": lambda: False,
        "success": lambda: upstream_ok,
        "failure": lambda: not upstream_ok,
        "always": lambda: True,
    }
    return eval(python, {"__builtins__": {}, **functions}, contexts)


def condition(text: str, contexts: dict[str, Any], upstream_ok: bool = True) -> bool:
    """An `if:`, written with or without `${{ }}`; without a status function it also needs success()."""
    whole = EXPRESSION.fullmatch(text.strip())
    expression = whole[1] if whole else text
    if not re.search(r"\b(success|failure|always|cancelled)\(\)", expression):
        expression = f"success() && ({expression})"
    return bool(evaluate(expression, contexts, upstream_ok))


def render(value: Any, contexts: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    whole = EXPRESSION.fullmatch(value.strip())
    if whole:
        return evaluate(whole[1], contexts)
    return EXPRESSION.sub(lambda m: str(evaluate(m[1], contexts)), value)


def filter_pattern(pattern: str) -> re.Pattern[str]:
    """GitHub's branch and tag filter pattern as a regex over the whole name: `*` is anything but
    `/`, `**` anything, `?` and `+` make the character before optional or repeated, `[]` a class."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        elif pattern[i] in "?+":
            out, i = out + pattern[i], i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def tag_push_starts_a_run(workflow: dict[str, Any], tag: str) -> bool:
    """Whether pushing `tag` triggers `workflow`: the last matching pattern decides, `!` negates."""
    push = (workflow[True] or {}).get("push") or {}  # YAML 1.1 reads the key `on` as true
    if "tags-ignore" in push:
        return not any(filter_pattern(p).fullmatch(tag) for p in push["tags-ignore"])
    matched = False
    for pattern in push.get("tags", []):
        negated = pattern.startswith("!")
        if filter_pattern(pattern[1:] if negated else pattern).fullmatch(tag):
            matched = not negated
    return matched


def needs_of(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def job_order(workflow: dict[str, Any]) -> list[str]:
    """Jobs in an order that respects `needs`, ties kept in file order."""
    jobs, done = workflow["jobs"], []
    while len(done) < len(jobs):
        ready = [name for name, job in jobs.items() if name not in done and set(needs_of(job)) <= set(done)]
        assert ready, f"the jobs {sorted(set(jobs) - set(done))} need each other"
        done.append(ready[0])
    return done


def read_outputs(path: Path) -> dict[str, str]:
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


def visible_files(folder: Path) -> Iterator[Path]:
    # upload-artifact leaves out hidden files unless asked
    yield from (
        p for p in sorted(folder.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def id_token_claims(workflow_file: str, job: dict[str, Any], github: dict[str, Any], audience: str) -> dict[str, Any]:
    """The claims GitHub's OIDC provider puts in a job's id token (facts/hub-api.md §4): the subject
    is the environment when the job declares one, else the ref."""
    environment = job.get("environment")
    name = environment.get("name") if isinstance(environment, dict) else environment
    repository = github["repository"]
    subject = f"repo:{repository}:environment:{name}" if name else f"repo:{repository}:ref:{github['ref']}"
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "sub": subject,
        "repository": repository,
        "ref": github["ref"],
        "ref_type": github["ref_type"],
        "event_name": github["event_name"],
        "workflow": workflow_file,
        "job_workflow_ref": f"{repository}/.github/workflows/{workflow_file}@{github['ref']}",
    }
    return claims | ({"environment": name} if name else {})


class IdTokenProvider:
    """GitHub's id-token request endpoint for one job: answers `GET ?audience=` with a token minted
    by `mint(claims)`, for a caller holding the job's request token, and records what it issued."""

    def __init__(self, mint: Any) -> None:
        self.mint = mint
        self.issued: list[dict[str, Any]] = []
        self._jobs: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if bearer not in provider._jobs or "audience" not in query:
                    self.send_response(401)
                    self.end_headers()
                    return
                workflow_file, job, github = provider._jobs[bearer]
                claims = id_token_claims(workflow_file, job, github, query["audience"][0])
                provider.issued.append(claims)
                body = json.dumps({"value": provider.mint(claims)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def grant(self, workflow_file: str, job: dict[str, Any], github: dict[str, Any]) -> dict[str, str]:
        """The environment GitHub gives a job with `id-token: write`."""
        request_token = token_hex(16)
        self._jobs[request_token] = (workflow_file, job, github)
        return {"ACTIONS_ID_TOKEN_REQUEST_URL": self.url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": request_token}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class JobRun:
    name: str
    workspace: Path
    temp: Path
    status: str = "success"  # success | failure | skipped
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    log: str = ""
    attested: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RunnerLikeRun:
    """Runs a workflow's jobs in order, each matrix leg on a fresh clone, sharing only artifacts.

    `secrets` maps an environment name to its secrets ("" holds the repository's); `github` is the
    `github` context (ref, ref_name, ref_type, event_name, repository, event).
    """

    workflow_file: str
    workflow: dict[str, Any]
    origin: Path
    root: Path
    env: dict[str, str]
    github: dict[str, Any]
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    id_tokens: IdTokenProvider | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    jobs: dict[str, list[JobRun]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # "job: step" in the order they ran

    def run(self) -> dict[str, list[JobRun]]:
        for name in job_order(self.workflow):
            job = self.workflow["jobs"][name]
            unknown = set(job) - MODELLED_JOB_KEYS
            if unknown:
                pytest.fail(f"job {name}: the runner model does not know {sorted(unknown)}; model it before using it")
            needs = {n: {"outputs": self.jobs[n][0].outputs, "result": self.jobs[n][0].status} for n in needs_of(job)}
            contexts = {"needs": context(needs), "github": context(self.github), "inputs": Context()}
            upstream_ok = all(run.status == "success" for n in needs_of(job) for run in self.jobs[n])
            if not condition(str(job.get("if", "success()")), contexts, upstream_ok):
                self.jobs[name] = [JobRun(name, Path(), Path(), status="skipped")]
                continue
            matrix = job.get("strategy", {}).get("matrix", {})
            legs = render(matrix["include"], contexts) if matrix else [{}]
            self.jobs[name] = [self._run_job(name, job, leg, needs) for leg in legs]
        return self.jobs

    def _run_job(self, name: str, job: dict[str, Any], leg: dict[str, Any], needs: dict[str, Any]) -> JobRun:
        folder = self.root / f"{name}-{len(self.jobs.get(name, []))}-{leg.get('draft', 'all')}"
        run = JobRun(name, folder / "workspace", folder / "runner-temp")
        run.temp.mkdir(parents=True)
        subprocess.run(["git", "clone", "--quiet", str(self.origin), str(run.workspace)], check=True)
        subprocess.run(["git", "-C", str(run.workspace), "checkout", "--quiet", self.github["ref_name"]], check=True)
        environment = job.get("environment")
        environment_name = environment.get("name") if isinstance(environment, dict) else environment
        available = self.secrets.get("", {}) | (self.secrets.get(environment_name, {}) if environment_name else {})
        contexts: dict[str, Any] = {
            "matrix": context(leg),
            "needs": context(needs),
            "github": context(self.github),
            "inputs": Context(),
            "secrets": context(available),
            "runner": context({"temp": str(run.temp)}),
            "steps": Context(),
        }
        env = dict(self.env)
        if (job.get("permissions") or {}).get("id-token") == "write" and self.id_tokens is not None:
            env |= self.id_tokens.grant(self.workflow_file, job, self.github)
        for scope in (self.workflow.get("env", {}), job.get("env", {})):
            contexts["env"] = context(env)
            env |= {k: str(render(v, contexts)) for k, v in scope.items()}
        for index, step in enumerate(job["steps"]):
            unknown = set(step) - MODELLED_STEP_KEYS
            if unknown:
                pytest.fail(f"job {name}: step {step.get('name', index)} uses {sorted(unknown)}, which the runner model does not know")
            contexts["env"] = context(env)
            if "if" in step and not condition(str(step["if"]), contexts):
                continue
            if "uses" in step:
                self._action(name, step, run, contexts)
            elif step.get("id") not in RUNNER_ONLY_STEPS and not self._script(name, index, step, run, env, contexts):
                run.status = "failure"
                break
        run.outputs = {k: str(render(v, contexts)) for k, v in job.get("outputs", {}).items()}
        return run

    def _script(self, job: str, index: int, step: dict[str, Any], run: JobRun, env: dict[str, str], contexts: dict[str, Any]) -> bool:
        output, summary, script = run.temp / f"output-{index}", run.temp / f"summary-{index}", run.temp / f"step-{index}.sh"
        script.write_text(step["run"])
        step_env = env | {k: str(render(v, contexts)) for k, v in step.get("env", {}).items()}
        step_env |= {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(run.temp)}
        step_env |= {"GITHUB_WORKSPACE": str(run.workspace)}
        self.events.append(f"{job}: {step.get('name', index)}")
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=run.workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        run.log += f"--- {step.get('name', index)}\n{result.stdout}{result.stderr}"
        run.summary += summary.read_text() if summary.exists() else ""
        if "id" in step:
            contexts["steps"][step["id"]] = context({"outputs": read_outputs(output)})
        return result.returncode == 0

    def _action(self, job: str, step: dict[str, Any], run: JobRun, contexts: dict[str, Any]) -> None:
        action = step["uses"].split("@")[0]
        if action not in MODELLED_ACTIONS:
            pytest.fail(f"job {job}: the runner model does not know the action {action}; model it before using it")
        inputs = {k: render(v, contexts) for k, v in step.get("with", {}).items()}
        self.events.append(f"{job}: {action}")
        if action == "actions/upload-artifact" and inputs["name"] not in RUNNER_ONLY_ARTIFACTS:
            self._upload_artifact(run.workspace, inputs)
        elif action == "actions/download-artifact" and inputs["name"] not in RUNNER_ONLY_ARTIFACTS:
            shutil.copytree(self.artifacts[inputs["name"]], run.workspace / inputs.get("path", "."), dirs_exist_ok=True)
        elif action == "actions/attest":
            checksums = run.workspace / inputs["subject-checksums"]
            run.attested.append({"inputs": json.dumps(inputs), "subjects": checksums.read_text()})

    def _upload_artifact(self, workspace: Path, inputs: dict[str, Any]) -> None:
        """Copy the files as the artifact holds them: paths relative to the searched paths' common folder."""
        searched = [workspace / line.strip() for line in inputs["path"].splitlines() if line.strip()]
        root = Path(os.path.commonpath(searched)) if len(searched) > 1 else searched[0] if searched[0].is_dir() else searched[0].parent
        found = [p for path in searched for p in ([path] if path.is_file() else visible_files(path) if path.is_dir() else [])]
        if not found and inputs.get("if-no-files-found") == "error":
            pytest.fail(f"artifact {inputs['name']}: no files at {inputs['path']}")
        stored = self.root / "artifacts" / inputs["name"]
        assert not stored.exists(), f"artifact {inputs['name']} uploaded twice"
        for path in found:
            (stored / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, stored / path.relative_to(root))
        self.artifacts[inputs["name"]] = stored
