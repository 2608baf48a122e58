"""MiniMax M3 beyond the shared family tests: silent skips, the multimodal release's names, the
config fields vLLM 0.33.0 needs, and the module names the target's exclude list must cover.

Expected names and messages are written out from vLLM 0.33.0's `vllm/models/minimax_m3/nvidia/`
(`mtp.py`, `model.py`) and `model_executor/layers/linear.py`, not read from the family table.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.families import FAMILIES
from pipeline.families.base import QuantModule
from pipeline.families.quant_excludes import modelopt_excluded
from pipeline.rehearsal.synthetic_families import FamilySpec, family_config, write_family_source, write_family_target
from tests.conftest import run_cli
from tests.safetensors_reader import folder_tensor_hashes, rename_tensor

FAMILY = "minimax_m3"
LAYER = "model.mtp.layers.0."


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("minimax_m3")
    return write_family_source(root / "source", FAMILY), write_family_target(root / "target", FAMILY)


def _build(folder: Path, source: Path, target: Path) -> tuple[Path, Path]:
    recipe, workdir = folder / "recipe" / "draft.yaml", folder / "work"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        f"family: {FAMILY}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\nmax_shard_size: 100KB\n"
    )
    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))
    assert result.code == 0, result.stderr
    return recipe, workdir


@pytest.mark.parametrize(
    ("name", "stored_as"),
    [
        # The loader inserts nothing: without `transformer_layer.` the name misses the decoder layer (mtp.py:223, :299-301).
        (f"{LAYER}transformer_layer.self_attn.o_proj.weight", f"{LAYER}self_attn.o_proj.weight"),
        # Contains `model.mtp.layers`, so it becomes model.language_model.layers.0.*, no parameter (mtp.py:217-223).
        (f"{LAYER}enorm.weight", "model.language_model.mtp.layers.0.enorm.weight"),
        # Checkpoint experts are w1/w2/w3; a gate_proj is no stacked part of the experts and matches no expert entry (mtp.py:264-297).
        (
            f"{LAYER}transformer_layer.block_sparse_moe.experts.2.w1.weight",
            f"{LAYER}transformer_layer.block_sparse_moe.experts.2.gate_proj.weight",
        ),
    ],
)
def test_verify_refuses_a_tensor_vllm_would_drop_without_an_error(
    name: str, stored_as: str, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    recipe, workdir = _build(tmp_path, *pair)
    rename_tensor(workdir / "draft", name, stored_as)

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1 and stored_as in result.stderr
    loader = next(c for c in json.loads((workdir / "verify.json").read_text())["checks"] if c["id"] == "loader.names")
    assert loader["evidence"] == f"{stored_as}: vLLM 0.33.0 MiniMaxM3MTP skips this tensor, so the draft must not ship it"


def test_a_source_named_as_the_multimodal_release_builds_the_same_draft(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The VL checkpoint keeps the MTP under `language_model.` (mtp.py:208-211); the draft drops the prefix."""
    source, target = pair
    bundled = Path(shutil.copytree(source, tmp_path / "bundled"))
    mtp = [name for name in folder_tensor_hashes(bundled) if name.startswith(LAYER)]
    assert len(mtp) == 33
    for name in mtp:
        rename_tensor(bundled, name, "language_model." + name)

    _, plain = _build(tmp_path / "plain", source, target)
    _, renamed = _build(tmp_path / "renamed", bundled, target)

    assert folder_tensor_hashes(renamed / "draft") == folder_tensor_hashes(plain / "draft")
    assert json.loads((renamed / "verify.json").read_text())["passed"] is True


def test_two_mtp_modules_build_both_and_an_exclude_for_layer_0_leaves_layer_1_quantized(tmp_path: Path) -> None:
    """num_mtp_modules counts the layers (speculative.py:1131); vLLM builds them as model.layers.0 and .1 (mtp.py:109-116)."""
    spec = FamilySpec(num_mtp_layers=2)
    source = write_family_source(tmp_path / "source", FAMILY, spec)
    target = write_family_target(tmp_path / "target", FAMILY, spec)

    recipe, workdir = _build(tmp_path, source, target)

    produced = set(folder_tensor_hashes(workdir / "draft"))
    assert {name.split(".")[3] for name in produced} == {"0", "1"} and len(produced) == 2 * 33
    assert json.loads((workdir / "draft" / "config.json").read_text())["text_config"]["num_mtp_modules"] == 2
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"]["ignore"] = ["lm_head", "model.layers.0*"]
    config_path.write_text(json.dumps(config))

    result = run_cli("inspect", "--recipe", str(recipe), "--json")

    report = json.loads(result.stdout)
    assert report["verdict"] == "incompatible"
    assert report["quantization"]["uncovered"][0] == "model.layers.1.eh_proj" and "model.layers.1*" in report["reasons"][0]


@pytest.mark.parametrize("pattern", ["model.mtp.layers.0*", "language_model.model.mtp*", "mtp*", "model.mtp.layers.0.eh_proj"])
def test_an_exclude_entry_in_checkpoint_names_does_not_cover_the_vllm_module(pattern: str) -> None:
    """The module is built under the predictor layer's prefix model.layers.0 (mtp.py:51-57, :112), not model.mtp.layers.0."""
    assert not modelopt_excluded(QuantModule("model.layers.0.eh_proj"), [pattern])
    assert modelopt_excluded(QuantModule("model.layers.0.eh_proj"), ["model.layers.0*"])


def _text(config: dict[str, Any]) -> dict[str, Any]:
    text: dict[str, Any] = config["text_config"]
    return text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # linear.py:1406-1409 asserts as many index heads as KV heads.
        (
            lambda text: text["sparse_attention_config"].update(sparse_num_index_heads=4),
            "text_config.sparse_attention_config.sparse_num_index_heads: must equal num_key_value_heads (2), found 4",
        ),
        # linear.py:1468-1487 place index_q with head_dim.
        (
            lambda text: text["sparse_attention_config"].update(sparse_index_dim=8),
            "text_config.sparse_attention_config.sparse_index_dim: must equal head_dim (16), found 8",
        ),
        # model.py:438-441 index the given mapping: a missing key is a KeyError, no default.
        (
            lambda text: text["sparse_attention_config"].pop("sparse_index_dim"),
            "text_config.sparse_attention_config.sparse_index_dim: is required",
        ),
        # Absent, the default indexer (configs/minimax_m3.py:89-104) has 4 heads against 2 KV heads.
        (
            lambda text: text.pop("sparse_attention_config"),
            "text_config.sparse_attention_config: is absent or null, so vLLM 0.33.0 takes its default "
            "(configs/minimax_m3.py:89-104), whose sparse_num_index_heads 4 must equal num_key_value_heads (2)",
        ),
        # The shared expert's MLP refuses any other activation (model.py:176-180).
        (lambda text: text.update(hidden_act="silu"), "text_config.hidden_act: must be swigluoai with a shared expert"),
        (lambda text: text.update(n_shared_experts=-1), "text_config.n_shared_experts: must be an integer >= 0, found -1"),
    ],
)
def test_a_config_vllm_cannot_build_the_mtp_from_is_refused_by_field(change: Any, message: str) -> None:
    config = family_config(FAMILY)
    change(_text(config))

    with pytest.raises(ValueError) as refused:
        FAMILIES[FAMILY].read_geometry(config)

    assert str(refused.value).startswith(message)


SHARED = f"{LAYER}transformer_layer.block_sparse_moe.shared_experts."


@pytest.mark.parametrize("declared", [0, None])
def test_without_shared_experts_the_layer_has_none_and_any_activation_builds(declared: int | None) -> None:
    """`if self.n_shared_experts:` (model.py:241-249): 0 or null builds no shared expert, and no
    MiniMaxM3MLP checks hidden_act (model.py:176-180); the routed experts keep their own activation."""
    family, config = FAMILIES[FAMILY], family_config(FAMILY)
    _text(config).update(n_shared_experts=declared, hidden_act="silu")
    geometry = family.read_geometry(config)

    names = {tensor.name for tensor in family.expected_tensors(geometry)}
    assert len(names) == 30 and not any(name.startswith(SHARED) for name in names)
    assert not any("shared_experts" in param for param in family.declared_params(geometry))
    assert [m.prefix for m in family.quant_module_prefixes(geometry) if "shared_experts" in m.prefix] == []
    assert family.vllm_param(SHARED + "gate_proj.weight", geometry) is None


def test_absent_fields_take_the_defaults_vllm_builds_with() -> None:
    """MiniMaxM3TextConfig's defaults (configs/minimax_m3.py:19-50, indexer :89-104) fill what the config leaves out."""
    family, config = FAMILIES[FAMILY], family_config(FAMILY)
    text = _text(config)
    for key in ("sparse_attention_config", "num_key_value_heads", "head_dim", "vocab_size", "num_hidden_layers", "n_shared_experts"):
        del text[key]
    geometry = family.read_geometry(config)

    assert (geometry.vocab_size, geometry.num_hidden_layers) == (200064, 60)
    assert geometry.attention["sparse_attention"].kv_groups == 4 and geometry.attention["sparse_attention"].head_dim == 128
    assert (geometry.sizes["index_heads"], geometry.sizes["index_dim"], geometry.sizes["shared_intermediate_size"]) == (4, 128, 24)


def test_a_flat_mtp_config_defaults_to_one_hidden_layer_and_a_vl_config_without_text_config_to_the_defaults_alone() -> None:
    """MiniMaxM3MTPConfig defaults num_hidden_layers to 1 (configs/minimax_m3.py:119); MiniMaxM3Config
    without text_config builds the default text config and ignores top-level fields (:140-141)."""
    family = FAMILIES[FAMILY]
    flat = {**_text(family_config(FAMILY)), "model_type": "minimax_m3_mtp"}
    del flat["num_hidden_layers"]
    assert family.read_geometry(flat).num_hidden_layers == 1

    bare = {**_text(family_config(FAMILY)), "model_type": "minimax_m3_vl"}
    geometry = family.read_geometry(bare)
    assert (geometry.hidden_size, geometry.num_experts, geometry.num_hidden_layers) == (6144, 128, 60)


def test_a_flat_mtp_config_reads_like_the_promoted_text_config_and_defaults_to_one_layer() -> None:
    """A standalone `minimax_m3_mtp` config is flat (speculative.py:1134-1145); num_mtp_modules defaults to 1."""
    family, vl = FAMILIES[FAMILY], family_config(FAMILY, FamilySpec(num_mtp_layers=2))
    flat = {**copy.deepcopy(_text(vl)), "model_type": "minimax_m3_mtp", "architectures": ["MiniMaxM3MTP"]}

    assert family.read_geometry(flat) == family.read_geometry(vl)
    del flat["num_mtp_modules"]
    assert family.declared_mtp_count(flat) == 1 and family.read_geometry(flat).num_mtp_layers == 1


def test_without_the_routing_bias_the_layer_has_no_correction_bias() -> None:
    """e_score_correction_bias exists only with use_routing_bias (model.py:219-228)."""
    family, config = FAMILIES[FAMILY], family_config(FAMILY)
    _text(config)["use_routing_bias"] = False
    geometry = family.read_geometry(config)

    names = {tensor.name for tensor in family.expected_tensors(geometry)}
    assert len(names) == 32 and f"{LAYER}transformer_layer.block_sparse_moe.e_score_correction_bias" not in names
    assert "model.layers.0.transformer_layer.block_sparse_moe.e_score_correction_bias" not in family.declared_params(geometry)
