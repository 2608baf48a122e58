"""The card's benchmark section: only tables with rows, datasets named, baselines alone said plainly,
and no engine version that could not have served the model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.card.render import CardInputs, render
from pipeline.families import FAMILIES
from pipeline.recipe.loader import load_recipe
from tests.test_bench_errors import copy_fixture, edit_record, setter
from tests.test_bench_real_files import document, import_bench

LOADER_RULES_VLLM = "0.33.0"  # the release the loader facts were read from (shared/facts/vllm-loaders.md)

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "artifacts" / "step-3.7-flash-mtp-draft"
SWEEP_LABELS = {"workload": "chat", "engine_version": "0.33.0"}


def card_for(doc: dict[str, Any]) -> str:
    """The Step-3.7 card rendered over another benchmarks document."""
    recipe = load_recipe(REAL / "draft.yaml")
    lock = json.loads((REAL / "draft.lock.json").read_text(encoding="utf-8"))
    return render(CardInputs(recipe, FAMILIES["step3p7"], lock, None, doc))


def benchmark_section(card: str) -> str:
    return card[card.index("## Benchmarks") : card.index("## Compatibility")]


def test_matrix_only_benchmarks_render_no_empty_single_stream_table(tmp_path: Path) -> None:
    spec = {
        "labels": SWEEP_LABELS,
        "runs": [{"files": "vllm-sweep/*/*/run=[0-9].json"}],
        "matrix": {"workload": "chat", "contexts": ["4K"], "concurrencies": [1]},
    }
    bench = copy_fixture(tmp_path, "vllm-sweep")
    section = benchmark_section(card_for(document(import_bench(bench, spec))))
    assert "| Workload |" not in section and "Single-stream" not in section
    assert "| 4K | +42% |" in section
    assert "speedup at MTP K=2 by context length and concurrency" in section


def test_baseline_only_row_says_no_speculative_run_exists(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-legacy")
    spec = {"labels": {"workload": "chat", "output_len": 128, "mode": "baseline"}, "runs": [{"files": "vllm-legacy/baseline/*.json"}]}
    section = benchmark_section(card_for(document(import_bench(bench, spec))))
    assert "| chat | not given | 83.9 | — | — | — | — | 3 + 0 |" in section
    assert "No speculative run exists yet for chat: its row shows the target alone." in section
    assert "MTP K=" not in section


def test_random_prompts_show_acceptance_and_name_the_dataset(tmp_path: Path) -> None:
    bench = copy_fixture(tmp_path, "vllm-serve")
    for file in ("code-baseline.json", "code-mtp-k3.json"):
        for line in (1, 2, 3):
            edit_record(bench / "vllm-serve" / file, line, setter("dataset", "random"))
    section = benchmark_section(card_for(document(import_bench(bench, {"runs": [{"files": "vllm-serve/*.json"}]}))))
    assert "| code | random (synthetic) | 135.0 | 241.0 | +78.6% | 0.53 | 2.60 | 3 + 3 |" in section
    assert "Random (synthetic) prompts overstate speculative gains" in section


def test_committed_card_names_only_versions_that_could_serve_step_3_7() -> None:
    card = (REAL / "README.md").read_text(encoding="utf-8")
    assert f"loader rules checked against vLLM {LOADER_RULES_VLLM}" in card
    # vLLM 0.15.x cannot serve Step-3.7 (facts/vllm-loaders.md §4); the card names only the loader release
    named = re.findall(r"vllm(?: version:?)?\s+v?(\d+(?:\.\d+)+)", card, flags=re.IGNORECASE)
    assert set(named) == {LOADER_RULES_VLLM}, named
    images = re.findall(r"vllm/vllm-openai:(\S+)", card)
    assert set(images) == {"stepfun37"}, images
    assert "engine version" not in card
