"""The tiny geometry every synthetic family shares, and the config fields several families' builders share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FamilySpec:
    """Tiny geometry shared by every family; each config builder adds its family's own widths.

    For `step3p7` only hidden_size, vocab_size, shards, seed and license apply: the Step generator
    keeps its 45 backbone and 3 MTP layers so indices match the release.
    """

    hidden_size: int = 64
    vocab_size: int = 256
    num_hidden_layers: int = 4
    num_mtp_layers: int = 1
    experts: int = 4
    shards: int = 4
    seed: int = 0
    license: str = "apache-2.0"
    # False: a GLM-4.6-shaped source, whose MTP layer has no embed_tokens / shared_head.head of its own.
    per_layer_heads: bool = True
    # Nemotron-H only: the latent size its MoE experts work in (None: the hidden size).
    moe_latent_size: int | None = None


def text_fields(spec: FamilySpec) -> dict[str, Any]:
    """The top-level fields every family reads: widths, layer count, norm epsilon, token ids, dtype."""
    return {
        "hidden_size": spec.hidden_size,
        "vocab_size": spec.vocab_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "rms_norm_eps": 1e-06,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
    }


def mla_moe_fields(spec: FamilySpec) -> dict[str, Any]:
    """DeepSeek's nextn MoE layer with multi-head latent attention: the widths both it and GLM-4.7-Flash read."""
    return {
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": 4,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
    }
