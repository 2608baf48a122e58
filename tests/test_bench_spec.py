"""The recipe's `benchmarks:` section: accepted shapes and one-line errors with the dotted field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.bench.spec import LABEL_NAMES, Labels, MissingCell, PrometheusPair, parse_benchmark_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "artifacts" / "step-3.7-flash-mtp-draft" / "draft.yaml"


def test_example_section_parses_into_typed_labels() -> None:
    spec = parse_benchmark_spec(yaml.safe_load(EXAMPLE.read_text())["benchmarks"])
    assert spec.labels.gpu_count == 2
    assert (spec.labels.engine_version, spec.labels.image) == (None, "vllm/vllm-openai:stepfun37")
    assert [group.files for group in spec.runs] == ["single-stream/*.json", "context-sweep/20260305_091500/*/run=[0-9].json"]
    assert spec.runs[1].labels == Labels(workload="long-context")
    assert [w.id for w in spec.workloads or ()] == ["free-form", "code", "japanese", "tool-call"]
    assert spec.matrix is not None
    assert spec.matrix.contexts == ("1K", "8K", "32K", "128K")
    assert spec.matrix.concurrencies == (1, 2, 4, 8)
    assert spec.matrix.missing[0].context == "128K"
    assert isinstance(spec.matrix.missing[0], MissingCell)


def test_labels_accept_metadata_style_strings_and_prometheus_pairs() -> None:
    spec = parse_benchmark_spec(
        {
            "runs": [
                {
                    "files": "legacy/*.json",
                    "mode": "speculative",
                    "k": "2",
                    "context": 8192,
                    "match": {"server_info.speculative_algorithm": None},
                    "prometheus": [{"before": "m/0.before.prom", "after": "m/0.after.prom"}],
                }
            ]
        }
    )
    group = spec.runs[0]
    assert group.labels.k == 2
    assert group.labels.context == "8192"
    assert group.match == (("server_info.speculative_algorithm", None),)
    assert group.prometheus == (PrometheusPair("m/0.before.prom", "m/0.after.prom"),)


def test_hardware_is_another_name_for_gpu_and_k_may_be_zero() -> None:
    spec = parse_benchmark_spec({"labels": {"hardware": "RTX PRO 6000"}, "runs": [{"files": "a", "k": 0}]})
    assert (spec.labels.gpu, spec.runs[0].labels.k) == ("RTX PRO 6000", 0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"runs": [{"files": "a.json", "wrkload": "code"}]}, "runs[0].wrkload: unknown key (did you mean 'workload'?)"),
        (
            {"runs": [{"files": "a.json"}], "labelz": {}},
            "labelz: unknown key (did you mean 'labels'?); valid keys: labels, matrix, plan, runs, workloads",
        ),
        ({"labels": {"gpus": 2}, "runs": [{"files": "a"}]}, "labels.gpus: unknown key (did you mean 'gpu'?)"),
        ({"runs": [{"files": "a"}, {"files": "b"}, {"files": "c", "mode": "fast"}]}, "runs[2].mode: must be one of baseline, speculative"),
        ({"runs": [{"mode": "baseline"}]}, "runs[0].files: is required"),
        ({}, "runs: is required"),
        ({"runs": []}, "runs: must be a non-empty list"),
        ({"runs": [{"files": "../other/*.json"}]}, "runs[0].files: must be a path inside the benchmarks folder"),
        ({"runs": [{"files": "/abs/*.json"}]}, "runs[0].files: must be a path inside the benchmarks folder"),
        ({"runs": [{"files": "a", "k": -1}]}, "runs[0].k: must be a whole number of at least 0, not -1"),
        ({"runs": [{"files": "a", "tp": 0}]}, "runs[0].tp: must be a positive integer, not 0"),
        ({"runs": [{"files": "a", "gpu": "H100", "hardware": "H200"}]}, "runs[0].hardware: gpu is given too"),
        ({"runs": [{"files": "a", "concurrency": True}]}, "runs[0].concurrency: must be a positive integer, not True"),
        ({"runs": [{"files": "a", "temperature": "hot"}]}, "runs[0].temperature: must be a non-negative number"),
        ({"runs": [{"files": "a", "match": {}}]}, "runs[0].match: must name at least one key"),
        ({"runs": [{"files": "a", "engine_version": 0.10}]}, "runs[0].engine_version: must be a string, not the number 0.1; quote it"),
        ({"runs": [{"files": "a", "prometheus": [{"before": "x"}]}]}, "runs[0].prometheus[0].after: is required"),
        ({"runs": [{"files": "a"}], "workloads": [{"id": "a"}, {"id": "a"}]}, "workloads[1].id: 'a' is listed twice"),
        (
            {"runs": [{"files": "a"}], "matrix": {"workload": "m", "contexts": ["1K"], "concurrencies": [1, 1]}},
            "matrix.concurrencies[1]: 1 is listed twice",
        ),
        (
            {
                "runs": [{"files": "a"}],
                "matrix": {
                    "workload": "m",
                    "contexts": ["1K"],
                    "concurrencies": [1],
                    "missing": [{"context": "8K", "concurrency": 1, "reason": "oom"}],
                },
            },
            "matrix.missing[0].context: '8K' is not one of the matrix contexts",
        ),
        (
            {
                "runs": [{"files": "a"}],
                "workloads": [{"id": "m"}],
                "matrix": {"workload": "m", "contexts": ["1K"], "concurrencies": [1]},
            },
            "workloads[0].id: 'm' is the matrix workload",
        ),
        ("not a mapping", "benchmarks: must be a mapping"),
    ],
)
def test_bad_section_names_the_dotted_field(section: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_benchmark_spec(section)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_benchmarks() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("### The `benchmarks:` section") : text.index("## How a build works")]


def test_readme_schema_table_names_every_key_and_label() -> None:
    section = _readme_benchmarks()
    keys = ["labels", "runs", "runs[].files", "runs[].match", "runs[].prometheus", "workloads", "matrix", "matrix.missing"]
    for key in (*keys, *LABEL_NAMES, "hardware"):
        assert f"`{key}`" in section, key


def test_readme_examples_parse() -> None:
    blocks = _readme_benchmarks().split("```yaml\n")[1:]
    specs = [yaml.safe_load(block.split("```")[0])["benchmarks"] for block in blocks]
    assert len(specs) == 3  # two runs: examples, one plan
    for spec in specs:
        parse_benchmark_spec(spec)


def test_bench_import_help_names_the_section_and_the_folder() -> None:
    from tests.test_repository import _subcommands

    text = _subcommands()["bench-import"].format_help()  # type: ignore[attr-defined]
    assert "`benchmarks:` section" in text and "artifacts/<draft>/benchmarks/" in text
