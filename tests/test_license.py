"""Licence and attribution: the release carries the source's LICENSE and NOTICE unchanged, verify
checks the licence text really is the declared licence, the card credits the authors by name and
lists every change, and a recipe that could not be credited or explained is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.checkpoint.config_diff import config_changes
from pipeline.checkpoint.readers import read_card_citation
from pipeline.recipe.loader import hub_license_ids
from tests.conftest import CliResult, RecipeMaker, run_cli

CREDIT = "card: {credit: mtp-draft-pipeline (synthetic weights)}\n"
# Bytes a text-mode copy would alter: CRLF line ends, a trailing space, no final newline, non-ASCII.
NOTICE = "Synthetic NOTICE for tests\r\nCopyright the pipeline's generator \r\nAttribution: café".encode()
BIBTEX = """@misc{synthetic2026,
  title  = {A synthetic model, {{ 7*7 }} | <b>not bold</b>},
  author = {The pipeline's generator},
  note   = {a fence inside the data: ``` must not close the block},
  year   = {2026}
}"""
# Two phrases of the MIT permission notice and disclaimer: what the MIT section's check looks for.
MIT_TEXT = "Copyright the pipeline's generator\n\nPermission is hereby granted, free of charge, ...\n\nTHE SOFTWARE IS PROVIDED WITHOUT WARRANTY OF ANY KIND.\n"


def _source(tmp_path: Path, synthetic_root: Path) -> Path:
    source = tmp_path / "licensed-source"
    shutil.copytree(synthetic_root / "source", source)
    return source


def _build_and_card(recipe: Path, workdir: Path) -> str:
    built = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))
    assert built.code == 0, built.stderr
    carded = run_cli("card", "--recipe", str(recipe), "--workdir", str(workdir))
    assert carded.code == 0, carded.stderr
    return (recipe.parent / "README.md").read_text(encoding="utf-8")


def _one_error_line(result: CliResult) -> str:
    """The refusal: one `error:` line, at most a `hint:` after it, no traceback (progress lines may precede it)."""
    lines = result.stderr.splitlines()
    errors = [index for index, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1 and all(line.startswith("hint:") for line in lines[errors[0] + 1 :]), result.stderr
    assert "Traceback" not in result.stderr
    return lines[errors[0]]


def test_a_source_notice_travels_byte_for_byte_and_the_card_links_it(
    tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = _source(tmp_path, synthetic_root)
    (source / "NOTICE").write_bytes(NOTICE)

    card = _build_and_card(make_recipe(CREDIT, source=source), workdir)

    assert (workdir / "draft" / "NOTICE").read_bytes() == NOTICE
    assert (workdir / "draft" / "LICENSE").read_bytes() == (source / "LICENSE").read_bytes()
    assert "- Notices: [`NOTICE`](NOTICE), the source's notice file, copied byte for byte." in card
    assert "| [`NOTICE`](NOTICE) | none: copied byte for byte from the source |" in card
    assert "- Licence text: [`LICENSE`](LICENSE), the source's licence file, copied byte for byte." in card
    report = json.loads((workdir / "verify.json").read_text())
    files_check = next(c for c in report["checks"] if c["id"] == "license.files")
    assert files_check["passed"] and "NOTICE" in files_check["evidence"]


def test_the_card_credits_by_name_and_lists_every_file_and_its_change(
    tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = _source(tmp_path, synthetic_root)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8"}
    (source / "config.json").write_text(json.dumps(config, indent=2))

    card = _build_and_card(make_recipe(CREDIT, source=source), workdir)

    assert "All credit for the model and its MTP layers goes to **mtp-draft-pipeline (synthetic weights)**" in card
    assert "[Apache License 2.0](https://www.apache.org/licenses/LICENSE-2.0) (`apache-2.0`)" in card
    assert "| [`config.json`](config.json) | the source's, with `quantization_config` removed; every other field unchanged |" in card
    lock = json.loads((tmp_path / "recipe" / "draft.lock.json").read_text())
    assert lock["changes"] == {"config.json": [{"change": "removed", "field": "quantization_config"}]}
    shards = sorted(name for name in lock["files"] if name.endswith(".safetensors"))
    for shard in shards:
        held = sum(1 for tensor in lock["tensors"] if tensor["shard"] == shard)
        assert f"| [`{shard}`]({shard}) | re-sharded: holds {held} of the copied tensors; every tensor's bytes unchanged |" in card
    for carried in ("LICENSE", "configuration_step3p7.py", "modeling_step3p7.py"):
        assert f"| [`{carried}`]({carried}) | none: copied byte for byte from the source |" in card
    assert "every tensor of MTP layers 45, 46 and 47 (`model.layers.<i>.*`) and `model.embed_tokens.weight`." in card
    assert "No weight was modified" in card


def test_the_committed_step_card_credits_stepfun_and_names_the_licence_and_changes() -> None:
    card = (Path(__file__).resolve().parent.parent / "artifacts" / "step-3.7-flash-mtp-draft" / "README.md").read_text()
    section = card[card.index("## License and attribution") :]

    assert "All credit for the model and its MTP layers goes to **StepFun**" in section
    assert "[Apache License 2.0](https://www.apache.org/licenses/LICENSE-2.0)" in section
    assert "[`LICENSE`](LICENSE)" in section
    for row in (
        "| `model-*.safetensors` | re-sharded",
        "| `model.safetensors.index.json` | new",
        "| `config.json` | the source's, minus `quantization_config`",
    ):
        assert row in section
    assert "every tensor's bytes unchanged" in section and "No weight was modified" in section


def test_an_apache_card_with_a_licence_file_that_is_not_apache_is_refused_naming_both_files(
    tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = _source(tmp_path, synthetic_root)
    (source / "LICENSE").write_text("Synthetic weights. All rights reserved by the pipeline's generator.\n")

    result = run_cli("build", "--recipe", str(make_recipe(CREDIT, source=source)), "--workdir", str(workdir))

    assert result.code == 1
    error = _one_error_line(result)
    assert "license.text" in error
    assert "source README.md declares license apache-2.0, but source LICENSE lacks 'Apache License' and 'Version 2.0'" in error


def test_an_apache_source_without_a_licence_file_is_refused(
    tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = _source(tmp_path, synthetic_root)
    (source / "LICENSE").unlink()

    result = run_cli("build", "--recipe", str(make_recipe(CREDIT, source=source)), "--workdir", str(workdir))

    assert result.code == 1
    assert "license.text: source README.md declares license apache-2.0, but the source ships no LICENSE file" in _one_error_line(result)


def test_a_notice_changed_after_config_fix_fails_verify(
    tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = _source(tmp_path, synthetic_root)
    (source / "NOTICE").write_bytes(NOTICE)
    recipe = make_recipe(CREDIT, source=source)
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    (workdir / "draft" / "NOTICE").write_bytes(NOTICE.replace(b"\r\n", b"\n"))

    result = run_cli("verify", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 1
    assert "license.files: source NOTICE is changed in the draft" in _one_error_line(result)


def test_an_mit_source_gets_the_mit_section(tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path) -> None:
    source = _source(tmp_path, synthetic_root)
    (source / "LICENSE").write_text(MIT_TEXT)
    card_text = (source / "README.md").read_text().replace("license: apache-2.0", "license: mit")
    (source / "README.md").write_text(card_text)
    recipe = make_recipe(CREDIT, source=source)
    recipe.write_text(recipe.read_text().replace("license: apache-2.0", "license: mit"))

    card = _build_and_card(recipe, workdir)

    assert "[MIT License](https://opensource.org/license/mit) (`mit`)" in card
    assert "What the MIT License asks of anyone who passes these files on" in card
    assert "Apache" not in card


def test_a_bibtex_citation_in_the_source_card_is_carried_as_data(
    tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = _source(tmp_path, synthetic_root)
    readme = source / "README.md"
    readme.write_text(readme.read_text() + f"\n## Citation\n\n```bibtex\n{BIBTEX}\n```\n\n```python\nprint('not a citation')\n```\n")

    card = _build_and_card(make_recipe(CREDIT, source=source), workdir)

    assert f"### Citation\n\nThe source's card asks that work using the model cite:\n\n````bibtex\n{BIBTEX}\n````\n" in card
    assert "not a citation" not in card
    lock = json.loads((tmp_path / "recipe" / "draft.lock.json").read_text())
    assert lock["source"]["citation"] == BIBTEX


def test_a_source_card_without_citation_gives_no_citation_section(make_recipe: RecipeMaker, workdir: Path) -> None:
    card = _build_and_card(make_recipe(CREDIT), workdir)
    assert "### Citation" not in card


def test_a_release_recipe_without_credit_is_refused_in_one_line(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe("destination: {repo: org/Tiny-MTP-draft}\n")

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 2
    assert _one_error_line(result) == (f"error: {recipe}: card.credit: is required for a release: name the source's authors, e.g. StepFun")
    assert not workdir.exists()


def test_a_card_without_credit_is_refused_naming_the_field(make_recipe: RecipeMaker, workdir: Path) -> None:
    recipe = make_recipe()
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0

    result = run_cli("card", "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == 2
    assert f"{recipe}: card.credit: is required" in _one_error_line(result)
    assert not (recipe.parent / "README.md").exists()


@pytest.mark.parametrize(
    ("recipe_lines", "message"),
    [
        ("license: apache2\n", "license: 'apache2' is not a Hub licence identifier (did you mean 'apache-2.0'?)"),
        ("license: Apache-2.0\n", "license: 'Apache-2.0' is not a Hub licence identifier (did you mean 'apache-2.0'?)"),
        (
            "license: llama2\ndestination: {repo: org/x}\ncard: {credit: Someone}\n",
            "license: 'llama2' has no section in card_templates/licenses/ yet; a release under it is refused",
        ),
        ("license: apache-2.0\ncard: {credit: '  '}\n", "card.credit: must be the authors' name on one line, e.g. StepFun"),
        (
            "license: apache-2.0\nsource: {repo: stepfun-ai/Step-3.7-Flash}\ncard: {credit: stepfun-ai}\n",
            "card.credit: 'stepfun-ai' is the source's organisation id, not the authors' name",
        ),
    ],
)
def test_recipe_licence_and_credit_refusals(recipe_lines: str, message: str, tmp_path: Path) -> None:
    recipe = tmp_path / "draft" / "draft.yaml"
    recipe.parent.mkdir()
    lines = recipe_lines if "source:" in recipe_lines else recipe_lines + "source: {path: s}\n"
    recipe.write_text(f"family: step3p7\ntarget: {{path: t}}\n{lines}")

    result = run_cli("status", "--recipe", str(recipe), "--workdir", str(tmp_path / "w"))

    assert result.code == 2
    assert _one_error_line(result) == f"error: {recipe}: {message}"


def test_the_hub_licence_list_holds_the_ids_the_project_uses() -> None:
    ids = hub_license_ids()
    assert {"apache-2.0", "mit", "other", "unknown"} <= ids
    assert "Apache-2.0" not in ids and not any(line.startswith("#") for line in ids)


def test_config_changes_name_every_differing_field() -> None:
    source = {"a": 1, "quantization_config": {"x": 1}, "text_config": {"b": [1, 2], "quantization_config": {}, "c": True}}
    draft = {"a": 1, "text_config": {"b": [1, 2, 3], "c": 1}, "d": None}

    assert config_changes(source, draft) == [
        {"change": "removed", "field": "quantization_config"},
        {"change": "changed", "field": "text_config.b"},
        {"change": "removed", "field": "text_config.quantization_config"},
        {"change": "changed", "field": "text_config.c"},
        {"change": "added", "field": "d"},
    ]
    assert config_changes(source, source) == []


def test_only_bibtex_blocks_count_as_a_citation() -> None:
    assert read_card_citation("# Card\n\n```\n@article{a, title={A}}\n```\n") == "@article{a, title={A}}"
    assert read_card_citation('# Card\n\n```json\n{"a": 1}\n```\n\n```\nplain text\n```\n') is None
    assert read_card_citation("~~~bib\n@book{b}\n~~~\n\n```bibtex\n@misc{c}\n```\n") == "@book{b}\n\n@misc{c}"
