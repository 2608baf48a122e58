"""The family registry: one explicit, ordered table, never filled by import side effects."""

from __future__ import annotations

from pipeline.families.base import ExpectedTensor, Family, Geometry
from pipeline.families.step3p7 import STEP3P7

FAMILIES: dict[str, Family] = {family.name: family for family in (STEP3P7,)}

__all__ = ["FAMILIES", "ExpectedTensor", "Family", "Geometry"]
