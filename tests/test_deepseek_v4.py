"""DeepSeek-V4's config fields that change what vLLM 0.33.0 builds or how it names a tensor.

Read from `vllm/models/deepseek_v4/nvidia/mtp.py` and `nvidia/model.py` of the wheel, and
transformers 5.20.2's `configuration_deepseek_v4.py` for the defaults vLLM sees.
"""

from __future__ import annotations

import pytest

from pipeline.families import FAMILIES
from pipeline.rehearsal.synthetic_families import family_config

FAMILY = FAMILIES["deepseek_v4"]
EXPERT_SCALE = "mtp.0.ffn.experts.1.w1.scale"
SHARED = "mtp.0.ffn.shared_experts.w1.weight"


@pytest.mark.parametrize(
    ("expert_dtype", "param"),
    [
        (None, "w13_weight_scale"),  # absent: getattr(config, "expert_dtype", "fp4") is "fp4"
        ("fp4", "w13_weight_scale"),
        ("fp8", "w13_weight_scale_inv"),
        ("bf16", "w13_weight_scale_inv"),
    ],
)
def test_an_expert_scale_takes_weight_scale_only_when_expert_dtype_is_fp4_or_absent(expert_dtype: str | None, param: str) -> None:
    """mtp.py:403-407 picks `.weight_scale` only for "fp4" (the default); every other dtype gets `_inv`."""
    config = family_config("deepseek_v4")
    if expert_dtype is not None:
        config["expert_dtype"] = expert_dtype

    assert FAMILY.vllm_param(EXPERT_SCALE, FAMILY.read_geometry(config)) == f"model.layers.4.mtp_block.ffn.experts.routed_experts.{param}"


def test_an_explicit_null_expert_dtype_is_not_fp4() -> None:
    """vLLM's getattr finds the attribute set to None, which is not "fp4" (mtp.py:403-407)."""
    config = {**family_config("deepseek_v4"), "expert_dtype": None}

    param = FAMILY.vllm_param(EXPERT_SCALE, FAMILY.read_geometry(config))

    assert param == "model.layers.4.mtp_block.ffn.experts.routed_experts.w13_weight_scale_inv"


@pytest.mark.parametrize("expert_dtype", ["fp4", "fp8"])
def test_the_target_exclude_list_is_renamed_with_the_fp4_mapper_whatever_the_expert_dtype(expert_dtype: str) -> None:
    """configure_quant_config reads the class attribute built for fp4 (model_loader/utils.py:381-385,
    nvidia/model.py:1321); the fp8 mapper is set per instance later (:1337-1339)."""
    geometry = FAMILY.read_geometry({**family_config("deepseek_v4"), "expert_dtype": expert_dtype})
    rename = FAMILY.target_module_rename
    assert rename is not None

    assert rename("layers.4.ffn.experts.0.w1.scale", geometry) == "model.layers.4.ffn.experts.0.w1.weight_scale"
    assert rename("layers.4.attn.wq_b.scale", geometry) == "model.layers.4.attn.wq_b.weight_scale_inv"


def test_an_absent_n_shared_experts_takes_transformers_default_of_one_shared_expert() -> None:
    """transformers 5.20.2 defaults n_shared_experts to 1 (configuration_deepseek_v4.py:136); vLLM builds the
    shared expert whenever the value is not None (nvidia/model.py:320-334)."""
    config = family_config("deepseek_v4")
    del config["n_shared_experts"]

    geometry = FAMILY.read_geometry(config)

    assert geometry.sizes["shared_intermediate_size"] == geometry.sizes["moe_intermediate_size"]
    assert SHARED in {tensor.name for tensor in FAMILY.expected_tensors(geometry)}


def test_a_null_n_shared_experts_builds_no_shared_expert() -> None:
    geometry = FAMILY.read_geometry({**family_config("deepseek_v4"), "n_shared_experts": None})

    assert not [tensor.name for tensor in FAMILY.expected_tensors(geometry) if ".shared_experts." in tensor.name]


def test_the_card_tells_the_user_to_set_the_drafts_moe_backend() -> None:
    """The draft inherits the target's moe_backend (llm_base_proposer.py:1269-1280); mega MoE's experts are MXFP4 only."""
    assert any("speculative_config.moe_backend" in note and "deep_gemm_mega_moe" in note for note in FAMILY.card_notes)
