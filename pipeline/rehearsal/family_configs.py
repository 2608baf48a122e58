"""Tiny config.json builders, one per non-Step family: the fields vLLM 0.33.0 reads, at toy widths.

Each builder takes the shared `FamilySpec` (`family_spec.py`) and adds its family's own keys; they live by
the MTP layer's attention kind in `latent_attention_configs.py` and `grouped_attention_configs.py`.
`pipeline.rehearsal.synthetic_families` writes checkpoints around them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.families import FAMILIES
from pipeline.rehearsal.family_spec import FamilySpec
from pipeline.rehearsal.grouped_attention_configs import GROUPED_ATTENTION_CONFIGS
from pipeline.rehearsal.latent_attention_configs import LATENT_ATTENTION_CONFIGS

_BUILDERS = {**LATENT_ATTENTION_CONFIGS, **GROUPED_ATTENTION_CONFIGS}
# Every family but step3p7 (whose generator is `synthetic.py`), in the registry's order.
CONFIGS: dict[str, Callable[[FamilySpec], dict[str, Any]]] = {name: _BUILDERS[name] for name in FAMILIES if name in _BUILDERS}

__all__ = ["CONFIGS", "FamilySpec"]
