"""Verify refuses (exit 1) and names the check and the tensor for every way a draft can be wrong."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.rehearsal.synthetic import SyntheticSpec, write_target
from tests.conftest import RecipeMaker, run_cli
from tests.safetensors_reader import drop_tensor, header_of, rename_tensor, rewrite_header

MTP_TENSOR = "model.layers.46.mlp.down_proj.weight"


def _shard_holding(draft: Path, name: str) -> Path:
    index = json.loads((draft / "model.safetensors.index.json").read_text())
    return draft / index["weight_map"][name]


def _flip_byte(draft: Path) -> None:
    shard = _shard_holding(draft, MTP_TENSOR)
    header, start = header_of(shard)
    data = bytearray(shard.read_bytes())
    data[start + header[MTP_TENSOR]["data_offsets"][0] + 3] ^= 0x01
    shard.write_bytes(bytes(data))


def _drop_tensor(draft: Path) -> None:
    drop_tensor(_shard_holding(draft, MTP_TENSOR), MTP_TENSOR)
    index_path = draft / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"][MTP_TENSOR]
    index_path.write_text(json.dumps(index))


def _add_tensor(draft: Path) -> None:
    shard = _shard_holding(draft, MTP_TENSOR)
    header, start = header_of(shard)
    end = shard.stat().st_size - start
    header["model.layers.46.mlp.extra.weight"] = {"dtype": "BF16", "shape": [4], "data_offsets": [end, end + 8]}
    with open(shard, "ab") as handle:
        handle.write(bytes(8))
    rewrite_header(shard, header)


def _rename(draft: Path, new: str) -> None:
    rename_tensor(draft, MTP_TENSOR, new)


LANGUAGE_MODEL_NAME = "model.language_model.layers.46.mlp.down_proj.weight"
BARE_NAME = "layers.46.mlp.down_proj.weight"


def _truncate_array(draft: Path) -> None:
    path = draft / "config.json"
    config = json.loads(path.read_text())
    config["text_config"]["swiglu_limits_shared"] = config["text_config"]["swiglu_limits_shared"][:45]
    path.write_text(json.dumps(config))


def _remove_auto_map_file(draft: Path) -> None:
    (draft / "configuration_step3p7.py").unlink()


def _add_quantization(draft: Path) -> None:
    path = draft / "config.json"
    config = json.loads(path.read_text())
    config["quantization_config"] = {"quant_method": "modelopt"}
    path.write_text(json.dumps(config))


DRAFT_DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "changed byte": (_flip_byte, "tensors.source-bytes", MTP_TENSOR),
    "missing tensor": (_drop_tensor, "tensors.expected-set", MTP_TENSOR),
    "extra tensor": (_add_tensor, "tensors.expected-set", "model.layers.46.mlp.extra.weight"),
    "model.language_model. prefix": (lambda draft: _rename(draft, LANGUAGE_MODEL_NAME), "tensors.expected-set", LANGUAGE_MODEL_NAME),
    "bare layers. prefix": (lambda draft: _rename(draft, BARE_NAME), "tensors.expected-set", BARE_NAME),
    "array of 45": (_truncate_array, "config.arrays", "swiglu_limits_shared has 45 entries"),
    "missing auto_map file": (_remove_auto_map_file, "files.auto-map", "configuration_step3p7.py"),
    "quantization_config": (_add_quantization, "config.no-quantization", "quantization_config"),
}


@pytest.mark.parametrize("damage", sorted(DRAFT_DAMAGE))
def test_verify_refuses_a_damaged_draft(damage: str, make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    mutate, check_id, named = DRAFT_DAMAGE[damage]
    mutate(workdir / "draft")

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert check_id in error and named in error
    report = json.loads((workdir / "verify.json").read_text())
    assert report["passed"] is False
    assert not next(c for c in report["checks"] if c["id"] == check_id)["passed"]


def test_verify_refuses_nan_in_an_mtp_tensor(tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path) -> None:
    source = tmp_path / "nan-source"
    shutil.copytree(synthetic_root / "source", source)
    name = "model.layers.45.self_attn.q_proj.weight"
    index = json.loads((source / "model.safetensors.index.json").read_text())
    shard = source / index["weight_map"][name]
    header, start = header_of(shard)
    data = bytearray(shard.read_bytes())
    at = start + header[name]["data_offsets"][0] + 10
    data[at : at + 2] = (0x7FC0).to_bytes(2, "little")  # a BF16 NaN
    shard.write_bytes(bytes(data))

    result = run_cli("build", "--recipe", str(make_recipe(source=source)), "--workdir", str(workdir))

    assert result.code == 1
    assert "tensors.finite" in result.stderr and name in result.stderr


@pytest.mark.parametrize(("variant", "field"), [("other-vocab", "vocab_size"), ("other-hidden", "hidden_size")])
def test_verify_refuses_a_target_with_other_geometry(
    variant: str, field: str, tmp_path: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    target = write_target(tmp_path / f"target-{variant}", SyntheticSpec(), variant)

    result = run_cli("build", "--recipe", str(make_recipe(target=target)), "--workdir", str(workdir))

    assert result.code == 1
    assert "target.geometry" in result.stderr and field in result.stderr


@pytest.mark.parametrize(
    ("name", "mapped"),
    [
        (LANGUAGE_MODEL_NAME, "model.language_model.layers.46.mtp_block.mlp.down_proj.weight"),
        (BARE_NAME, "layers.46.mlp.down_proj.weight"),
        ("model.layers.46.mlp.extra.weight", "model.layers.46.mtp_block.mlp.extra.weight"),
    ],
)
def test_the_loader_replay_names_the_key_error_vllm_would_raise(name: str, mapped: str, make_recipe: RecipeMaker, workdir: Path) -> None:
    """vLLM 0.33.0's Step3p5MTP matches these names as MTP layer 46 but never renames them onto a
    parameter it declares (step3p5_mtp.py:296, :323-345), so loading raises KeyError."""
    recipe = make_recipe()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    if name == "model.layers.46.mlp.extra.weight":
        _add_tensor(workdir / "draft")
    else:
        _rename(workdir / "draft", name)

    assert run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir)).code == 1

    report = json.loads((workdir / "verify.json").read_text())
    loader = next(c for c in report["checks"] if c["id"] == "loader.names")
    assert not loader["passed"]
    assert loader["evidence"] == f"{name} maps to {mapped}, which vLLM 0.33.0 Step3p5MTP does not declare (KeyError while loading)"
