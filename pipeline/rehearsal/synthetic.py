"""Synthetic Step-3.7-shaped checkpoints: a BF16 source with MTP layers and an NVFP4-like target.

Used by the tests, the offline demo and the performance benchmark. Tiny geometry keeps tests fast;
`real_shapes` gives the released tensor sizes for measuring. Tensor bytes are seeded random BF16,
generated and written chunk by chunk, so a 6 GB source needs no more memory than a tiny one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.checkpoint.files import atomic_output, dump_json
from pipeline.checkpoint.safetensors_format import DTYPE_BYTES, PlannedTensor, write_shard
from pipeline.families.step3p7 import FULL, LAYER_TENSORS, SLIDING, read_geometry

GENERATE_CHUNK_ELEMENTS = 1 << 21
LICENSE_TEXT = "Synthetic test weights, made by the pipeline's generator.\nLicensed under the Apache License, Version 2.0.\n"
TOKENIZER_FILES = {"tokenizer.json": '{"model": {"type": "synthetic"}}\n', "tokenizer_config.json": '{"bos_token": "<s>"}\n'}
AUTO_MAP_FILES = {
    "configuration_step3p7.py": "# Configuration class of the synthetic Step-3.7 model.\n",
    "modeling_step3p7.py": "# Modeling code of the synthetic Step-3.7 model.\n",
}


@dataclass(frozen=True)
class SyntheticSpec:
    """Geometry and layout of a synthetic checkpoint."""

    hidden_size: int = 64
    vocab_size: int = 256
    num_hidden_layers: int = 45
    num_mtp_layers: int = 3
    full_heads: int = 4
    sliding_heads: int = 6
    kv_groups: int = 2
    head_dim: int = 16
    intermediate_size: int = 96
    shards: int = 4
    seed: int = 0
    namespace: str = "model.layers.{layer}."
    embed_name: str = "model.embed_tokens.weight"
    license: str = "apache-2.0"

    @classmethod
    def real_shapes(cls, **changes: object) -> SyntheticSpec:
        """The released Step-3.7 Flash text geometry (facts §3)."""
        real = cls(hidden_size=4096, vocab_size=128896, full_heads=64, sliding_heads=96, kv_groups=8, head_dim=128, intermediate_size=11264)
        return replace(real, **changes)  # type: ignore[arg-type]


def step_config(spec: SyntheticSpec, *, arrays: int | None = None, quantized: bool = False) -> dict:
    """A Step-3.7 nested VLM config; `arrays` truncates the per-layer arrays (45 in NVFP4 exports)."""
    total = spec.num_hidden_layers + spec.num_mtp_layers
    length = total if arrays is None else arrays

    def per_layer(backbone_value: object, full_value: object, mtp_value: object) -> list:
        values = [full_value if i % 4 == 0 else backbone_value for i in range(spec.num_hidden_layers)]
        values += [mtp_value] * spec.num_mtp_layers
        return values[:length]

    swiglu = [7.0 if i in (spec.num_hidden_layers - 2, spec.num_hidden_layers - 1) else 0.0 for i in range(total)]
    swiglu_shared = [16.0 if v else 0.0 for v in swiglu]
    text_config = {
        "model_type": "step3p5",
        "architectures": ["Step3p5ForCausalLM"],
        "hidden_size": spec.hidden_size,
        "vocab_size": spec.vocab_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_nextn_predict_layers": spec.num_mtp_layers,
        "num_attention_heads": spec.full_heads,
        "num_attention_groups": spec.kv_groups,
        "head_dim": spec.head_dim,
        "attention_other_setting": {
            "attention_type": SLIDING,
            "num_attention_heads": spec.sliding_heads,
            "num_attention_groups": spec.kv_groups,
            "head_dim": spec.head_dim,
        },
        "att_impl_type": "GQA",
        "intermediate_size": spec.intermediate_size,
        "moe_num_experts": 4,
        "moe_top_k": 2,
        "moe_intermediate_size": spec.intermediate_size // 2,
        "moe_layers_enum": ",".join(str(i) for i in range(3, spec.num_hidden_layers)),
        "layer_types": per_layer(SLIDING, FULL, SLIDING),
        "rope_theta": per_layer(10000.0, 5000000.0, 10000.0),
        "partial_rotary_factors": per_layer(1.0, 0.5, 1.0),
        "swiglu_limits": swiglu[:length],
        "swiglu_limits_shared": swiglu_shared[:length],
        "use_rope_layers": [],
        "sliding_window": 512,
        "use_qk_norm": True,
        "use_head_wise_attn_gate": True,
        "zero_centered": True,
        "rms_norm_eps": 1e-05,
        "max_position_embeddings": 262144,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": [1, 2, 128007],
    }
    config: dict = {
        "architectures": ["Step3p7ForConditionalGeneration"],
        "model_type": "step3p7",
        "auto_map": {
            "AutoConfig": "configuration_step3p7.Step3p7Config",
            "AutoModelForCausalLM": "modeling_step3p7.Step3p7ForConditionalGeneration",
        },
        "image_token_id": 128001,
        "text_config": text_config,
        "vision_config": {"width": 32, "layers": 2},
        "torch_dtype": "bfloat16",
    }
    if quantized:
        config["quantization_config"] = {
            "quant_method": "modelopt",
            "quant_algo": "NVFP4",
            "group_size": 16,
            "kv_cache_quant_algo": "FP8",
            "ignore": ["model.vision_model*", "model.vit_large_projector", "lm_head"],
        }
    return config


@dataclass(frozen=True)
class SyntheticTensor:
    """One tensor to generate: seeded random bytes of its dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    seed: int


def _mtp_tensors(spec: SyntheticSpec, seed_base: int) -> list[SyntheticTensor]:
    geometry = read_geometry(step_config(spec))
    from pipeline.families.step3p7 import STEP3P7

    tensors = []
    for layer in geometry.mtp_layers:
        attention = STEP3P7.attention_for(geometry, layer)
        prefix = spec.namespace.format(layer=layer)
        for index, tensor in enumerate(LAYER_TENSORS):
            tensors.append(
                SyntheticTensor(prefix + tensor.suffix, "BF16", tensor.shape(geometry, attention), seed_base + layer * 100 + index)
            )
    return tensors


def _backbone_tensors(spec: SyntheticSpec, *, quantized: bool, prefix: str) -> list[SyntheticTensor]:
    h, q = spec.hidden_size, spec.full_heads * spec.head_dim
    tensors = [
        SyntheticTensor(spec.embed_name, "BF16", (spec.vocab_size, h), 1),
        SyntheticTensor("model.norm.weight" if not quantized else "model.language_model.norm.weight", "BF16", (h,), 2),
        SyntheticTensor("lm_head.weight", "BF16", (spec.vocab_size, h), 3),
        SyntheticTensor("model.vision_model.patch_embed.weight", "BF16", (32, 48), 4),
    ]
    for layer in range(spec.num_hidden_layers):
        base = prefix.format(layer=layer)
        seed = 1000 + layer * 10
        tensors.append(SyntheticTensor(base + "input_layernorm.weight", "BF16", (h,), seed))
        tensors.append(SyntheticTensor(base + "post_attention_layernorm.weight", "BF16", (h,), seed + 1))
        if quantized:
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight", "U8", (h, q // 2), seed + 2))
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight_scale", "F8_E4M3", (h, q // 16), seed + 3))
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight_scale_2", "F32", (), seed + 4))
        else:
            tensors.append(SyntheticTensor(base + "self_attn.o_proj.weight", "BF16", (h, q), seed + 2))
    return tensors


def _chunks(tensor: SyntheticTensor, base_seed: int) -> Iterator[bytes]:
    """Seeded random bytes; BF16 values are small finite numbers so no NaN/Inf appears by chance."""
    count = int(np.prod(tensor.shape)) if tensor.shape else 1
    rng = np.random.default_rng([base_seed, tensor.seed])
    done = 0
    while done < count:
        n = min(GENERATE_CHUNK_ELEMENTS, count - done)
        if tensor.dtype == "BF16":
            values = (rng.standard_normal(n, dtype=np.float32) * 0.02).view(np.uint32)
            yield (values >> 16).astype("<u2").tobytes()
        elif tensor.dtype == "F32":
            yield rng.random(n, dtype=np.float32).astype("<f4").tobytes()
        else:
            yield rng.integers(0, 0x70, n, dtype=np.uint8).tobytes()
        done += n


def _planned(tensor: SyntheticTensor, base_seed: int) -> PlannedTensor:
    count = int(np.prod(tensor.shape)) if tensor.shape else 1
    return PlannedTensor(tensor.name, tensor.dtype, tensor.shape, count * DTYPE_BYTES[tensor.dtype], lambda: _chunks(tensor, base_seed))


def write_shards(folder: Path, groups: list[list[SyntheticTensor]], seed: int, names: list[str]) -> dict[str, str]:
    """Write one shard per group under `names` and the index over all of them; returns the weight map."""
    weight_map: dict[str, str] = {}
    total = 0
    for name, group in zip(names, groups, strict=False):
        with atomic_output(folder / name) as handle:
            _, _, _ = write_shard(handle, [_planned(t, seed) for t in group])
        for tensor in group:
            weight_map[tensor.name] = name
            total += int(np.prod(tensor.shape) if tensor.shape else 1) * DTYPE_BYTES[tensor.dtype]
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_bytes(dump_json(index))
    return weight_map


def scatter(tensors: list[SyntheticTensor], shards: int, seed: int) -> list[list[SyntheticTensor]]:
    """Spread tensors over shards in a seeded order, so MTP tensors interleave with the backbone."""
    order = list(tensors)
    random.Random(seed).shuffle(order)
    return [order[i::shards] for i in range(shards)]


def shard_names(count: int) -> list[str]:
    """The Hub's usual shard names, `model-0000i-of-0000n.safetensors`."""
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _write_common(folder: Path, spec: SyntheticSpec, config: dict, base_model: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(dump_json(config))
    (folder / "LICENSE").write_text(LICENSE_TEXT)
    front = f"license: {spec.license}\nlibrary_name: transformers\n" + (f"base_model: {base_model}\n" if base_model else "")
    (folder / "README.md").write_text(f"---\n{front}---\n\n# Synthetic Step-3.7 model\n\nGenerated for tests.\n")
    for name, text in {**TOKENIZER_FILES, **AUTO_MAP_FILES}.items():
        (folder / name).write_text(text)


def write_source(folder: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """A BF16 Step-3.7-shaped source: 45 backbone layers, 3 MTP layers, 48-entry arrays, several shards."""
    _write_common(folder, spec, step_config(spec), None)
    tensors = _backbone_tensors(spec, quantized=False, prefix=spec.namespace) + _mtp_tensors(spec, 50_000)
    write_shards(folder, scatter(tensors, spec.shards, spec.seed), spec.seed, shard_names(spec.shards))
    return folder


TARGET_VARIANTS = ("no-mtp", "mtp-shard", "incomplete-mtp", "other-vocab", "other-hidden")


def write_target(
    folder: Path, spec: SyntheticSpec = SyntheticSpec(), variant: str = "no-mtp", source_repo: str = "stepfun-ai/Step-3.7-Flash"
) -> Path:
    """An NVFP4-like target; `variant` chooses which inspect verdict it should get."""
    if variant not in TARGET_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(TARGET_VARIANTS)}")
    if variant == "other-vocab":
        spec = replace(spec, vocab_size=spec.vocab_size * 2)
    if variant == "other-hidden":
        spec = replace(spec, hidden_size=spec.hidden_size * 2, intermediate_size=spec.intermediate_size * 2)
    with_mtp = variant in ("mtp-shard", "incomplete-mtp")
    config = step_config(spec, arrays=None if with_mtp else spec.num_hidden_layers, quantized=True)
    _write_common(folder, spec, config, source_repo)
    (folder / "hf_quant_config.json").write_bytes(
        dump_json(
            {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16}}
        )
    )
    backbone = _backbone_tensors(
        replace(spec, embed_name="model.language_model.embed_tokens.weight"), quantized=True, prefix="model.language_model.layers.{layer}."
    )
    shards = max(2, spec.shards - 1)
    names = shard_names(shards)
    groups = [backbone[i::shards] for i in range(shards)]
    if with_mtp:
        mtp = _mtp_tensors(replace(spec, namespace="model.layers.{layer}."), 50_000)
        if variant == "incomplete-mtp":
            mtp = [t for t in mtp if not t.name.endswith("shared_head.output.weight")]
        groups.append(mtp)
        names.append("model-mtp-bf16.safetensors")
    write_shards(folder, groups, spec.seed + 7, names)
    return folder
