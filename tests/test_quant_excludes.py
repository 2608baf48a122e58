"""The quantization trap: non-Step MTP modules take the target's quantization config in vLLM 0.33.0.

Exclude entries are matched the way vLLM 0.33.0 matches them (modelopt.py:191-226,
compressed_tensors/utils.py:53-70, fp8.py:176-199), against vLLM module prefixes; the module
prefixes below are written out from tests/data/vllm-0.33.0/, not read from the family tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.families import FAMILIES
from pipeline.families.base import QuantModule
from pipeline.families.quant_excludes import (
    compressed_tensors_ignored,
    coverage,
    fp8_skipped,
    modelopt_excluded,
    mtp_coverage,
    read_target_quantization,
)
from pipeline.recipe.layout import Artifacts
from pipeline.recipe.loader import load_recipe
from pipeline.rehearsal.synthetic_families import QUANT_FORMS, family_config, write_family_source, write_family_target
from pipeline.stages.card import CardStageInputs, render_card
from tests.conftest import run_cli

FUSED_QKV_A = QuantModule("model.layers.4.self_attn.fused_qkv_a_proj", "linear", ("q_a_proj", "kv_a_proj_with_mqa"))
EXPERTS = QuantModule("model.layers.4.mlp.experts", "experts", ("gate_proj", "up_proj", "down_proj"))
HEAD = QuantModule("model.layers.4.head", "head")
MIMO_QKV = QuantModule("model.layers.4.self_attn.qkv_proj", "linear", ("q_proj", "k_proj", "v_proj"))


@pytest.mark.parametrize(
    ("patterns", "excluded"),
    [
        (["model.layers.4*"], True),  # fnmatch, the form nvidia/DeepSeek-R1-FP4 uses
        (["model.layers.4.*"], True),
        (["layers.4."], True),  # an entry contained in the prefix
        (["model.layers.4.self_attn.q_a_proj", "model.layers.4.self_attn.kv_a_proj_with_mqa"], True),  # every shard, exactly
        (["model.layers.4.self_attn.q_a_proj"], False),  # one shard only
        (["model.layers.5*"], False),
        (["lm_head"], False),
        ([], False),
    ],
)
def test_modelopt_matches_wildcards_substrings_and_shards(patterns: list[str], excluded: bool) -> None:
    assert modelopt_excluded(FUSED_QKV_A, patterns) is excluded


def test_modelopt_matches_experts_through_an_entry_that_contains_them() -> None:
    assert modelopt_excluded(EXPERTS, ["model.layers.4.mlp.experts.0.gate_proj"])
    assert not modelopt_excluded(EXPERTS, ["model.layers.3.mlp.experts"])


@pytest.mark.parametrize(
    ("patterns", "ignored"),
    [
        (["re:model\\.layers\\.4\\."], True),
        (["re:.*layers\\.4\\."], True),
        (["re:layers\\.4\\."], False),  # re.match anchors at the start
        (["model.layers.4*"], False),  # no fnmatch for compressed-tensors
        (["model.layers.4.self_attn.fused_qkv_a_proj"], True),
        (["model.layers.4.self_attn.q_a_proj", "model.layers.4.self_attn.kv_a_proj_with_mqa"], True),
    ],
)
def test_compressed_tensors_matches_equal_names_and_re_entries_only(patterns: list[str], ignored: bool) -> None:
    assert compressed_tensors_ignored(FUSED_QKV_A, patterns) is ignored


def test_compressed_tensors_ignores_experts_only_when_all_three_projections_of_expert_0_are() -> None:
    names = [f"model.layers.4.mlp.experts.0.{part}" for part in ("gate_proj", "up_proj", "down_proj")]
    assert compressed_tensors_ignored(EXPERTS, names)
    assert not compressed_tensors_ignored(EXPERTS, names[:2])


def test_fp8_matches_exact_names_and_never_quantizes_the_head() -> None:
    assert fp8_skipped(MIMO_QKV, ["model.layers.4.self_attn.qkv_proj"])
    assert fp8_skipped(MIMO_QKV, [f"model.layers.4.self_attn.{p}_proj" for p in "qkv"])
    assert not fp8_skipped(MIMO_QKV, ["model.layers.4*"])
    assert fp8_skipped(EXPERTS, ["model.layers.4.mlp.experts"])
    assert fp8_skipped(HEAD, [])


def test_mimo_checkpoint_names_do_not_cover_its_vllm_modules() -> None:
    """vLLM builds MiMo's MTP as model.layers.{num_hidden_layers+i}: an exclude list written in the
    checkpoint's own names (model.mtp_layers.0) leaves the modules quantized."""
    assert not modelopt_excluded(MIMO_QKV, ["model.mtp_layers.0*"])


def test_qwen3_next_fc_is_forced_unquantized_only_under_nvfp4() -> None:
    fc = QuantModule("mtp.fc", unquantized_under=("modelopt_fp4",))
    nvfp4 = read_target_quantization({"quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": []}}, None)
    fp8 = read_target_quantization({"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": []}}, None)
    assert coverage([fc], nvfp4).covered
    assert coverage([fc], fp8).uncovered == ("mtp.fc",)


def test_the_legacy_hf_quant_config_is_read_when_config_json_has_none() -> None:
    legacy = {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "exclude_modules": ["model.layers.4*"]}}
    found = read_target_quantization({}, legacy)
    assert found is not None and found.vllm_name == "modelopt_fp4" and found.patterns == ("model.layers.4*",)
    assert found.field == "hf_quant_config.json.quantization.exclude_modules"
    assert read_target_quantization({}, None) is None


def test_an_exclude_list_that_is_not_a_list_is_bad_input() -> None:
    with pytest.raises(ValueError, match=r"quantization_config\.ignore: must be a list of strings"):
        read_target_quantization({"quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": "lm_head"}}, None)


# The exclude entries inspect must report missing when the target's list does not cover the MTP, per form.
MISSING = {
    "modelopt": {
        "deepseek_v3": "model.layers.4*",
        "deepseek_v32": "model.layers.4*",
        "glm4_moe": "model.layers.4*",
        "glm4_moe_lite": "model.layers.4*",
        "qwen3_next": "mtp.layers.0*",
        "mimo": "model.layers.4*",
        "qwen3_5": "mtp.layers.0*",
        "qwen3_5_moe": "mtp.layers.0*",
        "glm5_next": "model.layers.4*",
        "kimi_k3": "model.layers.4*",
        "minimax_m3": "model.layers.0*",
        "deepseek_v4": "model.layers.4*",
        "mimo_v2": "model.mtp.layers.0*",
        "step5": "model.layers.4*",
        "longcat_flash": "eh_proj, model.layers.4*",
    },
    "compressed-tensors": {
        "deepseek_v3": "re:model\\.layers\\.4\\.",
        "deepseek_v32": "re:model\\.layers\\.4\\.",
        "glm4_moe": "re:model\\.layers\\.4\\.",
        "glm4_moe_lite": "re:model\\.layers\\.4\\.",
        "qwen3_next": "re:mtp\\.layers\\.0\\., re:mtp\\.fc$",
        "mimo": "re:model\\.layers\\.4\\.",
        "qwen3_5": "re:mtp\\.layers\\.0\\., re:mtp\\.fc$",
        "qwen3_5_moe": "re:mtp\\.layers\\.0\\., re:mtp\\.fc$",
        "glm5_next": "re:model\\.layers\\.4\\.",
        "kimi_k3": "re:model\\.layers\\.4\\.",
        "minimax_m3": "re:model\\.layers\\.0\\.",
        "deepseek_v4": "re:model\\.layers\\.4\\.",
        "mimo_v2": "re:model\\.mtp\\.layers\\.0\\.",
        "step5": "re:model\\.layers\\.4\\.",
        "longcat_flash": "re:eh_proj$, re:model\\.layers\\.4\\.",
    },
    "fp8": {
        "deepseek_v3": "model.layers.4.self_attn.fused_qkv_a_proj",
        "deepseek_v32": "model.layers.4.self_attn.fused_qkv_a_proj",
        "glm4_moe": "model.layers.4.self_attn.qkv_proj",
        "glm4_moe_lite": "model.layers.4.self_attn.fused_qkv_a_proj",
        "qwen3_next": "mtp.layers.0.self_attn.qkv_proj",
        "mimo": "model.layers.4.self_attn.qkv_proj",
        "qwen3_5": "mtp.layers.0.self_attn.qkv_proj",
        "qwen3_5_moe": "mtp.layers.0.self_attn.qkv_proj",
        # Attention is never quantized in this family (glm5next/common/model.py:408): the experts are the first module.
        "glm5_next": "model.layers.4.mlp.experts",
        "kimi_k3": "model.layers.4.self_attn.fused_qkv_a_g_proj",
        "minimax_m3": "model.layers.0.eh_proj",
        "deepseek_v4": "model.layers.4.e_proj",
        "mimo_v2": "model.mtp.layers.0.self_attn.qkv_proj",
        "step5": "model.layers.4.mtp_block.self_attn.qkv_indexer_proj",
        "longcat_flash": "eh_proj",
    },
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quant-sources")
    for family in MISSING["modelopt"]:
        write_family_source(root / family, family)
    return root


def _inspect(tmp_path: Path, family: str, source: Path, target: Path) -> dict[str, object]:
    recipe = tmp_path / "draft.yaml"
    recipe.write_text(f"family: {family}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n")
    result = run_cli("inspect", "--recipe", str(recipe), "--json")
    assert result.code == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("form", QUANT_FORMS)
@pytest.mark.parametrize("family", sorted(MISSING["modelopt"]))
def test_a_target_whose_exclude_list_misses_the_mtp_makes_the_draft_incompatible(
    family: str, form: str, sources: Path, tmp_path: Path
) -> None:
    target = write_family_target(tmp_path / "target", family, form=form, mtp_excluded=False)

    report = _inspect(tmp_path, family, sources / family, target)

    assert report["verdict"] == "incompatible"
    reasons = report["reasons"]
    assert isinstance(reasons, list) and len(reasons) == 1
    assert f"vLLM builds the {family} MTP with the target's" in reasons[0] and MISSING[form][family] in reasons[0]
    assert MISSING[form][family].split(", ")[0] in str(report["summary"])


@pytest.mark.parametrize("form", QUANT_FORMS)
@pytest.mark.parametrize("family", sorted(MISSING["modelopt"]))
def test_a_target_whose_exclude_list_covers_the_mtp_leaves_the_draft_needed(family: str, form: str, sources: Path, tmp_path: Path) -> None:
    target = write_family_target(tmp_path / "target", family, form=form, mtp_excluded=True)

    report = _inspect(tmp_path, family, sources / family, target)

    assert report["verdict"] == "needed", report["reasons"]
    quantization = report["quantization"]
    assert isinstance(quantization, dict) and quantization["covered"] is True and quantization["uncovered"] == []


def test_a_target_shipping_its_mtp_is_not_redundant_when_vllm_would_quantize_it(sources: Path, tmp_path: Path) -> None:
    target = write_family_target(tmp_path / "target", "deepseek_v3", variant="mtp-shard", mtp_excluded=False)

    report = _inspect(tmp_path, "deepseek_v3", sources / "deepseek_v3", target)

    assert report["verdict"] == "incompatible"


def test_a_forced_release_of_an_incompatible_draft_says_why_on_its_card(sources: Path, tmp_path: Path) -> None:
    target = write_family_target(tmp_path / "target", "glm4_moe", mtp_excluded=False)
    recipe = tmp_path / "recipe" / "draft.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        f"family: glm4_moe\nsource: {{path: {sources / 'glm4_moe'}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n"
        "card: {credit: mtp-draft-pipeline (synthetic weights)}\n"
    )

    build = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"))
    assert build.code == 0, build.stderr
    assert "target.mtp-quantization" in build.stderr and "model.layers.4*" in build.stderr  # verify's warning

    loaded = load_recipe(recipe)
    family = FAMILIES["glm4_moe"].with_shared_weights(loaded.shared_weights)
    card = render_card(CardStageInputs(loaded, family, tmp_path / "bench", Artifacts(recipe.parent), "incompatible"))
    warning = next(line for line in card.splitlines() if "Published with --force" in line)
    assert "inspection found this draft incompatible" in warning
    assert "vLLM would load the MTP quantized with the target's config (exclude list misses model.layers.4*)" in warning


# Families whose MTP vLLM 0.33.0 builds with the draft's own quantization config: NemotronHMTP
# (nemotron_h_mtp.py:238-239, 380-384) and Qwen4ExpMTP (qwen4_exp/nvidia/mtp.py:135, 196-230).
DRAFT_QUANTIZED = {"nemotron_h": "NemotronHMTP", "qwen4_exp": "Qwen4ExpMTP"}


@pytest.mark.parametrize("form", QUANT_FORMS)
@pytest.mark.parametrize("family", sorted(DRAFT_QUANTIZED))
def test_a_draft_built_with_its_own_quantization_does_not_depend_on_the_targets_exclude_list(
    family: str, form: str, tmp_path: Path
) -> None:
    """A target whose list misses the MTP still gets a BF16 MTP, shipped (redundant) or not (needed)."""
    source = write_family_source(tmp_path / "source", family)
    for variant, verdict in (("no-mtp", "needed"), ("mtp-shard", "redundant")):
        target = write_family_target(tmp_path / variant, family, variant=variant, form=form, mtp_excluded=False)

        report = _inspect(tmp_path, family, source, target)

        assert report["verdict"] == verdict, report["reasons"]
        assert report["quantization"] is None


@pytest.mark.parametrize("family", sorted(DRAFT_QUANTIZED))
def test_verify_says_a_draft_built_with_its_own_quantization_takes_none_from_the_target(family: str, tmp_path: Path) -> None:
    source = write_family_source(tmp_path / "source", family)
    target = write_family_target(tmp_path / "target", family, mtp_excluded=False)
    recipe = tmp_path / "recipe" / "draft.yaml"
    recipe.parent.mkdir()
    recipe.write_text(f"family: {family}\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n")

    build = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"))

    assert build.code == 0, build.stderr
    assert "target.mtp-quantization" not in build.stderr  # no warning, unlike a target-built family's
    advisories = {a["id"]: a for a in json.loads((tmp_path / "work" / "verify.json").read_text())["advisories"]}
    quantization = advisories["target.mtp-quantization"]
    assert quantization["passed"] and quantization["evidence"] == (
        f"{DRAFT_QUANTIZED[family]} builds the MTP from the draft's own config, which has no quantization_config"
    )
    assert "quantization_config" not in json.loads((tmp_path / "work" / "draft" / "config.json").read_text())


# DeepSeek-V4's exclude entries in the checkpoint's own names: vLLM renames them with the target
# model's mapper before the draft is built (model_loader/utils.py:367-386, deepseek_v4/nvidia/model.py:1251-1268).
V4_FP8_CHECKPOINT_NAMES = [
    *(f"layers.4.{module}" for module in ("e_proj", "h_proj", "attn.wq_a", "attn.wkv", "attn.wq_b", "attn.wo_a", "attn.wo_b")),
    *(f"layers.4.ffn.shared_experts.w{i}" for i in (1, 3, 2)),
    "layers.4.ffn.experts",
]


@pytest.mark.parametrize(
    ("section", "covered"),
    [
        (
            {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head", "layers.4*"]},
            True,
        ),  # -> model.layers.4, model.layers.4.*
        ({"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head", "mtp.0*"]}, False),  # -> model.mtp.0, model.mtp.0.*
        ({"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head", "mtp*"]}, False),
        ({"quant_method": "compressed-tensors", "ignore": ["lm_head", *V4_FP8_CHECKPOINT_NAMES[:-1]]}, False),  # experts need .0.w1-w3
        (
            {
                "quant_method": "compressed-tensors",
                "ignore": [*V4_FP8_CHECKPOINT_NAMES[:-1], *(f"layers.4.ffn.experts.0.w{i}" for i in (1, 2, 3))],
            },
            True,
        ),
        ({"quant_method": "fp8", "activation_scheme": "dynamic", "modules_to_not_convert": V4_FP8_CHECKPOINT_NAMES}, True),
        (
            {
                "quant_method": "fp8",
                "activation_scheme": "dynamic",
                "modules_to_not_convert": [f"mtp.0.{n[9:]}" for n in V4_FP8_CHECKPOINT_NAMES],
            },
            False,
        ),
    ],
)
def test_deepseek_v4_exclude_entries_are_matched_after_vllms_rename_of_the_target_names(section: dict[str, object], covered: bool) -> None:
    family = FAMILIES["deepseek_v4"]
    geometry = family.read_geometry(family_config("deepseek_v4"))

    result = mtp_coverage(family, geometry, {"quantization_config": section}, None)

    assert result is not None and result.covered is covered
    assert result.quantization is not None and list(result.quantization.patterns) == next(
        v for k, v in section.items() if isinstance(v, list)
    )


def test_a_step5_exclude_list_under_language_model_covers_the_mtp_as_vllm_renames_it() -> None:
    """Step5MTP drops `language_model.` from the target's exclude list before building the MTP
    (vLLM 0.33.0 step5/nvidia/mtp.py:276-281), so the FP8 form's exact names match with that prefix."""
    family = FAMILIES["step5"]
    geometry = family.read_geometry(family_config("step5"))
    modules = [module.prefix for module in family.quant_module_prefixes(geometry) if module.kind != "head"]
    config = {
        "quantization_config": {"quant_method": "fp8", "modules_to_not_convert": ["lm_head", *("language_model." + m for m in modules)]}
    }

    covered = mtp_coverage(family, geometry, config, None)
    assert covered is not None and covered.covered
    config["quantization_config"]["modules_to_not_convert"] = ["lm_head", *("model.language_model." + m for m in modules)]
    uncovered = mtp_coverage(family, geometry, config, None)
    assert uncovered is not None and uncovered.uncovered == tuple(modules)


@pytest.mark.parametrize(("architecture", "covered"), [("Step5ForConditionalGeneration", True), ("Step5ForCausalLM", False)])
def test_a_step5_vlm_targets_checkpoint_form_exclude_covers_the_mtp(architecture: str, covered: bool) -> None:
    """A VLM target's class maps `model.language_model.` to `language_model.model.` before Step5MTP drops
    `language_model.` (vLLM 0.33.0 step5/nvidia/vl.py:16-18, step3p7.py:22-32, mtp.py:274-281), so the
    checkpoint's own form covers the MTP there; the text class has no such rule."""
    family = FAMILIES["step5"]
    config = {**family_config("step5"), "architectures": [architecture]}
    geometry = family.read_geometry(config)
    config["quantization_config"] = {
        "quant_method": "modelopt",
        "quant_algo": "NVFP4",
        "exclude_modules": ["lm_head", "model.language_model.layers.4*"],
    }

    result = mtp_coverage(family, geometry, config, None)

    assert result is not None
    assert result.covered is covered
    assert result.uncovered == (() if covered else tuple(module.prefix for module in family.quant_module_prefixes(geometry)))
