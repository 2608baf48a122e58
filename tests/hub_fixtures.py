"""Pytest fixtures that run the embedded Hub and point the real huggingface_hub client at it.

Register once in the root conftest: `pytest_plugins = ["tests.hub_fixtures"]`.

Xet is switched off here, before anything imports huggingface_hub, because the client reads
`HF_HUB_DISABLE_XET` at import time and the embedded Hub only speaks LFS.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Nothing in the suite may reach a real Hub: a client left on its defaults hits a closed local port.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi
from safetensors.numpy import save_file

from pipeline.rehearsal.hub import HubServer
from pipeline.rehearsal.hub.auth import AccessPolicy
from pipeline.rehearsal.hub.oidc import GITHUB_ISSUER, IdTokenIssuer, Publisher, TrustedPublishers
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target

FAKE_TOKEN = "hf_fake_token_for_tests"
TREE_PAGE_SIZE = 3
README = "---\nlicense: apache-2.0\nlibrary_name: vllm\ntags:\n- mtp\n---\n# Tiny draft\n"
CONFIG_JSON = '{"model_type": "tiny", "num_nextn_predict_layers": 1}\n'


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A running, strict embedded Hub over a fresh storage root: FAKE_TOKEN may write everywhere.

    Tree listings come in pages of TREE_PAGE_SIZE entries, so every listing the suite makes follows
    the Hub's `Link` pagination, and LFS downloads are redirected to a CDN origin that refuses
    the token.
    """
    access = AccessPolicy.from_specs([f"{FAKE_TOKEN}:write"])
    with HubServer(tmp_path_factory.mktemp("hub-root"), access=access, page_size=TREE_PAGE_SIZE, cdn=True) as server:
        yield server


@pytest.fixture
def hub_api(hub_server: HubServer) -> HfApi:
    """The real client, pointed at `hub_server` with a fake token."""
    return HfApi(endpoint=hub_server.url, token=FAKE_TOKEN)


@pytest.fixture(scope="session")
def tiny_draft(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shaped like a small draft: one safetensors file, README.md and config.json.

    Built once per session; treat it as read-only.
    """
    folder = tmp_path_factory.mktemp("tiny-draft")
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": np.arange(64 * 64, dtype=np.float32).reshape(64, 64),
        "model.layers.0.eh_proj.weight": np.ones((16, 32), dtype=np.float16),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "README.md").write_text(README, encoding="utf-8")
    (folder / "config.json").write_text(CONFIG_JSON, encoding="utf-8")
    return folder


SOURCE_REPO = "synthetic/Step-3.7-Flash"
TARGET_REPO = "synthetic/Step-3.7-Flash-NVFP4"


@pytest.fixture
def hub_endpoint(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """Point commands at the embedded Hub through HF_ENDPOINT and HF_TOKEN, as a user would.

    Commands read HF_ENDPOINT when they start; the download cache folder is read by the library
    at import, so that constant is patched to keep each test's downloads apart.
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return hub_server


def seed_repo(api: HfApi, repo_id: str, folder: Path) -> str:
    """Upload a folder as a new repo and return the commit it made."""
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"Add {folder.name}").oid


MEDIUM = SyntheticSpec(
    hidden_size=256, vocab_size=8192, intermediate_size=512, full_heads=4, sliding_heads=8, kv_groups=2, head_dim=32, shards=3
)
FAST_RETRIES = "retries: {attempts: 4, backoff_seconds: 0.05}\n"


@pytest.fixture(scope="session")
def medium_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("medium")
    return write_source(root / "source", MEDIUM), write_target(root / "target", MEDIUM)


def seed_pair(server: HubServer, source: Path, target: Path) -> HfApi:
    """Seed the synthetic source and target repos and return a client for the server."""
    api = HfApi(endpoint=server.url, token=FAKE_TOKEN)
    seed_repo(api, SOURCE_REPO, source)
    seed_repo(api, TARGET_REPO, target)
    return api


def recipe_file(folder: Path, text: str) -> Path:
    path = folder / "draft.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def hub_recipe(folder: Path, extra: str = "", revision: str = "main") -> Path:
    return recipe_file(folder, f"family: step3p7\nsource: {SOURCE_REPO}@{revision}\ntarget: {TARGET_REPO}\nlicense: apache-2.0\n{extra}")


def files_of(draft: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(draft.iterdir())}


OIDC_KEY = b"rehearsal-signing-key"


@contextmanager
def trusted_publishing(
    server: HubServer, monkeypatch: pytest.MonkeyPatch, repo: str, publisher_sub: str, job_sub: str | None = None
) -> Iterator[IdTokenIssuer]:
    """Trusted Publishing as a GitHub Actions job sees it, against the embedded Hub.

    The Hub trusts id tokens whose `sub` is `publisher_sub` for `repo`; the job's id-token
    endpoint (ACTIONS_ID_TOKEN_REQUEST_URL / _TOKEN) mints tokens with `job_sub` (default: the
    same). HF_TOKEN is removed and HF_OIDC_RESOURCE names `repo`, so the client exchanges. In-process
    commands need `constants.ENDPOINT` (read from HF_ENDPOINT at import) and an empty token cache;
    child processes get both from the environment.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _auth

    server.app.publishers = TrustedPublishers([Publisher(repo, {"sub": publisher_sub})], {GITHUB_ISSUER: OIDC_KEY})
    server.app.access.strict = True
    with IdTokenIssuer(OIDC_KEY, {"sub": job_sub or publisher_sub}) as issuer:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_OIDC_RESOURCE", repo)
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", issuer.url)
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", issuer.request_token)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(_auth, "_OIDC_TOKEN_CACHE", None)
        yield issuer
