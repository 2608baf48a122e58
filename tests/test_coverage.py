"""The coverage table of vLLM's registered MTP classes, and the scan that reads them from a wheel."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pipeline.families import FAMILIES
from pipeline.families import coverage as coverage_module
from pipeline.families.coverage import NOT_YET, coverage_rows, markdown_table
from pipeline.families.registry_scan import main as scan_main
from pipeline.families.registry_scan import scan

ROOT = Path(__file__).resolve().parent.parent
LISTING = ROOT / "tests" / "data" / "vllm-0.33.0" / "mtp_classes.json"


def _listing() -> dict:
    return json.loads(LISTING.read_text())


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- coverage:start -->\n"), text.index("<!-- coverage:end -->")
    return text[start + len("<!-- coverage:start -->\n") : end]


def test_the_readme_table_is_the_table_of_the_committed_class_list() -> None:
    assert _readme_table() == markdown_table(_listing())


def test_the_table_lists_every_registered_mtp_class_once() -> None:
    listing = _listing()
    architectures = [entry["architecture"] for entry in listing["registry"]["classes"]]
    table_rows = [line.split("|")[1].strip().strip("`") for line in _readme_table().splitlines()[2:]]

    assert listing["vllm"] == "0.33.0" and listing["registry"]["file"] == "vllm/model_executor/models/registry.py"
    assert table_rows == architectures and len(set(architectures)) == len(architectures)
    assert all("MTP" in name for name in architectures)


def test_every_family_is_a_registered_class_and_every_reason_names_a_registered_unsupported_one() -> None:
    classes = {entry["class"]: entry["architecture"] for entry in _listing()["registry"]["classes"]}
    for family in FAMILIES.values():
        assert family.vllm_class in classes, family.name
        assert classes[family.vllm_class] not in NOT_YET, family.name
    assert set(NOT_YET) <= set(classes.values())


def test_a_registered_class_without_a_family_or_a_reason_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {"architecture": "NewMTPModel", "class": "NewMTP"}
    with pytest.raises(ValueError, match=r"NewMTPModel \(NewMTP\): has neither a family nor a reason"):
        coverage_rows([entry])
    monkeypatch.setitem(NOT_YET, "DeepSeekMTPModel", "stale")
    with pytest.raises(ValueError, match="has both a family and a reason"):
        coverage_rows([{"architecture": "DeepSeekMTPModel", "class": "DeepSeekMTP"}])


REGISTRY = """\
_TEXT_GENERATION_MODELS = {
    "FooForCausalLM": ("foo", "FooForCausalLM"),
}

_SPECULATIVE_DECODING_MODELS = {
    "EagleLlamaForCausalLM": ("llama_eagle", "EagleLlamaForCausalLM"),
    "FooMTPModel": ("foo_mtp", "FooMTP"),
    "BarMTP": ("vllm.models.bar", "BarMTP"),
}

_TRANSFORMERS_BACKEND_MODELS = {
    "TransformersForCausalLM": ("transformers", "TransformersForCausalLM"),
    "TransformersForMTP": ("transformers", "TransformersForMTP"),
}
"""
SPECULATIVE = """\
from typing import Literal

MTPModelTypes = Literal[
    "foo_mtp",
    "mtp",
]
"""


def _tree(root: Path) -> Path:
    for name, text in (
        ("vllm/model_executor/models/registry.py", REGISTRY),
        ("vllm/config/speculative.py", SPECULATIVE),
        ("vllm-9.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: vllm\nVersion: 9.1.0\n"),
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_scan_reads_mtp_entries_and_types_with_their_lines_from_a_tree_and_a_wheel(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "unpacked")
    wheel = tmp_path / "vllm-9.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tree).as_posix())

    result = scan(tree)

    assert scan(wheel) == result
    assert result["vllm"] == "9.1.0"
    assert result["registry"]["classes"] == [
        {"architecture": "FooMTPModel", "module": "foo_mtp", "class": "FooMTP", "table": "_SPECULATIVE_DECODING_MODELS", "line": 7},
        {"architecture": "BarMTP", "module": "vllm.models.bar", "class": "BarMTP", "table": "_SPECULATIVE_DECODING_MODELS", "line": 8},
        {
            "architecture": "TransformersForMTP",
            "module": "transformers",
            "class": "TransformersForMTP",
            "table": "_TRANSFORMERS_BACKEND_MODELS",
            "line": 13,
        },
    ]
    assert result["mtp_model_types"] == {"file": "vllm/config/speculative.py", "line": 3, "names": ["foo_mtp", "mtp"]}


def test_the_scan_cli_writes_the_list_and_refuses_a_wheel_without_the_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree(tmp_path / "unpacked")
    out = tmp_path / "list.json"
    assert scan_main([str(tree), "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == scan(tree)

    (tree / "vllm/model_executor/models/registry.py").unlink()
    assert scan_main([str(tree)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {tree}: vllm/model_executor/models/registry.py is missing" and err[1].startswith("hint: ")


def test_the_coverage_cli_prints_the_table_and_names_an_unclassified_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert coverage_module.main([str(LISTING)]) == 0
    assert capsys.readouterr().out == markdown_table(_listing())

    listing = _listing()
    listing["registry"]["classes"].append({"architecture": "NewMTPModel", "class": "NewMTP"})
    (tmp_path / "list.json").write_text(json.dumps(listing))
    assert coverage_module.main([str(tmp_path / "list.json")]) == 1
    assert "NewMTPModel (NewMTP): has neither a family nor a reason" in capsys.readouterr().err
