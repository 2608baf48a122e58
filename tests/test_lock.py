"""The committed lock: written by a build, reproduced by a --locked build, and any difference named."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.conftest import RecipeMaker, run_cli
from tests.safetensors_reader import header_of


def test_build_writes_a_lock_that_a_locked_rebuild_reproduces(tmp_path: Path, make_recipe: RecipeMaker) -> None:
    recipe = make_recipe()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "one")).code == 0
    lock = json.loads((recipe.parent / "draft.lock.json").read_text())
    assert lock["schema"] == "mtp-draft-lock/v1"
    assert len(lock["tensors"]) == 52 and all(len(t["sha256"]) == 64 for t in lock["tensors"])
    assert lock["verify"]["passed"] is True
    assert set(lock["files"]) >= {"config.json", "model.safetensors.index.json", "LICENSE"}
    assert (recipe.parent / "config.json").read_bytes() == (tmp_path / "one" / "draft" / "config.json").read_bytes()

    again = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "two"), "--locked", "--json")

    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["lock"]["state"] == "reproduced"


def test_locked_build_refuses_a_changed_source_naming_the_tensor(tmp_path: Path, make_recipe: RecipeMaker) -> None:
    recipe = make_recipe()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "one")).code == 0
    source = tmp_path / "source"
    name = "model.layers.47.hnorm.weight"
    index = json.loads((source / "model.safetensors.index.json").read_text())
    shard = source / index["weight_map"][name]
    header, start = header_of(shard)
    data = bytearray(shard.read_bytes())
    data[start + header[name]["data_offsets"][0]] ^= 0x01
    shard.write_bytes(bytes(data))

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "two"), "--locked")

    assert result.code == 1
    assert f"tensors[{name}].sha256" in result.stderr


def test_locked_build_without_a_lock_is_refused(tmp_path: Path, make_recipe: RecipeMaker) -> None:
    result = run_cli("build", "--recipe", str(make_recipe()), "--workdir", str(tmp_path / "w"), "--locked")
    assert result.code == 1
    assert "draft.lock.json: missing" in result.stderr


def test_the_real_drafts_pending_lock_is_what_the_family_and_published_geometry_give() -> None:
    from pipeline.families import FAMILIES
    from pipeline.recipe.loader import load_recipe
    from pipeline.recipe.lock import pending_lock
    from pipeline.rehearsal.synthetic import SyntheticSpec, step_config

    folder = Path(__file__).resolve().parent.parent / "artifacts" / "step-3.7-flash-mtp-draft"
    recipe = load_recipe(folder / "draft.yaml")
    family = FAMILIES["step3p7"]
    committed = json.loads((folder / "draft.lock.json").read_text())

    expected = pending_lock(recipe, family, family.read_geometry(step_config(SyntheticSpec.real_shapes())))

    assert {k: v for k, v in committed.items() if k != "tool_version"} == {k: v for k, v in expected.items() if k != "tool_version"}
    assert sum(2 * math.prod(t["shape"]) for t in committed["tensors"]) == 5_912_258_048  # about 5.9 GB of BF16
