"""A corpus of malformed and hostile inputs, each run through the CLI.

Every case must end with its exit code (2 bad input, 1 a check refused), exactly one `error:` line
naming the file or field, no traceback, no partial output in the workdir, and nothing written
outside the workdir. The cases extend tests/test_malformed_inputs.py (safetensors headers and
recipes) to indexes, configs, cards, benchmark files and built drafts.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.safetensors_reader import header_of, rewrite_header

ROOT = Path(__file__).resolve().parent.parent
REAL_DRAFT = ROOT / "artifacts" / "step-3.7-flash-mtp-draft"
MTP_TENSOR = "model.layers.46.self_attn.o_proj.weight"


@dataclass(frozen=True)
class Case:
    """One hostile input: how to make it, which command meets it, and how that command must end."""

    mutate: Callable[[Path], None]
    command: str
    code: int
    named: str


def _json_edit(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(project: Path) -> None:
        path = project / relative
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))

    return edit


def _text(relative: str, text: str) -> Callable[[Path], None]:
    def write(project: Path) -> None:
        (project / relative).write_text(text)

    return write


def _shard_edit(change: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(project: Path) -> None:
        index = json.loads((project / "source" / "model.safetensors.index.json").read_text())
        change(project / "source" / index["weight_map"][MTP_TENSOR])

    return edit


def _header_bytes(raw: bytes) -> Callable[[Path], None]:
    def change(shard: Path) -> None:
        _, start = header_of(shard)
        data = shard.read_bytes()[start:]
        shard.write_bytes(struct.pack("<Q", len(raw)) + raw + data)

    return _shard_edit(change)


def _rename_tensor(new_name: str) -> Callable[[Path], None]:
    def change(shard: Path) -> None:
        header, _ = header_of(shard)
        header[new_name] = header.pop(MTP_TENSOR)
        rewrite_header(shard, header)

    return _shard_edit(change)


def _duplicate_index_key(project: Path) -> None:
    path = project / "source" / "model.safetensors.index.json"
    text = path.read_text()
    path.write_text(text.replace('"weight_map": {', f'"weight_map": {{"{MTP_TENSOR}": "model-00001-of-00004.safetensors", ', 1))


def _short_source_arrays(document: dict) -> None:
    document["text_config"]["layer_types"] = document["text_config"]["layer_types"][:45]


def _bench_recipe(project: Path, runs: str) -> None:
    (project / "recipe" / "benchmarks").mkdir(exist_ok=True)
    with open(project / "recipe" / "draft.yaml", "a") as handle:
        handle.write(f"benchmarks:\n  runs:\n    - files: '{runs}'\n")


def _bench_file(name: str, lines: list[str], runs: str = "*.json") -> Callable[[Path], None]:
    def write(project: Path) -> None:
        _bench_recipe(project, runs)
        (project / "recipe" / "benchmarks" / name).write_text("\n".join(lines) + "\n")

    return write


def _real_run(workload_file: str, change: Callable[[dict], None] | None = None) -> list[str]:
    lines = (REAL_DRAFT / "benchmarks" / "single-stream" / workload_file).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    for record in records:
        if change:
            change(record)
    return [json.dumps(record) for record in records]


def _unfair_pair(project: Path) -> None:
    _bench_recipe(project, "*.json")
    folder = project / "recipe" / "benchmarks"
    (folder / "code-baseline.json").write_text("\n".join(_real_run("code-baseline.json")) + "\n")
    lines = _real_run("code-mtp-k1.json", lambda r: r.update(output_len="256"))
    (folder / "code-mtp-k1.json").write_text("\n".join(lines) + "\n")


def _nan_tpot(record: dict) -> None:
    record["median_tpot_ms"] = float("nan")


def _drop_tpot(record: dict) -> None:
    del record["median_tpot_ms"]


def _draft_total_size(project: Path) -> None:
    path = project / "work" / "draft" / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    index["metadata"]["total_size"] += 2
    path.write_text(json.dumps(index))


def _recipe_line(line: str) -> Callable[[Path], None]:
    def append(project: Path) -> None:
        with open(project / "recipe" / "draft.yaml", "a") as handle:
            handle.write(line + "\n")

    return append


CORPUS: dict[str, Case] = {
    # safetensors headers, beyond tests/test_malformed_inputs.py
    "header is a JSON list": Case(_header_bytes(b"[1, 2, 3]   "), "build", 2, "not a JSON object"),
    "header length zero": Case(_header_bytes(b""), "build", 2, "header length 0"),
    "tensor name with NUL": Case(_rename_tensor("model.layers.46.a\u0000b"), "build", 2, "tensor name"),
    "tensor name of absurd length": Case(_rename_tensor("x" * 5000), "build", 2, "exceeds 512"),
    "tensor name with a slash": Case(_rename_tensor("model/layers/46"), "build", 2, "tensor name"),
    "tensor entry not an object": Case(
        _shard_edit(lambda s: rewrite_header(s, {**header_of(s)[0], MTP_TENSOR: [1, 2]})),
        "build",
        2,
        f"{MTP_TENSOR}: entry is not an object",
    ),
    "metadata not strings": Case(
        _shard_edit(lambda s: rewrite_header(s, {**header_of(s)[0], "__metadata__": {"format": 5}})), "build", 2, "__metadata__"
    ),
    # indexes
    "index names a tensor twice": Case(_duplicate_index_key, "build", 2, "duplicate key"),
    "index weight_map not an object": Case(
        _json_edit("source/model.safetensors.index.json", lambda d: d.update(weight_map=["x"])), "build", 2, "weight_map"
    ),
    "index points at a non-safetensors file": Case(
        _json_edit("source/model.safetensors.index.json", lambda d: d["weight_map"].update({MTP_TENSOR: "config.json"})),
        "build",
        2,
        "is not a .safetensors file",
    ),
    "index with an absolute shard path": Case(
        _json_edit("source/model.safetensors.index.json", lambda d: d["weight_map"].update({MTP_TENSOR: "/etc/x.safetensors"})),
        "build",
        2,
        "escapes the repo",
    ),
    "index total_size negative": Case(
        _json_edit("source/model.safetensors.index.json", lambda d: d["metadata"].update(total_size=-1)), "build", 2, "metadata.total_size"
    ),
    "draft index with a wrong total_size": Case(_draft_total_size, "verify", 1, "index.coverage"),
    # configs
    "config is not JSON": Case(_text("source/config.json", "{"), "build", 2, "config.json: not valid JSON"),
    "config is a list": Case(_text("source/config.json", "[]"), "build", 2, "config.json: must be a JSON object"),
    "config arrays cut to 45": Case(
        _json_edit("source/config.json", _short_source_arrays), "build", 1, "text_config.layer_types has 45 entries"
    ),
    "config auto_map not module.Class": Case(
        _json_edit("source/config.json", lambda d: d.update(auto_map={"AutoConfig": "nodot"})), "build", 2, "auto_map.AutoConfig"
    ),
    "config attention setting not a mapping": Case(
        _json_edit("source/config.json", lambda d: d["text_config"].update(attention_other_setting=3)),
        "build",
        2,
        "attention_other_setting",
    ),
    # remote cards
    "card front matter with a python tag": Case(
        _text("source/README.md", "---\nlicense: !!python/object/apply:os.system ['true']\n---\n"),
        "build",
        2,
        "README.md: front matter does not parse",
    ),
    "card license is a list": Case(
        _text("source/README.md", "---\nlicense: [apache-2.0, mit]\n---\n"), "build", 2, "license: must be a string"
    ),
    "card license differs from the recipe": Case(_text("source/README.md", "---\nlicense: mit\n---\n"), "build", 1, "license is 'mit'"),
    # recipes, beyond tests/test_malformed_inputs.py
    "recipe destination is a folder": Case(_recipe_line("destination: {path: somewhere}"), "build", 2, "destination: must be a Hub repo"),
    "recipe key is not a string": Case(_recipe_line("3: x"), "build", 2, "keys must be strings"),
    "recipe card relation unknown": Case(_recipe_line("card: {base_model_relation: cousin}"), "build", 2, "card.base_model_relation"),
    "recipe benchmarks with a typo": Case(_recipe_line("benchmarks: {runz: []}"), "build", 2, "benchmarks"),
    # benchmark files
    "benchmark file is not JSON": Case(_bench_file("bad.json", ["{not json"]), "bench-import", 2, "bad.json"),
    "benchmark TPOT is NaN": Case(
        _bench_file("code-baseline.json", _real_run("code-baseline.json", _nan_tpot)), "bench-import", 2, "median_tpot_ms"
    ),
    "benchmark TPOT missing": Case(
        _bench_file("code-baseline.json", _real_run("code-baseline.json", _drop_tpot)), "bench-import", 2, "median_tpot_ms"
    ),
    "benchmark pair with different output lengths": Case(_unfair_pair, "bench-import", 1, "output_len"),
}
BUILT_FIRST = {"draft index with a wrong total_size"}


def _snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_case_is_refused_cleanly(name: str, tmp_path: Path, synthetic_root: Path) -> None:
    case = CORPUS[name]
    for role in ("source", "target"):
        shutil.copytree(synthetic_root / role, tmp_path / role)
    recipe = tmp_path / "recipe" / "draft.yaml"
    recipe.parent.mkdir()
    recipe.write_text("family: step3p7\nsource: {path: ../source}\ntarget: {path: ../target}\nlicense: apache-2.0\n")
    workdir = tmp_path / "work"
    if name in BUILT_FIRST:
        assert run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir)).code == 0
    case.mutate(tmp_path)
    before = _snapshot(tmp_path, workdir)

    result = run_cli(case.command, "--recipe", str(recipe), "--workdir", str(workdir))

    assert result.code == case.code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and case.named in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(tmp_path, workdir) == before, "something was written outside the workdir"
    if name not in BUILT_FIRST:
        assert not list(workdir.glob("draft/*.safetensors"))
        assert not (workdir / "verify.json").exists()
        assert not (workdir / "benchmarks" / "benchmarks.json").exists()


def test_corpus_size() -> None:
    from tests.test_malformed_inputs import RECIPES, SOURCE_DAMAGE

    assert len(CORPUS) + len(RECIPES) + len(SOURCE_DAMAGE) >= 30
