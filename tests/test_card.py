"""The model card: strict rendering, metadata that parses, tables equal to benchmarks.json, and a
committed card that `card --check` keeps honest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from pipeline.card.attribution import attribution_view
from pipeline.card.markdown import escape_cell
from pipeline.card.render import CardInputs, render
from pipeline.errors import InputError
from pipeline.families import FAMILIES
from pipeline.recipe.loader import load_recipe
from tests.conftest import RecipeMaker, run_cli
from tests.hub_fixtures import FAKE_TOKEN

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "artifacts" / "step-3.7-flash-mtp-draft"


def _copy_real(tmp_path: Path) -> Path:
    folder = tmp_path / "step-3.7-flash-mtp-draft"
    shutil.copytree(REAL, folder)
    return folder / "draft.yaml"


def _card(recipe: Path, workdir: Path, *extra: str) -> tuple[int, str]:
    imported = run_cli("bench-import", "--recipe", str(recipe), "--workdir", str(workdir))
    assert imported.code == 0, imported.stderr
    result = run_cli("card", "--recipe", str(recipe), "--workdir", str(workdir), *extra)
    return result.code, result.stdout + result.stderr


def test_committed_real_card_matches_a_fresh_render(tmp_path: Path) -> None:
    code, output = _card(REAL / "draft.yaml", tmp_path / "w", "--check")
    assert code == 0, output


def test_real_card_metadata_and_tables_follow_the_data(tmp_path: Path) -> None:
    recipe = _copy_real(tmp_path)
    assert _card(recipe, tmp_path / "w")[0] == 0
    text = (recipe.parent / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.base_model == "stepfun-ai/Step-3.7-Flash"
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "vllm"
    assert card.data.to_dict()["base_model_relation"] == "adapter"
    assert {"speculative-decoding", "mtp"} <= set(card.data.tags)

    document = json.loads((tmp_path / "w" / "benchmarks" / "benchmarks.json").read_text())
    for row in document["summary"]:
        shown = row["display"]
        line = f"| {row['name']} | not given | {shown['baseline_decode_tok_s']} | {shown['speculative_decode_tok_s']} | {shown['speedup']} | {shown['acceptance_rate']} | {shown['acceptance_length']} |"
        assert line in text
    assert "| 128K | +28% | +33% | +38% | — |" in text
    assert (
        '--speculative-config \'{"method":"mtp","model":"mtp-draft-pipeline/Step-3.7-Flash-MTP-draft","num_speculative_tokens":1}\'' in text
    )


def test_changing_one_benchmark_number_changes_only_the_line_that_shows_it(tmp_path: Path) -> None:
    recipe = _copy_real(tmp_path)
    assert _card(recipe, tmp_path / "before")[0] == 0
    before = (recipe.parent / "README.md").read_text().splitlines()
    spec_runs = recipe.parent / "benchmarks" / "single-stream" / "code-mtp-k1.json"
    runs = [json.loads(line) for line in spec_runs.read_text().splitlines() if line.strip()]
    for run in runs:
        run["median_tpot_ms"] *= 0.95
    spec_runs.write_text("\n".join(json.dumps(run) for run in runs) + "\n")

    assert _card(recipe, tmp_path / "after")[0] == 0
    after = (recipe.parent / "README.md").read_text().splitlines()

    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(changed) == 1
    assert changed[0][0].startswith("| Code |") and changed[0][1].startswith("| Code |")


def test_benchmark_labels_render_literally_and_keep_the_table_whole(tmp_path: Path) -> None:
    recipe = _copy_real(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["benchmarks"]["workloads"][0]["name"] = "{{ 7*7 }} a | b <img src=x>"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))

    assert _card(recipe, tmp_path / "w")[0] == 0
    text = (recipe.parent / "README.md").read_text()

    row = next(line for line in text.splitlines() if line.startswith("| {{ 7*7 }}"))
    assert "49" not in row and "<img" not in row
    assert row.count(" | ") == 7  # eight columns: the escaped bar did not split a cell
    assert escape_cell("a | b") in row


def test_an_undefined_template_variable_stops_the_render(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "mtp-draft.md.j2").write_text("# {{ title }}\n{{ no_such_value }}\n")
    recipe = load_recipe(REAL / "draft.yaml")
    lock = json.loads((REAL / "draft.lock.json").read_text())
    with pytest.raises(InputError, match="undefined template variable"):
        render(CardInputs(recipe, FAMILIES["step3p7"], lock, None, None), templates)


def test_card_of_a_local_build_has_no_token_and_no_local_path(
    make_recipe: RecipeMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    recipe = make_recipe("card: {credit: mtp-draft-pipeline (synthetic weights)}\n")
    assert run_cli("build", "--recipe", str(recipe), "--workdir", str(tmp_path / "w")).code == 0

    result = run_cli("card", "--recipe", str(recipe), "--workdir", str(tmp_path / "w"))

    assert result.code == 0, result.stderr
    text = (recipe.parent / "README.md").read_text()
    assert FAKE_TOKEN not in text
    assert str(tmp_path) not in text and "/tmp" not in text
    assert "{{" not in text and "None" not in text


def test_card_check_fails_with_a_diff_when_the_committed_card_is_stale(tmp_path: Path) -> None:
    recipe = _copy_real(tmp_path)
    readme = recipe.parent / "README.md"
    readme.write_text(readme.read_text().replace("Free-form", "Freeform", 1))

    code, output = _card(recipe, tmp_path / "w", "--check")

    assert code == 1
    removed = [line for line in output.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in output.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(removed) == len(added) == 1
    assert "Freeform" in removed[0] and added[0] == "+" + removed[0][1:].replace("Freeform", "Free-form", 1)
    assert "differs from a fresh render" in output


DRAFTS = sorted(p.parent.name for p in (ROOT / "artifacts").glob("*/draft.lock.json"))


@pytest.mark.parametrize("draft", DRAFTS)
def test_committed_card_is_the_golden_render(draft: str, tmp_path: Path, update_golden: bool) -> None:
    """Each committed card equals a fresh render; `pytest --update-golden` rewrites it for review."""
    from pipeline.recipe.layout import Artifacts
    from pipeline.stages import bench_import
    from pipeline.stages.card import CardStageInputs, render_card

    recipe = load_recipe(ROOT / "artifacts" / draft / "draft.yaml")
    bench_dir = tmp_path / "benchmarks"
    if recipe.benchmarks is not None:
        bench_import.run(bench_import.BenchImportInputs(recipe.folder / "benchmarks", recipe.benchmarks, bench_dir))
    fresh = render_card(CardStageInputs(recipe, FAMILIES[recipe.family], bench_dir, Artifacts(recipe.folder)))
    committed = recipe.folder / "README.md"
    if update_golden:
        committed.write_text(fresh, encoding="utf-8")
    assert committed.read_text(encoding="utf-8") == fresh, f"run: pytest {__file__} --update-golden, and review the diff"


@pytest.mark.parametrize(("shared_weights", "copies"), [("omit", False), ("copy", True)])
def test_the_taken_line_names_what_the_draft_holds_and_nothing_it_left_out(tmp_path: Path, shared_weights: str, copies: bool) -> None:
    recipe_path = tmp_path / "draft.yaml"
    recipe_path.write_text(
        "family: qwen3_5\nsource: {repo: org/Qwen3.5-src}\ntarget: {path: t}\nlicense: apache-2.0\n"
        f"shared_weights: {shared_weights}\ncard: {{credit: Qwen}}\n"
    )
    recipe = load_recipe(recipe_path)
    family = FAMILIES["qwen3_5"].with_shared_weights(recipe.shared_weights)
    names = ["mtp.fc.weight", "mtp.norm.weight", "mtp.layers.0.mlp.down_proj.weight"]
    names += ["model.embed_tokens.weight", "lm_head.weight"] if copies else []
    lock = {"source": {"commit": "c" * 40}, "tensors": [{"name": name} for name in names]}

    taken = attribution_view(recipe, family, lock, "apache-2.0", 1)["taken"]

    assert taken.startswith(f"{len(names)} tensors from [org/Qwen3.5-src]")
    assert "the MTP block's `mtp.fc.weight`, `mtp.norm.weight`" in taken
    assert ("`model.embed_tokens.weight` and `lm_head.weight`" in taken) is copies
    assert ("embed_tokens" in taken) is copies
