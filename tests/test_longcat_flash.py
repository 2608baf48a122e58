"""LongCat-Flash specifics: its config fields, its quantization switch and its one MTP module.

Expected names and messages are written out from vLLM 0.33.0's `longcat_flash_mtp.py` and
`longcat_flash.py` and transformers 5.20.2's `configuration_longcat_flash.py`, not read from the
family table. The family-wide tests (build, verify, replay, inspect) are in test_families.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.families import FAMILIES
from pipeline.families.base import QuantModule
from pipeline.families.quant_excludes import modelopt_excluded, mtp_coverage
from pipeline.rehearsal.synthetic_families import family_config, write_family_source, write_family_target
from tests.conftest import run_cli

FAMILY = "longcat_flash"
UPSTREAM = Path(__file__).resolve().parent / "data" / "vllm-0.33.0" / f"{FAMILY}.json"
BLOCK = ("self_attn.fused_qkv_a_proj", "self_attn.q_b_proj", "self_attn.kv_b_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def _target(ignore: list[str], **fields: Any) -> dict[str, Any]:
    config = {**family_config(FAMILY), **fields}
    config["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ignore}
    return config


def _uncovered(target: dict[str, Any]) -> tuple[str, ...]:
    family = FAMILIES[FAMILY]
    result = mtp_coverage(family, family.read_geometry(family_config(FAMILY)), target, None)
    assert result is not None
    return result.uncovered


def test_disable_quant_module_mtp_leaves_eh_proj_unquantized_but_not_the_decoder_layer() -> None:
    """`"mtp" in disable_quant_module` drops the quant_config of eh_proj (longcat_flash_mtp.py:134-138, 40-46);
    the decoder layer reads vllm_config.quant_config itself (deepseek_v2.py:1264)."""
    assert _uncovered(_target(["lm_head", "model.layers.4*"])) == ("eh_proj",)
    assert _uncovered(_target(["lm_head", "model.layers.4*"], disable_quant_module=["mtp"])) == ()
    assert _uncovered(_target(["lm_head"], disable_quant_module=["mtp"])) == tuple(f"model.layers.4.{module}" for module in BLOCK)
    assert _uncovered(_target(["lm_head", "model.layers.4*"], disable_quant_module=["self_attn", "mlps"])) == ("eh_proj",)


def test_the_upstream_list_names_the_switch_the_family_replays() -> None:
    upstream = json.loads(UPSTREAM.read_text())["quantization"]["unquantized_if"]
    modules = {module.prefix: module.unquantized_if for module in FAMILIES[FAMILY].quant_modules}
    assert {prefix: list(switch) for prefix, switch in modules.items() if switch} == upstream


def test_fused_qkv_a_proj_is_matched_whole_since_the_target_model_does_not_pack_it() -> None:
    """LongcatFlashForCausalLM's packed_modules_mapping has qkv_proj and gate_up_proj only
    (longcat_flash.py:554-564), so an exclude list naming q_a_proj and kv_a_proj_with_mqa
    (quant_utils.py:650-690) leaves the fused module quantized, unlike DeepSeek's."""
    parts = ["model.layers.4.self_attn.q_a_proj", "model.layers.4.self_attn.kv_a_proj_with_mqa"]
    attention = QuantModule("model.layers.4.self_attn.fused_qkv_a_proj")
    assert attention in FAMILIES[FAMILY].quant_module_prefixes(FAMILIES[FAMILY].read_geometry(family_config(FAMILY)))
    assert _uncovered(_target(["lm_head", "eh_proj", "model.layers.4.*", *parts])) == ()
    assert _uncovered(_target(["lm_head", "eh_proj", *parts])) == tuple(f"model.layers.4.{module}" for module in BLOCK)
    assert not modelopt_excluded(attention, parts)
    assert modelopt_excluded(attention, ["model.layers.4.self_attn.fused_qkv_a_proj"])


def test_the_mtp_layer_is_numbered_after_both_attention_sublayers_of_every_decoder_layer() -> None:
    """vLLM numbers the layer num_layers * 2 (longcat_flash_mtp.py:85); the checkpoint keeps layers.0."""
    family = FAMILIES[FAMILY]
    geometry = family.read_geometry({**family_config(FAMILY), "num_layers": 28})

    assert family.vllm_param("model.mtp.layers.0.eh_proj.weight", geometry) == "model.layers.56.eh_proj.weight"
    assert family.vllm_param("model.mtp.norm.weight", geometry) == "model.layers.56.final_layernorm.weight"
    assert [m.prefix for m in family.quant_module_prefixes(geometry)][:2] == ["eh_proj", "model.layers.56.self_attn.fused_qkv_a_proj"]


def test_intermediate_size_is_read_as_transformers_alias_of_ffn_hidden_size() -> None:
    """configuration_longcat_flash.py:58-63 maps intermediate_size to ffn_hidden_size."""
    config = family_config(FAMILY)
    width = config.pop("ffn_hidden_size")
    family = FAMILIES[FAMILY]

    shapes = {t.name: t.shape for t in family.expected_tensors(family.read_geometry({**config, "intermediate_size": width}))}
    assert shapes["model.mtp.layers.0.transformer_layer.mlp.gate_proj.weight"] == (96, 64)
    with pytest.raises(ValueError, match=r"^ffn_hidden_size: is required"):
        family.read_geometry(config)
    with pytest.raises(ValueError, match=r"^intermediate_size: names ffn_hidden_size .* the two differ"):
        family.read_geometry({**config, "ffn_hidden_size": width, "intermediate_size": width * 2})


@pytest.mark.parametrize("count", [2, 0])
def test_a_config_asking_for_other_than_one_mtp_layer_is_refused_by_field(count: int) -> None:
    """vLLM builds one layer whatever the count (longcat_flash_mtp.py:86) and renames only layers.0 (:183-210)."""
    with pytest.raises(ValueError, match=r"^num_nextn_predict_layers: vLLM 0\.33\.0 LongCatFlashMTP builds exactly 1 MTP layer"):
        FAMILIES[FAMILY].read_geometry({**family_config(FAMILY), "num_nextn_predict_layers": count})


def test_inspect_compares_num_layers_which_longcat_configs_use_for_the_depth(tmp_path: Path) -> None:
    """transformers' LongcatFlashConfig stores num_layers and derives num_hidden_layers (configuration_longcat_flash.py:87, 117-123)."""
    source = write_family_source(tmp_path / "source", FAMILY)
    target = write_family_target(tmp_path / "target", FAMILY)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config["num_layers"] = 3
    config_path.write_text(json.dumps(config))
    recipe = tmp_path / "draft.yaml"
    recipe.write_text(f"family: {FAMILY}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n")

    result = run_cli("inspect", "--recipe", str(recipe), "--json")

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "incompatible" and report["reasons"] == ["num_layers differs: draft 2, target 3"]
