"""The family tables and name replay against vLLM 0.33.0, as transcribed from the wheel.

tests/data/vllm-0.33.0/<family>.json holds, for each family's tiny synthetic geometry, the
parameters the MTP module declares, the checkpoint names its `load_weights` consumes (and what
it fills with each), names that end in KeyError or are skipped, and the module prefixes the
quantization configs see; every list names the file and lines it was read from. Nothing here
is derived from the family tables, so a wrong table or a wrong replay fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.families import FAMILIES, Family, Geometry
from pipeline.rehearsal.synthetic import SyntheticSpec, step_config
from pipeline.rehearsal.synthetic_families import FamilySpec, family_config

UPSTREAM = Path(__file__).resolve().parent / "data" / "vllm-0.33.0"
NON_STEP = (
    "deepseek_v3",
    "deepseek_v32",
    "glm4_moe",
    "glm4_moe_lite",
    "qwen3_next",
    "mimo",
    "qwen3_5",
    "qwen3_5_moe",
    "glm5_next",
    "kimi_k3",
    "minimax_m3",
    "deepseek_v4",
    "mimo_v2",
    "longcat_flash",
)
# The parameters the proposer replaces with the target's (llm_base_proposer.py:1418-1575), by family.
REPLACED = {
    "deepseek_v3": {"model.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "deepseek_v32": {"model.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "glm4_moe": {"model.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "glm4_moe_lite": {"model.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "qwen3_next": {"model.embed_tokens.weight", "lm_head.weight"},
    "mimo": {"model.embed_tokens.weight", "lm_head.weight"},
    "qwen3_5": {"model.embed_tokens.weight", "lm_head.weight"},
    "qwen3_5_moe": {"model.embed_tokens.weight", "lm_head.weight"},
    # GLM-5 next's layer builds no head: the proposer sets the target's in (llm_base_proposer.py:1560-1575).
    "glm5_next": {"model.embed_tokens.weight"},
    "kimi_k3": {"model.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "minimax_m3": {"model.embed_tokens.weight", "lm_head.weight"},
    "deepseek_v4": {"model.embed_tokens.weight", "model.layers.4.shared_head.head.weight"},
    "mimo_v2": {"model.embed_tokens.weight", "lm_head.weight"},
    "longcat_flash": {"model.embed_tokens.weight", "lm_head.weight"},
    "qwen4_exp": {"model.embed_tokens.weight", "lm_head.weight"},
}
# Replaced parameters no checkpoint name can fill, so no draft ships them (longcat_flash_mtp.py:145-150, 311-316).
UNFILLED = {"longcat_flash": {"lm_head.weight"}}


def _upstream(family: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((UPSTREAM / f"{family}.json").read_text())
    assert data["vllm"] == "0.33.0" and all(data[key]["source"] for key in ("params", "consumes", "key_errors", "skipped"))
    return data


def _config(family: str) -> dict[str, Any]:
    return step_config(SyntheticSpec()) if family == "step3p7" else family_config(family)


def _geometry(family: str) -> Geometry:
    return FAMILIES[family].read_geometry(_config(family))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_family_declares_exactly_the_parameters_the_vllm_module_declares(family: str) -> None:
    assert sorted(FAMILIES[family].declared_params(_geometry(family))) == _upstream(family)["params"]["names"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_checkpoint_name_fills_the_parameter_vllm_fills(family: str) -> None:
    geometry = _geometry(family)
    for name, param in _upstream(family)["consumes"]["names"].items():
        assert FAMILIES[family].vllm_param(name, geometry) == param, name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_names_vllm_cannot_load_are_key_errors_or_skipped(family: str) -> None:
    upstream, geometry, known = _upstream(family), _geometry(family), FAMILIES[family]
    declared = set(upstream["params"]["names"])
    for name, mapped in upstream["key_errors"]["names"].items():
        assert known.vllm_param(name, geometry) == mapped and mapped not in declared, name
    for name in upstream["skipped"]["names"]:
        assert known.vllm_param(name, geometry) is None, name


@pytest.mark.parametrize("family", [name for name in sorted(FAMILIES) if "copy" in FAMILIES[name].shared_weights_choices])
def test_a_draft_with_copies_fills_every_declared_parameter_with_names_vllm_consumes(family: str) -> None:
    upstream, geometry = _upstream(family), _geometry(family)
    draft = FAMILIES[family].with_shared_weights("copy")
    names = [tensor.name for tensor in draft.expected_tensors(geometry)]

    assert set(names) <= set(upstream["consumes"]["names"])
    assert {upstream["consumes"]["names"][name] for name in names} == set(upstream["params"]["names"]) - UNFILLED.get(family, set())


@pytest.mark.parametrize("family", [*NON_STEP, "qwen4_exp"])
def test_a_draft_without_copies_fills_all_but_the_parameters_vllm_replaces(family: str) -> None:
    upstream, geometry = _upstream(family), _geometry(family)
    names = [tensor.name for tensor in FAMILIES[family].with_shared_weights("omit").expected_tensors(geometry)]

    filled = {upstream["consumes"]["names"][name] for name in names}
    assert filled == set(upstream["params"]["names"]) - REPLACED[family]
    assert len(filled) == len(upstream["params"]["names"]) - len(REPLACED[family])


def test_step_refuses_to_leave_its_copies_out() -> None:
    with pytest.raises(ValueError, match="must be copy for step3p7: vLLM's Step3p5MTP keeps the draft's own per-layer heads"):
        FAMILIES["step3p7"].with_shared_weights("omit")


@pytest.mark.parametrize("family", NON_STEP)
def test_the_quantizable_mtp_modules_are_vllms_module_prefixes(family: str) -> None:
    upstream, geometry = _upstream(family)["quantization"], _geometry(family)
    known: Family = FAMILIES[family]

    assert upstream["built_from"] == known.quantization_from == "target"
    assert [m.prefix for m in known.with_shared_weights("omit").quant_module_prefixes(geometry)] == upstream["modules"]
    assert [m.prefix for m in known.with_shared_weights("copy").quant_module_prefixes(geometry)] == upstream["modules"] + upstream[
        "shared_modules"
    ]
    for module in known.quant_module_prefixes(geometry):
        assert list(module.unquantized_under) == upstream.get("unquantized_under", {}).get(module.prefix, [])


def test_step_builds_its_mtp_from_the_drafts_own_quantization() -> None:
    assert _upstream("step3p7")["quantization"]["built_from"] == FAMILIES["step3p7"].quantization_from == "draft"


def test_every_family_names_the_vllm_release_and_file_its_rules_come_from() -> None:
    for family in FAMILIES.values():
        assert family.vllm_release == "0.33.0" and family.vllm_file.endswith(".py"), family.name
        assert any(f"vLLM 0.33.0 {family.vllm_file}" in fact for fact in family.facts), family.name
        confirmed = " ".join(fact for fact in family.facts if not fact.startswith("unverified"))
        assert "unverified" not in confirmed, family.name


def test_a_nemotron_h_draft_fills_every_declared_parameter_without_an_embedding_or_head() -> None:
    """NemotronHMTP declares neither (nemotron_h_mtp.py:255, 333-334, 372): nothing is shared, nothing to copy."""
    upstream, geometry = _upstream("nemotron_h"), _geometry("nemotron_h")
    names = [tensor.name for tensor in FAMILIES["nemotron_h"].expected_tensors(geometry)]

    assert len(names) == len(set(names)) == 22
    assert {upstream["consumes"]["names"][name] for name in names} == set(upstream["params"]["names"])
    assert not any("embed" in param or "lm_head" in param for param in upstream["params"]["names"])


def test_nemotron_h_replay_never_names_a_parameter_the_module_lacks() -> None:
    """Its loader skips every name without a parameter (nemotron_h_mtp.py:482-487, 512-513, 532-536), so
    no name, however far from the layout, may replay to a parameter the module lacks (a KeyError)."""
    family, geometry = FAMILIES["nemotron_h"], _geometry("nemotron_h")
    assert _upstream("nemotron_h")["key_errors"]["names"] == {}
    names = [tensor.name for tensor in family.expected_tensors(geometry)]
    moved = {"mtp.layers.0.": "mtp.layers.1.", "mtp.layers.1.": "mtp.layers.0."}
    variants = {
        variant
        for name in names
        for variant in (
            name.replace(".weight", ".bias"),
            name.replace(".weight", ".weight_scale"),
            name.replace(".experts.0.", ".experts.9."),
            next((name.replace(old, new) for old, new in moved.items() if name.startswith(old)), name),
        )
    } - set(names)

    replayed = {name: family.vllm_param(name, geometry) for name in variants}

    declared = family.declared_params(geometry)
    assert all(family.vllm_param(name, geometry) in declared for name in names)
    assert {name: param for name, param in replayed.items() if param is not None and param not in declared} == {}
    assert sum(param is None for param in replayed.values()) > len(names)


def test_nemotron_h_refuses_to_ship_copies_it_has_none_of() -> None:
    with pytest.raises(ValueError, match="must be omit for nemotron_h: vLLM's NemotronHMTP has no embedding or head of its own"):
        FAMILIES["nemotron_h"].with_shared_weights("copy")


@pytest.mark.parametrize("family", ["nemotron_h", "qwen4_exp"])
def test_a_family_builds_its_mtp_from_the_drafts_own_quantization(family: str) -> None:
    assert _upstream(family)["quantization"]["built_from"] == FAMILIES[family].quantization_from == "draft"


def test_step5_builds_its_mtp_with_the_targets_quantization_over_vllms_module_prefixes() -> None:
    """Step5MTP uses the target's quant_config (step5/nvidia/mtp.py:104) but always ships its embedding and
    heads, so there is no `omit` form: the modules are the same whatever the recipe says."""
    upstream, geometry = _upstream("step5")["quantization"], _geometry("step5")
    known = FAMILIES["step5"]

    assert upstream["built_from"] == known.quantization_from == "target"
    assert [m.prefix for m in known.quant_module_prefixes(geometry)] == upstream["modules"] + upstream["shared_modules"]
    assert all(not module.unquantized_under for module in known.quant_module_prefixes(geometry))


def test_step5_replays_a_sliding_mtp_layer_as_vllm_loads_it() -> None:
    """A second Step5 geometry (step5-sliding.json): MTP layer 5 is sliding, so q/k/v and the head gate
    load into qkvg_proj (step5/nvidia/model.py:990-1016, 1075-1090), not the sparse qkv_indexer_proj."""
    upstream: dict[str, Any] = json.loads((UPSTREAM / "step5-sliding.json").read_text())
    family = FAMILIES["step5"]
    geometry = family.read_geometry(family_config("step5", FamilySpec(num_mtp_layers=2)))

    assert sorted(family.declared_params(geometry)) == upstream["params"]["names"]
    for name, param in upstream["consumes"]["names"].items():
        assert family.vllm_param(name, geometry) == param, name
    for name in upstream["skipped"]["names"]:
        assert family.vllm_param(name, geometry) is None, name
    assert [module.prefix for module in family.quant_module_prefixes(geometry)] == upstream["quantization"]["modules"]
