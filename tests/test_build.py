"""The build stages end to end on local folders: exact tensors, exact bytes, a passing verify."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from pipeline.checkpoint import disk
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


def _preflight(recipe: Path, workdir: Path) -> dict:
    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir), "--preflight", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_preflight_counts_the_shards_and_small_files_the_build_writes(tmp_path: Path, make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe("max_shard_size: 100KB\n")

    before = _preflight(recipe, workdir)

    assert not workdir.exists()  # a preflight writes nothing
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    shard_bytes = sum(p.stat().st_size for p in (workdir / "draft").glob("model-*.safetensors"))
    small = sum(p.stat().st_size for folder in ("source", "target") for p in (workdir / "fetch" / folder).iterdir())
    assert before["needed_bytes"] == shard_bytes + 2 * small
    assert before["folder"] == str(workdir) and before["free_bytes"] > 0
    assert _preflight(recipe, workdir)["needed_bytes"] == 2 * small  # the shards are on disk already


def _report_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """The filesystem reports `free` bytes available, whatever it really has."""
    real = shutil.disk_usage

    def reported(path: str | os.PathLike[str]) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.total - free, free)

    monkeypatch.setattr(disk.shutil, "disk_usage", reported)


def test_build_refuses_up_front_when_the_workdir_filesystem_is_too_small(
    make_recipe: RecipeMaker, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = make_recipe("max_shard_size: 100KB\n")
    needed = _preflight(recipe, tmp_path / "probe")["needed_bytes"]
    _report_free(monkeypatch, needed - 1)

    for argv in (["build"], ["build", "--preflight"], ["fetch"]):
        result = run_cli(*argv, "--recipe", str(recipe), "--workdir", str(workdir))

        assert result.code == 1, argv
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert error == [
            f"error: {workdir}: {needed - 1} bytes ({(needed - 1) / 1e9:.3g} GB) free, the build needs {needed} bytes ({needed / 1e9:.3g} GB)"
        ]
        assert "hint:" in result.stderr and "Traceback" not in result.stderr
        assert not (workdir / "fetch" / "shards").exists() and not (workdir / "draft").exists()

    _report_free(monkeypatch, needed)
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0


# sha256 of each shard of the default synthetic Step-3.7 source's draft at max_shard_size 100KB, as
# built by commit 4bd0a4c, when fetch still wrote one blob per tensor and extract copied them into
# the shards. Landing the bytes in place must not change one byte of the output.
SHARDS_BEFORE_IN_PLACE_FETCH = {
    "model-00001-of-00005.safetensors": "6e4ee5f66c5ada976bfc421a1291c2caceab83b90d63a3f6bbc4a07d1912e2e4",
    "model-00002-of-00005.safetensors": "02123c8ea8f7398f496eaac4a39aaa94d8ca2f7891925296f5671aeb7efea518",
    "model-00003-of-00005.safetensors": "c7e56b2c64f704800ae3532bf88d87e62c6c9b1daa55fc13bd009a53f2624850",
    "model-00004-of-00005.safetensors": "8f8a210034fcbb364e0c6061dbeebca6ed9cd95857907a79032c2e0a0b9e2cf7",
    "model-00005-of-00005.safetensors": "fe7da80277556bafda69d0f942def246bc56432690ee4434b835268cf8c8bc2b",
}


def test_shards_are_byte_identical_to_the_builds_before_in_place_fetch(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe("max_shard_size: 100KB\n")

    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0

    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (workdir / "draft").glob("model-*.safetensors")}
    assert shards == SHARDS_BEFORE_IN_PLACE_FETCH


def test_whole_shard_mode_from_a_local_folder_gives_the_same_draft(make_recipe: RecipeMaker, tmp_path: Path) -> None:
    ranges = make_recipe("max_shard_size: 100KB\n")
    assert run_cli("build", "--recipe", str(ranges), "--workdir", str(tmp_path / "ranges")).code == 0
    shards = ranges.parent / "shards.yaml"
    shards.write_text(ranges.read_text() + "fetch: {mode: shards}\n")

    assert run_cli("build", "--recipe", str(shards), "--workdir", str(tmp_path / "shards")).code == 0

    def files(workdir: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (workdir / "draft").iterdir()}

    assert files(tmp_path / "shards") == files(tmp_path / "ranges")
    assert len(list((tmp_path / "shards" / "draft").glob("model-*.safetensors"))) == 5
