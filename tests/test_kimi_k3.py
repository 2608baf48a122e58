"""Kimi K3 facts that reach the user rather than the draft's tensors (vLLM 0.33.0 `vllm/models/kimi_k3/`)."""

from __future__ import annotations

from pipeline.families import FAMILIES
from pipeline.rehearsal.synthetic_families import FamilySpec, family_config

FAMILY = FAMILIES["kimi_k3"]


def test_the_card_tells_the_user_to_set_the_drafts_moe_backend() -> None:
    """Under deep_gemm_mega_moe, inherited from the target (llm_base_proposer.py:1269-1280), the expert
    mapping knows only `.weight_packed` / `.weight_scale` (nvidia/mtp.py:287-295), so BF16 experts are skipped."""
    assert any("speculative_config.moe_backend" in note and "deep_gemm_mega_moe" in note for note in FAMILY.card_notes)


def test_the_card_names_every_mtp_layer_vllm_reads() -> None:
    """vLLM builds one layer per num_nextn_predict_layers from num_hidden_layers on (nvidia/mtp.py:160-172)."""
    assert any("model.layers.{num_hidden_layers + i}" in note for note in FAMILY.card_notes)
    geometry = FAMILY.read_geometry(family_config("kimi_k3", FamilySpec(num_mtp_layers=2)))
    assert {tensor.name.split(".")[2] for tensor in FAMILY.expected_tensors(geometry)} == {"4", "5"}
