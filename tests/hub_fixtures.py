"""Pytest fixtures that run the embedded Hub and point the real huggingface_hub client at it.

Register once in the root conftest: `pytest_plugins = ["tests.hub_fixtures"]`.

Xet is switched off here, before anything imports huggingface_hub, because the client reads
`HF_HUB_DISABLE_XET` at import time and the embedded Hub only speaks LFS.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi
from safetensors.numpy import save_file

from pipeline.hub import HubServer

FAKE_TOKEN = "hf_fake_token_for_tests"
README = "---\nlicense: apache-2.0\nlibrary_name: vllm\ntags:\n- mtp\n---\n# Tiny draft\n"
CONFIG_JSON = '{"model_type": "tiny", "num_nextn_predict_layers": 1}\n'


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A running embedded Hub over a fresh storage root, stopped after the test."""
    with HubServer(tmp_path_factory.mktemp("hub-root")) as server:
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
