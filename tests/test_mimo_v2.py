"""MiMo-V2-Flash's own rules: vLLM 0.33.0 builds one MTP layer whatever the config declares
(mimo_v2_mtp.py:51-54, 177) and drops names it has no parameter for without an error (:374-377)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.families import FAMILIES
from pipeline.rehearsal.synthetic import SyntheticTensor, write_shards
from pipeline.rehearsal.synthetic_families import FamilySpec, family_config, write_family_source, write_family_target
from tests.conftest import run_cli
from tests.safetensors_reader import folder_tensor_hashes, rename_tensor

LAYER0 = "model.mtp.layers.0."
EXTRA_SHARD = "model-mtp-later-layers.safetensors"


def _add_later_layers(source: Path, layers: range) -> None:
    """Give the source the MTP layers after the first, as a release that declares them would ship them."""
    index_path = source / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    geometry = FAMILIES["mimo_v2"].read_geometry(json.loads((source / "config.json").read_text()))
    first = [t for t in FAMILIES["mimo_v2"].expected_tensors(geometry) if t.name.startswith(LAYER0)]
    later = [
        SyntheticTensor(t.name.replace(LAYER0, f"model.mtp.layers.{layer}."), "BF16", t.shape, 70_000 + 100 * layer + i)
        for layer in layers
        for i, t in enumerate(first)
    ]
    scratch = source.parent / "later-layers"
    scratch.mkdir()
    added = write_shards(scratch, [later], 0, [EXTRA_SHARD])
    shutil.move(scratch / EXTRA_SHARD, source / EXTRA_SHARD)
    extra = json.loads((scratch / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    index["weight_map"] = dict(sorted({**index["weight_map"], **added}.items()))
    index["metadata"]["total_size"] += extra
    index_path.write_text(json.dumps(index))


def _recipe(folder: Path, source: Path, target: Path) -> Path:
    recipe = folder / "recipe" / "draft.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        f"family: mimo_v2\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\nmax_shard_size: 100KB\n"
        "card: {credit: mtp-draft-pipeline (synthetic weights)}\n"
    )
    return recipe


def test_a_source_with_three_mtp_layers_gives_a_draft_of_the_first_and_a_card_that_says_one(tmp_path: Path) -> None:
    spec = FamilySpec(num_mtp_layers=3)
    source = write_family_source(tmp_path / "source", "mimo_v2", spec)
    _add_later_layers(source, range(1, 3))
    target = write_family_target(tmp_path / "target", "mimo_v2", spec)
    assert "model.mtp.layers.2.final_layernorm.weight" in folder_tensor_hashes(source)
    recipe, workdir = _recipe(tmp_path, source, target), tmp_path / "work"

    build = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))
    assert build.code == 0, build.stderr
    card = run_cli("card", "--recipe", str(recipe), "--workdir", str(workdir))
    assert card.code == 0, card.stderr

    produced = folder_tensor_hashes(workdir / "draft")
    assert len(produced) == 14 and all(name.startswith(LAYER0) for name in produced)
    assert json.loads((workdir / "draft" / "config.json").read_text())["num_nextn_predict_layers"] == 3
    assert json.loads((workdir / "verify.json").read_text())["passed"] is True
    text = (recipe.parent / "README.md").read_text()
    assert "the\nMulti-Token-Prediction (MTP) layer of" in text and "3 Multi-Token-Prediction" not in text
    assert "The draft has one MTP layer, which every step reuses" in text


def test_verify_refuses_a_second_layer_tensor_vllm_would_drop_without_a_word(tmp_path: Path) -> None:
    source = write_family_source(tmp_path / "source", "mimo_v2")
    target = write_family_target(tmp_path / "target", "mimo_v2")
    recipe, workdir = _recipe(tmp_path, source, target), tmp_path / "work"
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    rename_tensor(workdir / "draft", f"{LAYER0}final_layernorm.weight", "model.mtp.layers.1.final_layernorm.weight")

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    loader = next(c for c in json.loads((workdir / "verify.json").read_text())["checks"] if c["id"] == "loader.names")
    assert loader["evidence"] == (
        "model.mtp.layers.1.final_layernorm.weight: vLLM 0.33.0 MiMoV2MTP skips this tensor, so the draft must not ship it"
    )


def test_attention_bias_adds_qkv_biases_that_load_into_the_fused_bias() -> None:
    """QKVParallelLinear gets bias=attention_bias (vLLM 0.33.0 mimo_v2.py:284-292); V is swa_v_head_dim wide."""
    family = FAMILIES["mimo_v2"]
    geometry = family.read_geometry({**family_config("mimo_v2"), "attention_bias": True})
    shapes = {t.name: t.shape for t in family.expected_tensors(geometry)}

    assert [shapes[f"{LAYER0}self_attn.{p}_proj.bias"] for p in "qkv"] == [(4 * 16,), (2 * 16,), (2 * 8,)]
    assert {family.vllm_param(f"{LAYER0}self_attn.{p}_proj.bias", geometry) for p in "qkv"} == {f"{LAYER0}self_attn.qkv_proj.bias"}
    assert f"{LAYER0}self_attn.qkv_proj.bias" in family.declared_params(geometry)


def test_without_the_sink_flag_the_layer_has_no_attention_sink() -> None:
    """add_swa_attention_sink_bias defaults to false (vLLM 0.33.0 mimo_v2_mtp.py:98-100)."""
    config = family_config("mimo_v2")
    del config["add_swa_attention_sink_bias"]
    geometry = FAMILIES["mimo_v2"].read_geometry(config)

    assert f"{LAYER0}self_attn.attention_sink_bias" not in FAMILIES["mimo_v2"].declared_params(geometry)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attention_bias": None}, "attention_bias: is required (vLLM 0.33.0 mimo_v2_mtp.py:97 reads it without a default)"),
        ({"attention_bias": "no"}, "attention_bias: must be true or false, found 'no'"),
        ({"layernorm_epsilon": None}, "layernorm_epsilon: is required (vLLM 0.33.0 mimo_v2_mtp.py:73 reads it without a default)"),
        ({"layernorm_epsilon": "1e-5"}, "layernorm_epsilon: must be a positive number, found '1e-5'"),
        ({"hidden_act": "gelu"}, "hidden_act: must be silu (vLLM 0.33.0 mimo_v2.py:104-107), found 'gelu'"),
        ({"swa_head_dim": None}, "swa_head_dim: is required"),
        ({"num_nextn_predict_layers": 0}, "num_nextn_predict_layers: must be an integer >= 1, found 0"),
    ],
)
def test_a_config_vllm_cannot_build_the_layer_from_is_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    config = family_config("mimo_v2")
    for key, value in change.items():
        if value is None:
            del config[key]
        else:
            config[key] = value

    with pytest.raises(ValueError) as refused:
        FAMILIES["mimo_v2"].read_geometry(config)
    assert str(refused.value).startswith(message)


def test_a_pro_shaped_source_with_a_fused_qkv_proj_is_refused_not_copied(tmp_path: Path) -> None:
    """MiMo-V2-Pro stores one fused qkv_proj whose row order vLLM 0.33.0 describes two ways (mimo_v2_mtp.py:13-15
    concatenated [Q; K; V], :293-299 FP8 chunks of [Q_c | K_c | V_c]); a BF16 copy is not covered."""
    source = write_family_source(tmp_path / "source", "mimo_v2")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "architectures": ["MiMoV2ForCausalLM"]}))
    rename_tensor(source, f"{LAYER0}self_attn.q_proj.weight", f"{LAYER0}self_attn.qkv_proj.weight")
    target = write_family_target(tmp_path / "target", "mimo_v2")
    recipe = _recipe(tmp_path, source, target)

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"))

    assert result.code == 1
    assert f"MTP tensor(s) the mimo_v2 family does not know, first {LAYER0}self_attn.qkv_proj.weight" in result.stderr
    assert not (tmp_path / "work" / "draft").exists()


def test_inspect_says_vllm_loads_one_of_the_mtp_layers_a_target_config_declares(tmp_path: Path) -> None:
    """num_nextn_predict_layers counts layers, not steps (as Nemotron-H's does): vLLM 0.33.0 builds only the
    first (mimo_v2_mtp.py:51-54, 177)."""
    spec = FamilySpec(num_mtp_layers=3)
    source = write_family_source(tmp_path / "source", "mimo_v2", spec)
    target = write_family_target(tmp_path / "target", "mimo_v2", spec, variant="no-mtp")
    assert json.loads((target / "config.json").read_text())["num_nextn_predict_layers"] == 3

    result = run_cli("inspect", "--recipe", str(_recipe(tmp_path, source, target)), "--json")

    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["reasons"][0] == (
        "the target ships none of the 14 MTP tensors of layers 0, although its config declares 3 MTP layers, of which vLLM 0.33.0 loads 1"
    )
