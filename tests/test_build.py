"""The build stages end to end on local folders: exact tensors, exact bytes, a passing verify."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from tests.conftest import RecipeMaker, run_cli
from tests.safetensors_reader import folder_tensor_hashes

MTP_SUFFIXES = 17


def _untuned_source(root: Path) -> tuple[Path, Path]:
    """A layout nobody tuned for: five shards, another seed, ModelOpt-style nested namespace."""
    spec = SyntheticSpec(
        shards=5, seed=11, namespace="model.language_model.layers.{layer}.", embed_name="model.language_model.embed_tokens.weight"
    )
    return write_source(root / "untuned-source", spec), write_target(root / "untuned-target", SyntheticSpec())


def test_build_copies_exactly_the_52_tensors_verbatim(tmp_path: Path, make_recipe: RecipeMaker, workdir: Path) -> None:
    source, target = _untuned_source(tmp_path)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8"}
    (source / "config.json").write_text(json.dumps(config))
    recipe = make_recipe("max_shard_size: 200KB\n", source=source, target=target)

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 0, result.stderr
    draft = workdir / "draft"
    produced = folder_tensor_hashes(draft)
    assert len(produced) == 3 * MTP_SUFFIXES + 1
    source_hashes = folder_tensor_hashes(source)
    for name, sha in produced.items():
        source_name = name.replace("model.", "model.language_model.", 1)
        assert source_hashes[source_name] == sha, name
    assert {n for n in produced if not n.startswith("model.layers.")} == {"model.embed_tokens.weight"}
    assert {int(n.split(".")[2]) for n in produced if n.startswith("model.layers.")} == {45, 46, 47}

    shards = sorted(draft.glob("model-*.safetensors"))
    assert len(shards) > 1
    seen = set()
    for shard in shards:
        with safe_open(str(shard), framework="numpy") as handle:
            seen.update(handle.keys())
    assert seen == set(produced)
    index = json.loads((draft / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == seen

    draft_config = json.loads((draft / "config.json").read_text())
    assert "quantization_config" not in draft_config
    for key in ("layer_types", "partial_rotary_factors", "swiglu_limits", "swiglu_limits_shared", "rope_theta"):
        assert len(draft_config["text_config"][key]) == 48, key
    del config["quantization_config"]
    assert draft_config == config

    report = json.loads((workdir / "verify.json").read_text())
    assert report["passed"] is True
    assert all(check["passed"] for check in report["checks"])
    assert {"tensors.source-bytes", "loader.names", "target.geometry", "files.auto-map"} <= {c["id"] for c in report["checks"]}


def test_two_builds_are_byte_identical(tmp_path: Path, make_recipe: RecipeMaker) -> None:
    recipe = make_recipe()
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(first)).code == 0
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(second)).code == 0
    names = sorted(p.name for p in (first / "draft").iterdir())
    assert names == sorted(p.name for p in (second / "draft").iterdir())
    for name in names:
        assert (first / "draft" / name).read_bytes() == (second / "draft" / name).read_bytes(), name


def test_rerun_skips_unchanged_stages_and_status_says_so(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    again = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir), "--json")
    assert again.code == 0
    assert [stage["skipped"] for stage in json.loads(again.stdout)["stages"]] == [True, True, True, True]
    status = run_cli("status", "--recipe", str(recipe), "--workdir", str(workdir), "--json")
    assert {row["stage"]: row["current"] for row in json.loads(status.stdout)["stages"]} == {
        "fetch": True,
        "extract": True,
        "config-fix": True,
        "verify": True,
        "bench-import": False,
        "card": False,
    }

    (workdir / "draft" / "config.json").write_text("{}")
    status = run_cli("status", "--recipe", str(recipe), "--workdir", str(workdir), "--json")
    rows = {row["stage"]: row for row in json.loads(status.stdout)["stages"]}
    assert not rows["config-fix"]["current"] and not rows["verify"]["current"]
    assert rows["fetch"]["current"] and rows["extract"]["current"]


def test_fetch_reads_only_the_needed_bytes(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe()
    assert run_cli("fetch", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    manifest = json.loads((workdir / "fetch" / "fetch.json").read_text())
    source_size = sum(p.stat().st_size for p in (recipe.parent.parent / "source").glob("*.safetensors"))
    headers = manifest["bytes_fetched"] - manifest["bytes_needed"]
    assert manifest["bytes_needed"] == sum(t["nbytes"] for t in manifest["tensors"])
    assert 0 < headers < 0.1 * source_size
    assert manifest["bytes_fetched"] < source_size
