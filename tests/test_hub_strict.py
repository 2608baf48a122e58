"""The strict embedded Hub answers as the real one does: status, X-Error-* headers and JSON bodies
that huggingface_hub's own error parsing turns into the exceptions its callers expect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from pipeline.rehearsal.hub import FaultPlan, HubServer
from pipeline.rehearsal.hub.auth import AccessPolicy
from pipeline.rehearsal.hub.oidc import (
    GITHUB_ISSUER,
    ID_TOKEN_TYPE,
    TOKEN_EXCHANGE_GRANT,
    Publisher,
    TrustedPublishers,
    mint_id_token,
)
from tests.conftest import run_cli
from tests.hub_fixtures import FAKE_TOKEN

WRITER, READER, SCOPED = "hf_writer", "hf_reader", "hf_scoped"
REPO = "org/draft"
KEY = b"test-signing-key"
SUB = "repo:org/tools:environment:release"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[HubServer]:
    access = AccessPolicy.from_specs([f"{WRITER}:write", f"{READER}:read", f"{SCOPED}:write:org/other"])
    publishers = TrustedPublishers([Publisher(REPO, {"sub": SUB})], {GITHUB_ISSUER: KEY})
    with HubServer(tmp_path / "hub", access=access, publishers=publishers) as server:
        HfApi(endpoint=server.url, token=WRITER).create_repo(REPO)
        yield server


def _api(server: HubServer, token: str | None) -> HfApi:
    return HfApi(endpoint=server.url, token=token if token else False)  # False: send no token at all


def test_an_unknown_token_is_refused_everywhere_with_the_hubs_words(strict: HubServer) -> None:
    answer = httpx2.get(f"{strict.url}/api/models/{REPO}", headers={"Authorization": "Bearer hf_nope"})

    assert answer.status_code == 401
    assert answer.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert answer.json()["error"] == "Invalid credentials in Authorization header"


def test_writes_need_a_write_token_in_scope(strict: HubServer) -> None:
    def status(token: str | None) -> int:
        with pytest.raises(HfHubHTTPError) as refused:
            _api(strict, token).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
        return refused.value.response.status_code

    assert status(None) == 401
    assert status(READER) == 403
    assert status(SCOPED) == 403
    _api(strict, WRITER).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)


def test_private_repos_are_invisible_without_access(strict: HubServer) -> None:
    _api(strict, WRITER).create_repo("org/secret", private=True)

    anonymous = httpx2.get(f"{strict.url}/api/models/org/secret")
    with pytest.raises(RepositoryNotFoundError):
        _api(strict, None).model_info("org/secret")
    strict.app.access.add("hf_outsider:read:elsewhere/repo")
    unseen = httpx2.get(f"{strict.url}/api/models/org/secret", headers={"Authorization": "Bearer hf_outsider"})
    member = httpx2.get(f"{strict.url}/api/models/org/secret", headers={"Authorization": f"Bearer {SCOPED}"})

    assert (anonymous.status_code, anonymous.headers["X-Error-Code"]) == (401, "RepoNotFound")
    assert (unseen.status_code, unseen.headers["X-Error-Code"]) == (404, "RepoNotFound")
    assert member.status_code == 403  # same namespace, but the fine-grained scope leaves it out
    assert _api(strict, WRITER).model_info("org/secret").private


def test_scoped_tokens_cannot_create_repos(strict: HubServer) -> None:
    answer = httpx2.post(
        f"{strict.url}/api/repos/create", json={"name": "other", "organization": "org"}, headers={"Authorization": f"Bearer {SCOPED}"}
    )

    assert answer.status_code == 403 and "rights to create" in answer.headers["X-Error-Message"]


def test_lfs_upload_urls_must_carry_the_batch_signature(strict: HubServer) -> None:
    oid = "0" * 64
    forged = httpx2.put(f"{strict.url}/api/lfs/objects/{oid}?size=1&signature=00", content=b"x")

    assert forged.status_code == 403


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ("license: apache2\n", '"license" must be one of'),
        ("base_model: [org/a, not a repo]\n", '"base_model" must be'),
        ("base_model: org/a\nbase_model_relation: draft\n", '"base_model_relation" must be one of adapter, merge, quantized, finetune'),
        ("base_model_relation: adapter\n", '"base_model_relation" needs a "base_model"'),
        (
            "model-index:\n- name: x\n  results:\n  - task: {type: t}\n    dataset: {type: d, name: n}\n    metrics: [{type: acc}]\n",
            "metrics[0].value",
        ),
        ("model-index: {name: x}\n", '"model-index" must be a non-empty list'),
    ],
)
def test_the_validator_refuses_what_the_hub_refuses(metadata: str, reason: str, strict: HubServer) -> None:
    answer = httpx2.post(f"{strict.url}/api/validate-yaml", json={"content": f"---\n{metadata}---\n# card\n", "repoType": "model"})

    assert answer.status_code == 400
    assert any(reason in error["message"] for error in answer.json()["errors"]), answer.json()
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):  # the client's own check, before any upload
        _api(strict, WRITER).upload_file(path_or_fileobj=f"---\n{metadata}---\n".encode(), path_in_repo="README.md", repo_id=REPO)


def test_a_good_card_passes_the_validator(strict: HubServer) -> None:
    card = "---\nlicense: apache-2.0\nbase_model: org/a\nbase_model_relation: adapter\nlibrary_name: vllm\n---\n# card\n"

    assert httpx2.post(f"{strict.url}/api/validate-yaml", json={"content": card, "repoType": "model"}).status_code == 200


def _exchange(server: HubServer, token: str, resource: str = REPO, **overrides: str) -> httpx2.Response:
    body = {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token_type": ID_TOKEN_TYPE, "subject_token": token, "resource": resource}
    return httpx2.post(f"{server.url}/oauth/token", json={**body, **overrides})


def test_the_token_exchange_checks_signature_issuer_audience_expiry_and_claims(strict: HubServer) -> None:
    good = mint_id_token(KEY, audience=strict.url, subject=SUB)
    refused = {
        "wrong key": _exchange(strict, mint_id_token(b"other key", audience=strict.url, subject=SUB)),
        "wrong issuer": _exchange(strict, mint_id_token(KEY, audience=strict.url, subject=SUB, issuer="https://gitlab.example")),
        "wrong audience": _exchange(strict, mint_id_token(KEY, audience="https://huggingface.co", subject=SUB)),
        "expired": _exchange(strict, mint_id_token(KEY, audience=strict.url, subject=SUB, now=time.time() - 3600)),
        "other environment": _exchange(strict, mint_id_token(KEY, audience=strict.url, subject=SUB.replace("release", "staging"))),
        "other repo": _exchange(strict, good, resource="org/other"),
        "wrong grant": _exchange(strict, good, grant_type="client_credentials"),
    }
    for case, answer in refused.items():
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", case

    issued = _exchange(strict, good).json()

    assert issued["token_type"] == "bearer" and issued["expires_in"] == 3600
    scoped = _api(strict, issued["access_token"])
    scoped.upload_file(path_or_fileobj=b"by the publisher\n", path_in_repo="p.txt", repo_id=REPO)
    with pytest.raises(HfHubHTTPError) as outside:
        scoped.create_repo("org/new-one")
    assert outside.value.response.status_code == 403


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--token", "hf_x:admin"], "--token: a token is VALUE:ROLE"),
        (["--token", "hf_x:write:no-slash"], "a repo is namespace/name"),
        (["--trusted-publisher", "org/draft sub=x"], "needs --oidc-key-file"),
        (["--trusted-publisher", "org/draft"], "at least one claim"),
    ],
)
def test_hub_serve_refuses_bad_strict_options_with_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli("hub", "serve", "--root", str(tmp_path / "hub"), *flags)

    assert result.code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_tree_listings_come_in_pages_the_client_follows(hub_server: HubServer, hub_api: HfApi) -> None:
    from huggingface_hub import CommitOperationAdd

    from tests.hub_fixtures import TREE_PAGE_SIZE

    hub_api.create_repo(REPO)
    names = [f"part-{i}.txt" for i in range(7)]
    hub_api.create_commit(REPO, [CommitOperationAdd(name, name.encode()) for name in names], commit_message="seven files")
    hub_server.stats.reset()

    listed = [entry.path for entry in hub_api.list_repo_tree(REPO, recursive=True)]

    assert sorted(listed) == sorted([".gitattributes", *names])
    assert hub_server.stats.requests_by_route["tree"] == -(-len(listed) // TREE_PAGE_SIZE)
    first = httpx2.get(f"{hub_server.url}/api/models/{REPO}/tree/main?recursive=true")
    assert len(first.json()) == TREE_PAGE_SIZE and 'rel="next"' in first.headers["Link"] and "recursive=true" in first.headers["Link"]


def test_lfs_or_regular_follows_gitattributes_size_and_binary_content(hub_server: HubServer, hub_api: HfApi) -> None:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.hf_api import RepoFile

    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"*.dat filter=lfs diff=lfs merge=lfs -text\n", path_in_repo=".gitattributes", repo_id=REPO)
    files = {
        "notes.txt": b"plain text\n",  # regular
        "table.dat": b"text, but .gitattributes says LFS\n",
        "weights.npy": b"\x93NUMPY\x01\x00" + bytes(64),  # binary content, a suffix no rule names
        "model.safetensors": b"{}",
    }
    hub_api.create_commit(REPO, [CommitOperationAdd(p, d) for p, d in files.items()], commit_message="mixed")

    stored = {e.path: e.lfs is not None for e in hub_api.list_repo_tree(REPO) if isinstance(e, RepoFile)}

    assert stored == {".gitattributes": False, "notes.txt": False, "table.dat": True, "weights.npy": True, "model.safetensors": False}


def test_hub_serve_runs_strict_from_the_command_line(tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    from huggingface_hub import hf_hub_download

    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# rehearsal tokens\n{WRITER}:write\n")
    key = tmp_path / "oidc.key"
    key.write_bytes(KEY)
    argv = [sys.executable, "-m", "pipeline", "hub", "serve", "--root", str(tmp_path / "hub"), "--tokens-file", str(tokens)]
    argv += ["--trusted-publisher", f"{REPO} sub={SUB}", "--oidc-key-file", str(key)]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(root)}, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        url = re.search(r"at (http://\S+) \(strict: 1 token\(s\), 1 publisher\(s\)\)", banner)
        assert url, banner
        endpoint = url.group(1)
        assert httpx2.post(f"{endpoint}/api/repos/create", json={"name": "draft", "organization": "org"}).status_code == 401
        api = HfApi(endpoint=endpoint, token=WRITER)
        api.create_repo(REPO)
        api.upload_file(path_or_fileobj=b"\0weights", path_in_repo="w.bin", repo_id=REPO)
        exchanged = httpx2.post(
            f"{endpoint}/oauth/token",
            json={
                "grant_type": TOKEN_EXCHANGE_GRANT,
                "subject_token_type": ID_TOKEN_TYPE,
                "subject_token": mint_id_token(KEY, audience=endpoint, subject=SUB),
                "resource": REPO,
            },
        )
        assert exchanged.status_code == 200, exchanged.text
        path = hf_hub_download(REPO, "w.bin", endpoint=endpoint, token=exchanged.json()["access_token"], cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == b"\0weights"
        assert httpx2.head(f"{endpoint}/{REPO}/resolve/main/w.bin").status_code == 302  # through the CDN origin
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_connections_are_kept_alive_between_requests(hub_server: HubServer, hub_api: HfApi) -> None:
    hub_api.create_repo(REPO)
    before = hub_server.connections
    with httpx2.Client(headers=AUTH) as client:
        answers = [client.get(f"{hub_server.url}/api/models/{REPO}/refs") for _ in range(5)]
        assert hub_server.connections - before == 1  # five requests, one connection
        # A body the server cut short must not be mistaken for the end of a response.
        hub_server.faults = FaultPlan(drop_after_bytes=1, drop_times=1)
        hub_api.upload_file(path_or_fileobj=b"0123456789" * 10, path_in_repo="ten.txt", repo_id=REPO)
        with pytest.raises(httpx2.RemoteProtocolError):
            client.get(f"{hub_server.url}/{REPO}/resolve/main/ten.txt")
        again = client.get(f"{hub_server.url}/{REPO}/resolve/main/ten.txt")

    assert all(a.status_code == 200 for a in answers) and again.content == b"0123456789" * 10
    assert answers[0].http_version == "HTTP/1.1"
