"""The embedded Hub, driven by the real huggingface_hub client (and plain httpx2 for raw HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    RepoFile,
    RepoFolder,
    constants,
    hf_hub_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from pipeline.rehearsal.hub import FaultPlan, HubServer
from tests.hub_fixtures import FAKE_TOKEN

REPO = "org/tiny-draft"
AUTH = {"Authorization": f"Bearer {FAKE_TOKEN}"}


def git_blob_sha1(data: bytes) -> str:
    # Written out here rather than imported, so the server is checked against git's definition.
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish(api: HfApi, folder: Path, tag: str | None = "v1.0.0") -> str:
    """Create the repo, upload `folder` in one commit, tag it; return the commit id."""
    api.create_repo(REPO)
    commit = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="Release")
    if tag is not None:
        api.create_tag(REPO, tag=tag, revision=commit.oid)
    return commit.oid


def head_of(api: HfApi, branch: str = "main") -> str:
    return next(ref.target_commit for ref in api.list_repo_refs(REPO).branches if ref.name == branch)


# ---- repos, uploads, downloads ------------------------------------------------------------


def test_create_repo_conflicts_unless_exist_ok(hub_api: HfApi, hub_server: HubServer) -> None:
    url = hub_api.create_repo(REPO)
    assert url == f"{hub_server.url}/{REPO}"
    with pytest.raises(HfHubHTTPError) as raised:
        hub_api.create_repo(REPO)
    assert raised.value.response.status_code == 409
    assert hub_api.create_repo(REPO, exist_ok=True) == url
    # A new repo starts like a Hub repo: one initial commit holding .gitattributes.
    assert hub_api.list_repo_files(REPO) == [".gitattributes"]
    assert hub_server.stats.writes == 1


def test_upload_folder_then_download_by_tag(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path, tmp_path: Path) -> None:
    weights = (tiny_draft / "model.safetensors").read_bytes()
    commit = publish(hub_api, tiny_draft)

    info = hub_api.model_info(REPO, revision="v1.0.0")
    assert info.sha == commit
    assert sorted(s.rfilename for s in info.siblings or []) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert info.card_data is not None and info.card_data.license == "apache-2.0"
    # The weights went through LFS, byte for byte; README and config were committed inline.
    assert hub_server.stats.lfs_bytes_received == len(weights)

    path = hf_hub_download(REPO, "model.safetensors", revision="v1.0.0", endpoint=hub_server.url, token=FAKE_TOKEN, cache_dir=tmp_path)
    assert Path(path).read_bytes() == weights
    config = hf_hub_download(REPO, "config.json", revision=commit[:7], endpoint=hub_server.url, token=FAKE_TOKEN, cache_dir=tmp_path)
    assert Path(config).read_bytes() == (tiny_draft / "config.json").read_bytes()


def test_safetensors_metadata_by_tag(hub_api: HfApi, tiny_draft: Path) -> None:
    publish(hub_api, tiny_draft)
    metadata = hub_api.get_safetensors_metadata(REPO, revision="v1.0.0")
    assert not metadata.sharded
    tensors = metadata.files_metadata["model.safetensors"].tensors
    assert tensors["model.embed_tokens.weight"].shape == [64, 64]
    assert tensors["model.layers.0.eh_proj.weight"].dtype == "F16"
    assert metadata.parameter_count == {"F32": 64 * 64, "F16": 16 * 32}


def test_hf_file_system_ranged_read_returns_exact_bytes(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path) -> None:
    weights = (tiny_draft / "model.safetensors").read_bytes()
    publish(hub_api, tiny_draft)
    fs = HfFileSystem(endpoint=hub_server.url, token=FAKE_TOKEN, skip_instance_cache=True)
    with fs.open(f"{REPO}/model.safetensors", "rb", revision="v1.0.0", block_size=1024) as handle:
        handle.seek(5000)
        assert handle.read(3000) == weights[5000:8000]
        handle.seek(len(weights) - 10)
        assert handle.read(100) == weights[-10:]
    # Only the blocks around the reads were fetched, never the whole file.
    assert 3000 + 10 <= hub_server.stats.resolve_bytes_sent < len(weights)


def test_restarted_server_keeps_repos(tmp_path: Path, tiny_draft: Path) -> None:
    with HubServer(tmp_path / "hub") as first:
        commit = publish(HfApi(endpoint=first.url, token=FAKE_TOKEN), tiny_draft)
    with HubServer(tmp_path / "hub") as second:
        api = HfApi(endpoint=second.url, token=FAKE_TOKEN)
        assert head_of(api) == commit
        assert [tag.target_commit for tag in api.list_repo_refs(REPO).tags] == [commit]
        path = hf_hub_download(
            REPO, "model.safetensors", revision="v1.0.0", endpoint=second.url, token=FAKE_TOKEN, cache_dir=tmp_path / "cache"
        )
        assert Path(path).read_bytes() == (tiny_draft / "model.safetensors").read_bytes()


def test_same_history_gives_same_commit_ids(tmp_path: Path, tiny_draft: Path) -> None:
    commits = []
    for name in ("a", "b"):
        with HubServer(tmp_path / name) as server:
            commits.append(publish(HfApi(endpoint=server.url, token=FAKE_TOKEN), tiny_draft, tag=None))
    assert commits[0] == commits[1]
    assert re.fullmatch(r"[0-9a-f]{40}", commits[0])


def test_dataset_repos_use_their_own_url_prefix(hub_api: HfApi, hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_api.create_repo("org/data", repo_type="dataset")
    assert url == f"{hub_server.url}/datasets/org/data"
    hub_api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id="org/data", repo_type="dataset")
    path = hf_hub_download("org/data", "data/train.csv", repo_type="dataset", endpoint=hub_server.url, token=FAKE_TOKEN, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):
        hub_api.model_info("org/data")


def test_non_ascii_paths_over_the_socket_and_in_process(hub_api: HfApi, hub_server: HubServer, tmp_path: Path) -> None:
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"bonjour", path_in_repo="notes/café au lait.txt", repo_id=REPO)
    path = hf_hub_download(REPO, "notes/café au lait.txt", endpoint=hub_server.url, token=FAKE_TOKEN, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"bonjour"
    with httpx2.Client(transport=httpx2.WSGITransport(app=hub_server.app), base_url="http://hub.invalid") as client:
        response = client.get(f"/{REPO}/resolve/main/notes/caf%C3%A9%20au%20lait.txt")
    assert (response.status_code, response.content) == (200, b"bonjour")


def test_serve_runs_in_the_foreground(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from pipeline.rehearsal.hub import serve; "
        "serve(Path(sys.argv[1]), '127.0.0.1', 0, on_ready=lambda url: print(url, flush=True))"
    )
    source_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "hub")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        HfApi(endpoint=url, token=FAKE_TOKEN).create_repo(REPO)
    finally:
        process.terminate()
        process.wait(timeout=10)
    with HubServer(tmp_path / "hub") as restarted:
        assert HfApi(endpoint=restarted.url, token=FAKE_TOKEN).list_repo_files(REPO) == [".gitattributes"]


# ---- commits, refs and dedupe -------------------------------------------------------------


def test_stale_parent_commit_is_refused_with_412(hub_api: HfApi, tiny_draft: Path) -> None:
    first = publish(hub_api, tiny_draft)
    second = hub_api.create_commit(REPO, [CommitOperationAdd("notes.txt", b"one")], commit_message="notes", parent_commit=first[:7]).oid
    with pytest.raises(HfHubHTTPError) as raised:
        hub_api.create_commit(REPO, [CommitOperationAdd("notes.txt", b"two")], commit_message="late", parent_commit=first)
    assert raised.value.response.status_code == 412
    assert "branch was updated" in raised.value.response.json()["error"]
    assert head_of(hub_api) == second
    assert [c.title for c in hub_api.list_repo_commits(REPO)] == ["notes", "Release", "initial commit"]


def test_duplicate_tag_conflicts_and_refs_list_branches_and_tags(hub_api: HfApi, tiny_draft: Path) -> None:
    commit = publish(hub_api, tiny_draft)
    with pytest.raises(HfHubHTTPError) as raised:
        hub_api.create_tag(REPO, tag="v1.0.0")
    assert raised.value.response.status_code == 409
    hub_api.create_tag(REPO, tag="v1.0.0", exist_ok=True)
    hub_api.create_branch(REPO, branch="staging", revision="v1.0.0")

    refs = hub_api.list_repo_refs(REPO)
    assert {(b.name, b.ref, b.target_commit) for b in refs.branches} == {
        ("main", "refs/heads/main", commit),
        ("staging", "refs/heads/staging", commit),
    }
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0.0", "refs/tags/v1.0.0", commit)]


def test_paths_info_gives_lfs_sha256_and_git_blob_ids(hub_api: HfApi, tiny_draft: Path) -> None:
    weights = (tiny_draft / "model.safetensors").read_bytes()
    config = (tiny_draft / "config.json").read_bytes()
    commit = publish(hub_api, tiny_draft)
    hub_api.upload_file(path_or_fileobj=b"x", path_in_repo="extra/a.txt", repo_id=REPO)

    infos = {i.path: i for i in hub_api.get_paths_info(REPO, ["model.safetensors", "config.json", "missing.txt", "extra"], expand=True)}
    assert sorted(infos) == ["config.json", "extra", "model.safetensors"]
    safetensors, config_info, folder = infos["model.safetensors"], infos["config.json"], infos["extra"]
    assert isinstance(safetensors, RepoFile) and isinstance(config_info, RepoFile) and isinstance(folder, RepoFolder)
    assert safetensors.lfs is not None
    assert safetensors.lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert safetensors.lfs.size == safetensors.size == len(weights)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{safetensors.lfs.sha256}\nsize {len(weights)}\n".encode()
    assert safetensors.blob_id == git_blob_sha1(pointer)
    assert config_info.lfs is None
    assert config_info.blob_id == git_blob_sha1(config)
    # With expand, each entry names the commit that last changed it.
    assert config_info.last_commit is not None and config_info.last_commit.oid == commit
    assert folder.last_commit is not None and folder.last_commit.oid == head_of(hub_api)


def test_unchanged_files_make_no_new_commit(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path) -> None:
    commit = publish(hub_api, tiny_draft)
    hub_server.stats.reset()
    again = hub_api.upload_folder(repo_id=REPO, folder_path=tiny_draft, commit_message="Release again")
    assert again.oid == commit
    assert head_of(hub_api) == commit
    assert hub_server.stats.writes == 0
    assert hub_server.stats.lfs_bytes_received == 0
    assert "commit" not in hub_server.stats.requests_by_route


def test_copy_and_delete_operations(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path) -> None:
    publish(hub_api, tiny_draft)
    hub_server.stats.reset()
    hub_api.create_commit(
        REPO,
        [
            CommitOperationCopy("model.safetensors", "backup/model.safetensors"),
            CommitOperationDelete("config.json"),
        ],
        commit_message="copy and delete",
    )
    # The LFS copy is done by oid on the server: no bytes are uploaded again.
    assert hub_server.stats.lfs_bytes_received == 0
    assert hub_api.list_repo_files(REPO) == [".gitattributes", "README.md", "backup/model.safetensors", "model.safetensors"]
    folders = [e.path for e in hub_api.list_repo_tree(REPO) if not hasattr(e, "size")]
    assert folders == ["backup"]

    hub_api.create_commit(REPO, [CommitOperationDelete("backup/")], commit_message="drop folder")
    assert "backup/model.safetensors" not in hub_api.list_repo_files(REPO)
    with pytest.raises(EntryNotFoundError):
        hub_api.delete_file("config.json", repo_id=REPO)


def test_invalid_readme_metadata_is_refused_before_upload(hub_api: HfApi, hub_server: HubServer) -> None:
    hub_api.create_repo(REPO)
    bad_card = CommitOperationAdd("README.md", b"---\nlicense: [unclosed\n---\n# Card\n")
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        hub_api.create_commit(REPO, [bad_card], commit_message="bad card")
    list_card = CommitOperationAdd("README.md", b"---\n- a\n- b\n---\n")
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        hub_api.create_commit(REPO, [list_card], commit_message="list card")
    assert "commit" not in hub_server.stats.requests_by_route


# ---- errors -------------------------------------------------------------------------------


def test_missing_repo_revision_and_entry_raise_typed_errors(
    hub_api: HfApi, hub_server: HubServer, tiny_draft: Path, tmp_path: Path
) -> None:
    publish(hub_api, tiny_draft)

    def download(repo_id: str, filename: str, revision: str) -> str:
        return hf_hub_download(repo_id, filename, revision=revision, endpoint=hub_server.url, token=FAKE_TOKEN, cache_dir=tmp_path)

    with pytest.raises(RepositoryNotFoundError):
        hub_api.model_info("org/absent")
    with pytest.raises(RepositoryNotFoundError):
        download("org/absent", "config.json", "main")
    with pytest.raises(RevisionNotFoundError):
        download(REPO, "config.json", "v9.9.9")
    with pytest.raises(RevisionNotFoundError):
        hub_api.model_info(REPO, revision="0000000")
    with pytest.raises(RemoteEntryNotFoundError):
        download(REPO, "absent.json", "v1.0.0")
    assert not hub_api.file_exists(REPO, "absent.json")
    assert hub_api.file_exists(REPO, "config.json", revision="v1.0.0")


# ---- raw HTTP -----------------------------------------------------------------------------


def test_range_requests_get_206_with_exact_bytes(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path) -> None:
    weights = (tiny_draft / "model.safetensors").read_bytes()
    commit = publish(hub_api, tiny_draft)
    url = f"{hub_server.url}/{REPO}/resolve/v1.0.0/model.safetensors"

    redirect = httpx2.head(url)  # LFS bytes live on another origin, as on the Hub
    assert redirect.status_code == 302
    assert redirect.headers["X-Repo-Commit"] == commit
    sha256 = hashlib.sha256(weights).hexdigest()
    assert redirect.headers["ETag"] == redirect.headers["X-Linked-Etag"] == f'"{sha256}"'
    assert redirect.headers["X-Linked-Size"] == str(len(weights))
    location = redirect.headers["Location"]
    assert not location.startswith(hub_server.url) and "X-Xet-Hash" not in redirect.headers
    assert httpx2.get(location, headers=AUTH).status_code == 400, "the CDN refuses a request carrying the token"
    assert httpx2.get(location.replace("signature=", "signature=0")).status_code == 403
    # httpx drops Authorization on a cross-origin redirect, so following one with the token works.
    head = httpx2.head(url, headers=AUTH, follow_redirects=True)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(weights))
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"] == f'"{sha256}"'

    part = httpx2.get(url, headers={"Range": "bytes=100-199"}, follow_redirects=True)
    assert part.status_code == 206
    assert part.content == weights[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(weights)}"
    tail = httpx2.get(url, headers={"Range": "bytes=-16"}, follow_redirects=True)
    assert (tail.status_code, tail.content) == (206, weights[-16:])
    # A range running past the end is clamped, as get_safetensors_metadata's first read relies on.
    clamped = httpx2.get(url, headers={"Range": f"bytes=10-{len(weights) + 1000}"}, follow_redirects=True)
    assert (clamped.status_code, clamped.content) == (206, weights[10:])
    beyond = httpx2.get(url, headers={"Range": f"bytes={len(weights)}-"}, follow_redirects=True)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(weights)}"

    regular = httpx2.head(f"{hub_server.url}/{REPO}/resolve/main/config.json")
    assert regular.headers["ETag"] == f'"{git_blob_sha1((tiny_draft / "config.json").read_bytes())}"'
    assert "X-Linked-Etag" not in regular.headers
    assert hub_server.stats.resolve_bytes_sent >= 100 + 16 + len(weights) - 10


def test_lfs_upload_checks_the_body_and_commit_checks_the_oid(hub_api: HfApi, hub_server: HubServer) -> None:
    hub_api.create_repo(REPO)
    data = os.urandom(300_000)
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx2.post(
        f"{hub_server.url}/{REPO}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}], "hash_algo": "sha256"},
        headers=AUTH,
    ).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]

    assert httpx2.put(href, content=data[:-1] + b"!").status_code == 400
    commit_body = "\n".join(
        json.dumps(line)
        for line in (
            {"key": "header", "value": {"summary": "weights", "description": ""}},
            {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}},
        )
    )
    commit_url = f"{hub_server.url}/api/models/{REPO}/commit/main"
    headers = {"Content-Type": "application/x-ndjson", **AUTH}
    refused = httpx2.post(commit_url, content=commit_body, headers=headers)
    assert refused.status_code == 400
    assert "never uploaded" in refused.json()["error"]

    # A streamed (chunked) body is hashed as it arrives.
    chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
    assert httpx2.put(href, content=chunks).status_code == 200
    assert httpx2.post(commit_url, content=commit_body, headers=headers).status_code == 200
    [stored] = hub_api.get_paths_info(REPO, ["w.bin"])
    assert isinstance(stored, RepoFile) and stored.lfs is not None and stored.lfs.sha256 == oid
    assert hub_server.stats.lfs_bytes_received == 2 * len(data)
    again = httpx2.post(
        f"{hub_server.url}/{REPO}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
        headers=AUTH,
    )
    assert "actions" not in again.json()["objects"][0]


def test_xet_write_token_is_refused(hub_api: HfApi, hub_server: HubServer) -> None:
    hub_api.create_repo(REPO)
    response = httpx2.get(f"{hub_server.url}/api/models/{REPO}/xet-write-token/main")
    assert response.status_code == 501


# ---- faults -------------------------------------------------------------------------------


def test_injected_503_is_retried_by_the_client(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path) -> None:
    hub_api.create_repo(REPO)
    hub_server.faults = FaultPlan(error_status=503, error_route="preupload", error_times=1)
    hub_api.upload_folder(repo_id=REPO, folder_path=tiny_draft)
    assert hub_server.stats.faults_fired == {"error": 1}
    assert hub_server.stats.requests_by_route["preupload"] == 2
    assert "model.safetensors" in hub_api.list_repo_files(REPO)


def test_injected_429_carries_retry_after_until_the_plan_is_replaced(hub_api: HfApi, hub_server: HubServer) -> None:
    hub_api.create_repo(REPO)
    url = f"{hub_server.url}/api/models/{REPO}"
    hub_server.faults = FaultPlan(error_status=429, error_route="repo_info", error_times=2, retry_after=7)
    first = httpx2.get(url)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert httpx2.get(f"{hub_server.url}/api/models/{REPO}/refs").status_code == 200  # other routes untouched
    hub_server.faults = FaultPlan(error_status=429, error_route="repo_info", error_times=1)
    assert httpx2.get(url).status_code == 429  # a new plan counts from zero
    assert httpx2.get(url, follow_redirects=True).status_code == 200
    assert hub_server.stats.faults_fired == {"error": 2}


def test_dropped_download_is_resumed_with_a_range_request(hub_api: HfApi, hub_server: HubServer, tmp_path: Path) -> None:
    # The client keeps the whole chunks it got before a drop; cut just past the first one.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    data = os.urandom(chunk + chunk // 4)
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=data, path_in_repo="big.dat", repo_id=REPO)
    cut = chunk + 1000
    hub_server.faults = FaultPlan(drop_after_bytes=cut, drop_times=2)

    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(f"{hub_server.url}/{REPO}/resolve/main/big.dat", follow_redirects=True)
    hub_server.stats.reset()
    path = hf_hub_download(REPO, "big.dat", endpoint=hub_server.url, token=FAKE_TOKEN, cache_dir=tmp_path)
    assert Path(path).read_bytes() == data
    assert hub_server.stats.faults_fired == {"drop": 1}
    # The cut response, then only the missing tail: the resume asked for a range.
    assert hub_server.stats.resolve_bytes_sent == cut + len(data) - chunk


def test_bandwidth_cap_paces_response_bodies(hub_api: HfApi, hub_server: HubServer, tiny_draft: Path) -> None:
    weights = (tiny_draft / "model.safetensors").read_bytes()
    publish(hub_api, tiny_draft)
    hub_server.faults = FaultPlan(bytes_per_second=40_000)
    started = time.monotonic()
    response = httpx2.get(f"{hub_server.url}/{REPO}/resolve/main/model.safetensors", follow_redirects=True)
    elapsed = time.monotonic() - started
    assert response.content == weights
    assert elapsed >= len(weights) / 40_000 * 0.9
    assert hub_server.stats.faults_fired == {"throttle": 2}  # the redirect, then the CDN origin's body


# ---- the hf CLI ---------------------------------------------------------------------------


def test_hf_cli_uploads_and_downloads_a_folder(hub_server: HubServer, tiny_draft: Path, tmp_path: Path) -> None:
    hf = Path(sys.executable).parent / "hf"
    if not hf.exists():
        pytest.skip("the hf command is not installed next to this Python")
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_server.url,
        "HF_TOKEN": FAKE_TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(hf), *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    uploaded = run("upload", "org/cli-draft", str(tiny_draft), ".", "--commit-message", "From the CLI")
    assert uploaded.returncode == 0, uploaded.stderr
    downloaded = run("download", "org/cli-draft", "--local-dir", str(tmp_path / "out"))
    assert downloaded.returncode == 0, downloaded.stderr
    for name in ("model.safetensors", "README.md", "config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tiny_draft / name).read_bytes()
    assert FAKE_TOKEN not in uploaded.stdout + uploaded.stderr + downloaded.stdout + downloaded.stderr
