"""Qwen4 Exp beyond the shared family tests: the draft's own quantization, the mixer injection vLLM
drops, the multimodal release's names, and the config fields vLLM 0.33.0 needs.

Expected names and messages are written out from vLLM 0.33.0's `vllm/models/qwen4_exp/nvidia/`
(`mtp.py`, `model.py`) and `model_executor/models/utils.py`, not read from the family table.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.families import FAMILIES
from pipeline.rehearsal.synthetic_families import QUANT_FORMS, family_config, write_family_source, write_family_target
from tests.conftest import run_cli
from tests.safetensors_reader import folder_tensor_hashes, rename_tensor

FAMILY = "qwen4_exp"
UPSTREAM = Path(__file__).resolve().parent / "data" / "vllm-0.33.0" / "qwen4_exp.json"
# The proposer replaces these with the target's (llm_base_proposer.py:1418-1575).
REPLACED = {"model.embed_tokens.weight", "lm_head.weight"}


def _upstream() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(UPSTREAM.read_text())
    return data


def _recipe(folder: Path, source: Path, target: Path) -> Path:
    recipe = folder / "recipe" / "draft.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        f"family: {FAMILY}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\nmax_shard_size: 100KB\n"
    )
    return recipe


def test_a_draft_without_copies_fills_all_but_the_parameters_vllm_replaces() -> None:
    upstream, family = _upstream(), FAMILIES[FAMILY]
    geometry = family.read_geometry(family_config(FAMILY))
    filled = {upstream["consumes"]["names"][t.name] for t in family.with_shared_weights("omit").expected_tensors(geometry)}
    assert filled == set(upstream["params"]["names"]) - REPLACED


def test_the_mtp_is_built_from_the_drafts_own_quantization() -> None:
    assert _upstream()["quantization"]["built_from"] == FAMILIES[FAMILY].quantization_from == "draft"


@pytest.mark.parametrize("form", QUANT_FORMS)
def test_a_draft_does_not_depend_on_the_targets_exclude_list(form: str, tmp_path: Path) -> None:
    """Qwen4ExpMTP takes get_draft_quant_config (vLLM 0.33.0 qwen4_exp/nvidia/mtp.py:135, 196-230), so a
    target whose list misses mtp.* still gets a BF16 MTP, shipped (redundant) or not (needed)."""
    source = write_family_source(tmp_path / "source", FAMILY)
    for variant, verdict in (("no-mtp", "needed"), ("mtp-shard", "redundant")):
        target = write_family_target(tmp_path / variant, FAMILY, variant=variant, form=form, mtp_excluded=False)
        recipe = tmp_path / variant / "draft.yaml"
        recipe.write_text(f"family: {FAMILY}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n")

        result = run_cli("inspect", "--recipe", str(recipe), "--json")

        assert result.code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["verdict"] == verdict, report["reasons"]
        assert report["quantization"] is None


def test_verify_says_the_draft_takes_no_quantization_from_the_target(tmp_path: Path) -> None:
    source = write_family_source(tmp_path / "source", FAMILY)
    target = write_family_target(tmp_path / "target", FAMILY, mtp_excluded=False)
    recipe = _recipe(tmp_path, source, target)

    build = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"))

    assert build.code == 0, build.stderr
    assert "target.mtp-quantization" not in build.stderr
    advisories = {a["id"]: a for a in json.loads((tmp_path / "work" / "verify.json").read_text())["advisories"]}
    assert advisories["target.mtp-quantization"]["evidence"] == (
        "Qwen4ExpMTP builds the MTP from the draft's own config, which has no quantization_config"
    )


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
