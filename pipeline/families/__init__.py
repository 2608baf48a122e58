"""The family registry: one explicit, ordered table, never filled by import side effects."""

from __future__ import annotations

from pipeline.families.base import ExpectedTensor, Family, Geometry
from pipeline.families.deepseek_v3 import DEEPSEEK_V3
from pipeline.families.deepseek_v4 import DEEPSEEK_V4
from pipeline.families.deepseek_v32 import DEEPSEEK_V32
from pipeline.families.glm4_moe import GLM4_MOE
from pipeline.families.glm4_moe_lite import GLM4_MOE_LITE
from pipeline.families.glm5_next import GLM5_NEXT
from pipeline.families.kimi_k3 import KIMI_K3
from pipeline.families.longcat_flash import LONGCAT_FLASH
from pipeline.families.mimo import MIMO
from pipeline.families.mimo_v2 import MIMO_V2
from pipeline.families.minimax_m3 import MINIMAX_M3
from pipeline.families.nemotron_h import NEMOTRON_H
from pipeline.families.qwen3_5 import QWEN3_5, QWEN3_5_MOE
from pipeline.families.qwen3_next import QWEN3_NEXT
from pipeline.families.qwen4_exp import QWEN4_EXP
from pipeline.families.step3p7 import STEP3P7
from pipeline.families.step5 import STEP5

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        STEP3P7,
        DEEPSEEK_V3,
        GLM4_MOE,
        QWEN3_NEXT,
        MIMO,
        GLM4_MOE_LITE,
        QWEN3_5,
        QWEN3_5_MOE,
        DEEPSEEK_V32,
        GLM5_NEXT,
        KIMI_K3,
        MINIMAX_M3,
        NEMOTRON_H,
        DEEPSEEK_V4,
        MIMO_V2,
        QWEN4_EXP,
        STEP5,
        LONGCAT_FLASH,
    )
}

__all__ = ["FAMILIES", "ExpectedTensor", "Family", "Geometry"]
