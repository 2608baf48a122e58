"""Qwen4 Exp beyond the shared family tests (its draft-built quantization is tested beside
Nemotron-H's): the mixer injection vLLM drops, the multimodal release's names, and the config fields vLLM 0.33.0 needs.

Expected names and messages are written out from vLLM 0.33.0's `vllm/models/qwen4_exp/nvidia/`
(`mtp.py`, `model.py`) and `model_executor/models/utils.py`, not read from the family table.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipeline.families import FAMILIES
from pipeline.rehearsal.synthetic_families import family_config, write_family_source, write_family_target
from tests.conftest import run_cli
from tests.safetensors_reader import folder_tensor_hashes, rename_tensor

FAMILY = "qwen4_exp"


def _recipe(folder: Path, source: Path, target: Path) -> Path:
    recipe = folder / "recipe" / "draft.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        f"family: {FAMILY}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\nmax_shard_size: 100KB\n"
    )
    return recipe


def test_a_source_with_the_mixer_injection_builds_without_it(tmp_path: Path) -> None:
    """The final mixer has no injection and vLLM drops its weight by name (nvidia/mtp.py:390-392, 477-479):
    a source that stores it builds, and the draft leaves it out. The backbone's final norm, which no
    draft reads, is stored under the injection's name."""
    source = write_family_source(tmp_path / "source", FAMILY)
    injection = "mtp.hyper_connection_mixer.block_inject_weight.weight"
    rename_tensor(source, "model.norm.weight", injection)
    target = write_family_target(tmp_path / "target", FAMILY)
    assert FAMILIES[FAMILY].vllm_param(injection, FAMILIES[FAMILY].read_geometry(family_config(FAMILY))) is None

    build = run_cli("build", "--recipe", str(_recipe(tmp_path, source, target)), "--workdir", str(tmp_path / "work"))

    assert build.code == 0, build.stderr
    assert injection in folder_tensor_hashes(source) and injection not in folder_tensor_hashes(tmp_path / "work" / "draft")


def test_a_source_with_an_mtp_tensor_the_family_does_not_know_is_refused(tmp_path: Path) -> None:
    """Qwen3.5's final norm is not in this block (nvidia/mtp.py:172-259 builds none)."""
    source = write_family_source(tmp_path / "source", FAMILY)
    rename_tensor(source, "model.norm.weight", "mtp.norm.weight")
    target = write_family_target(tmp_path / "target", FAMILY)

    build = run_cli("build", "--recipe", str(_recipe(tmp_path, source, target)), "--workdir", str(tmp_path / "work"))

    assert build.code == 1
    assert "1 MTP tensor(s) the qwen4_exp family does not know, first mtp.norm.weight" in build.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"indexer_n_heads": None}, r"text_config\.indexer_n_heads: is required; without it vLLM 0\.33\.0 builds Qwen3-Next attention"),
        ({"hc_count": None}, r"text_config\.hc_count: is required"),
        ({"hc_lowrank": 0}, r"text_config\.hc_lowrank: must be an integer >= 1, found 0"),
        ({"ple_layer_ids": None}, r"text_config\.ple_layer_ids: is required"),
        (
            {"ple_layer_ids": [1, 5]},
            (
                r"text_config\.ple_layer_ids: names MTP layer 4, which vLLM 0\.33\.0 would build with a PLE block it gives no inputs "
                r"\(qwen4_exp/nvidia/model\.py:210-225, 304-305\)"
            ),
        ),
        ({"tie_word_embeddings": True}, r"text_config\.tie_word_embeddings: must be false"),
    ],
)
def test_a_config_vllm_cannot_build_is_refused_by_field(change: dict[str, Any], message: str) -> None:
    config = copy.deepcopy(family_config(FAMILY))
    for key, value in change.items():
        if value is None:
            del config["text_config"][key]
        else:
            config["text_config"][key] = value
    with pytest.raises(ValueError, match=message):
        FAMILIES[FAMILY].read_geometry(config)


def test_a_config_without_a_count_has_one_mtp_layer() -> None:
    """mtp_num_hidden_layers defaults to 1 (vLLM 0.33.0 qwen4_exp/nvidia/mtp.py:190)."""
    config = copy.deepcopy(family_config(FAMILY))
    del config["text_config"]["mtp_num_hidden_layers"]
    assert FAMILIES[FAMILY].read_geometry(config).mtp_layers == range(0, 1)
