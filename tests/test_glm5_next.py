"""What sets GLM-5 next apart from the other nextn families, on its synthetic source.

Read from vLLM 0.33.0's `vllm/models/glm5next/common/` and transformers 5.20.2's
`configuration_glm5_next.py`: the multimodal release's `model.language_model.` names load, the
layer has no `shared_head.head`, and vLLM reads config fields transformers does not declare.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.families import FAMILIES
from pipeline.rehearsal.synthetic_families import FamilySpec, family_config, write_family_source, write_family_target
from tests.conftest import run_cli
from tests.safetensors_reader import folder_tensor_hashes, rename_tensor

FAMILY = FAMILIES["glm5_next"]
MTP = "model.layers.4."


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("glm5_next")
    return write_family_source(root / "source", "glm5_next"), write_family_target(root / "target", "glm5_next")


def _build(tmp_path: Path, source: Path, target: Path) -> tuple[int, str, Path]:
    recipe = tmp_path / "recipe" / "draft.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(f"family: glm5_next\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n")
    workdir = tmp_path / "work"
    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))
    return result.code, result.stderr, workdir


def test_a_source_with_the_multimodal_text_tower_names_builds_a_draft_under_model_layers(
    pristine: tuple[Path, Path], tmp_path: Path
) -> None:
    """vLLM strips `model.language_model.` before matching (mtp.py:326-327), so both layouts are sources."""
    source = Path(shutil.copytree(pristine[0], tmp_path / "source"))
    before = folder_tensor_hashes(source)
    for name in [name for name in before if name.startswith(MTP)]:
        rename_tensor(source, name, name.replace(MTP, "model.language_model.layers.4.", 1))

    code, stderr, workdir = _build(tmp_path, source, pristine[1])

    assert code == 0, stderr
    produced = folder_tensor_hashes(workdir / "draft")
    assert len(produced) == 37 and all(name.startswith(MTP) for name in produced)
    assert all(before[name] == sha for name, sha in produced.items())
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True


def test_a_source_shipping_a_shared_head_is_refused_because_vllm_builds_none(pristine: tuple[Path, Path], tmp_path: Path) -> None:
    """SharedHead(defer_lm_head=True) has no head parameter (mtp.py:62-66): loading one is a KeyError."""
    source = Path(shutil.copytree(pristine[0], tmp_path / "source"))
    rename_tensor(source, f"{MTP}embed_tokens.weight", f"{MTP}shared_head.head.weight")  # same [vocab, hidden] shape

    code, stderr, _ = _build(tmp_path, source, pristine[1])

    assert code == 1
    assert f"1 MTP tensor(s) the glm5_next family does not know, first {MTP}shared_head.head.weight" in stderr
    geometry = FAMILY.read_geometry(family_config("glm5_next"))
    assert FAMILY.vllm_param(f"{MTP}shared_head.head.weight", geometry) == f"{MTP}shared_head.head.weight"
    assert f"{MTP}shared_head.head.weight" not in FAMILY.declared_params(geometry)


@pytest.mark.parametrize("key", ["topk_method", "scoring_func", "mhc", "mla_use_nope", "indexer_rope_interleave"])
def test_a_config_without_a_field_vllm_reads_and_transformers_does_not_declare_is_refused(key: str) -> None:
    config = family_config("glm5_next")
    del config["text_config"][key]

    with pytest.raises(ValueError, match=rf"^text_config\.{key}: is required \(vLLM 0\.33\.0 reads it"):
        FAMILY.read_geometry(config)


def test_a_dense_mtp_layer_is_refused_by_field() -> None:
    """Past the list's end the MTP layer takes the last mlp_layer_types entry (model.py:414-422); the table knows only the MoE layer."""
    config = family_config("glm5_next")
    config["text_config"]["mlp_layer_types"][-1] = "dense"

    with pytest.raises(ValueError, match=r"^text_config\.mlp_layer_types: MTP layer 4 takes the last entry, 'dense'"):
        FAMILY.read_geometry(config)


def test_an_mlp_layer_types_list_that_reaches_the_mtp_layer_decides_by_its_own_entry() -> None:
    """vLLM takes mlp_layer_types[layer_idx] when the list is longer than the layer number (model.py:418-422)."""
    config = family_config("glm5_next")
    config["text_config"]["mlp_layer_types"] = ["dense", "sparse", "sparse", "dense", "sparse"]
    assert FAMILY.read_geometry(config).num_experts == 4

    config["text_config"]["mlp_layer_types"] = ["dense", "sparse", "sparse", "sparse", "dense", "sparse"]
    with pytest.raises(ValueError, match=r"^text_config\.mlp_layer_types: MTP layer 4 takes entry 4, 'dense'"):
        FAMILY.read_geometry(config)


def test_every_mtp_layer_is_checked_and_built() -> None:
    """vLLM builds num_nextn_predict_layers layers from num_hidden_layers on (mtp.py:113-124)."""
    config = family_config("glm5_next")
    config["text_config"]["num_nextn_predict_layers"] = 2
    config["text_config"]["mlp_layer_types"] = ["dense", "sparse", "sparse", "sparse", "sparse", "dense"]
    with pytest.raises(ValueError, match=r"^text_config\.mlp_layer_types: MTP layer 5 takes entry 5, 'dense'"):
        FAMILY.read_geometry(config)

    del config["text_config"]["mlp_layer_types"][-1]
    names = {tensor.name for tensor in FAMILY.expected_tensors(FAMILY.read_geometry(config))}
    assert {name.split(".")[2] for name in names} == {"4", "5"} and len(names) == 2 * 37


def test_a_null_n_shared_experts_builds_no_shared_expert() -> None:
    """Glm5NextMoE builds no shared expert when n_shared_experts is null (model.py:279-284)."""
    config = family_config("glm5_next")
    config["text_config"]["n_shared_experts"] = None
    geometry = FAMILY.read_geometry(config)

    names = {tensor.name for tensor in FAMILY.expected_tensors(geometry)}
    assert not [name for name in names if ".shared_experts." in name] and len(names) == 34
    assert not [module.prefix for module in FAMILY.quant_module_prefixes(geometry) if ".shared_experts." in module.prefix]


def test_without_mlp_layer_types_transformers_default_decides() -> None:
    """transformers fills 3 dense layers, then sparse ones (configuration_glm5_next.py:159-162)."""
    config = family_config("glm5_next")
    del config["text_config"]["mlp_layer_types"]
    assert FAMILY.read_geometry(config).num_experts == 4

    config["text_config"]["num_hidden_layers"] = 3
    with pytest.raises(ValueError, match=r"^text_config\.mlp_layer_types: MTP layer 3 takes the last entry, 'dense'"):
        FAMILY.read_geometry(config)


def test_the_router_bias_exists_only_under_noaux_tc() -> None:
    """Glm5NextMoE builds e_score_correction_bias only for topk_method noaux_tc (model.py:256-261)."""
    config = family_config("glm5_next")
    config["text_config"]["topk_method"] = "greedy"
    geometry = FAMILY.read_geometry(config)

    names = {tensor.name for tensor in FAMILY.expected_tensors(geometry)}
    assert f"{MTP}mlp.gate.weight" in names and f"{MTP}mlp.gate.e_score_correction_bias" not in names
    assert len(names) == 36


def test_a_source_with_two_mtp_layers_builds_both_and_the_card_says_so(tmp_path: Path) -> None:
    """read_geometry takes any num_nextn_predict_layers, and vLLM builds that many layers (mtp.py:113-124)."""
    spec = FamilySpec(num_mtp_layers=2)
    source = write_family_source(tmp_path / "source", "glm5_next", spec)
    target = write_family_target(tmp_path / "target", "glm5_next", spec)

    code, stderr, workdir = _build(tmp_path, source, target)

    assert code == 0, stderr
    produced = folder_tensor_hashes(workdir / "draft")
    assert {name.split(".")[2] for name in produced} == {"4", "5"} and len(produced) == 2 * 37
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True
    assert any("model.layers.{num_hidden_layers + i}" in note for note in FAMILY.card_notes)
