"""Review files (lock, reviewed config, card) go beside a recipe only in a folder that is its draft's own."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.conftest import run_cli

RECIPE = "family: step3p7\nsource: {{path: {source}}}\ntarget: {{path: {target}}}\nlicense: apache-2.0\n"


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_recipe_inside_a_model_folder_leaves_every_file_of_it_untouched(tmp_path: Path, synthetic_root: Path) -> None:
    source = shutil.copytree(synthetic_root / "source", tmp_path / "source")
    shutil.copytree(synthetic_root / "target", tmp_path / "target")
    assert (source / "config.json").is_file() and (source / "README.md").is_file()
    recipe = source / "mtp-draft.yaml"
    recipe.write_text(RECIPE.format(source=".", target="../target") + "card: {credit: mtp-draft-pipeline (synthetic weights)}\n")
    before = _snapshot(source)
    workdir = tmp_path / "work"

    built = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))
    assert built.code == 0, built.stderr
    carded = run_cli("card", "--recipe", str(recipe), "--workdir", str(workdir))
    assert carded.code == 0, carded.stderr

    assert _snapshot(source) == before
    review = workdir / "review"
    assert json.loads((review / "draft.lock.json").read_text())["draft"] == "mtp-draft"
    assert (review / "config.json").read_bytes() == (workdir / "draft" / "config.json").read_bytes()
    assert (review / "README.md").read_text().startswith("---\n")


def test_two_recipes_in_one_folder_never_share_a_lock(tmp_path: Path, synthetic_root: Path) -> None:
    shutil.copytree(synthetic_root / "source", tmp_path / "source")
    shutil.copytree(synthetic_root / "target", tmp_path / "target")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name, shard_size in (("first", "1MB"), ("second", "200KB")):
        (recipes / f"{name}.yaml").write_text(RECIPE.format(source="../source", target="../target") + f"max_shard_size: {shard_size}\n")

    for name in ("first", "second"):
        result = run_cli("build", "--recipe", str(recipes / f"{name}.yaml"), "--workdir", str(tmp_path / f"work-{name}"))
        assert result.code == 0, result.stderr

    assert sorted(p.name for p in recipes.iterdir()) == ["first.yaml", "second.yaml"]
    locks = {name: json.loads((tmp_path / f"work-{name}" / "review" / "draft.lock.json").read_text()) for name in ("first", "second")}
    assert locks["first"]["draft"] == "first" and locks["second"]["draft"] == "second"
    assert locks["first"] != locks["second"]


def test_a_drafts_own_folder_receives_its_review_files(tmp_path: Path, synthetic_root: Path) -> None:
    shutil.copytree(synthetic_root / "source", tmp_path / "source")
    shutil.copytree(synthetic_root / "target", tmp_path / "target")
    recipe = tmp_path / "artifacts" / "my-draft" / "draft.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(RECIPE.format(source="../../source", target="../../target"))

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "work"))

    assert result.code == 0, result.stderr
    assert sorted(p.name for p in recipe.parent.iterdir()) == ["config.json", "draft.lock.json", "draft.yaml"]
    assert not (tmp_path / "work" / "review").exists()
