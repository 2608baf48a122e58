"""Malformed inputs exit 2 with one line naming the file and field, and leave no output behind."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RecipeMaker, run_cli
from tests.safetensors_reader import header_of, rewrite_header

MTP_TENSOR = "model.layers.45.eh_proj.weight"


def _shard(source: Path) -> Path:
    index = json.loads((source / "model.safetensors.index.json").read_text())
    return source / index["weight_map"][MTP_TENSOR]


def _edit_entry(source: Path, change: Callable[[dict, dict], None]) -> None:
    shard = _shard(source)
    header, _ = header_of(shard)
    change(header, header[MTP_TENSOR])
    rewrite_header(shard, header)


def _truncate(source: Path) -> None:
    shard = _shard(source)
    shard.write_bytes(shard.read_bytes()[:-100])


def _huge_header_length(source: Path) -> None:
    shard = _shard(source)
    data = shard.read_bytes()
    shard.write_bytes(struct.pack("<Q", len(data) + 10) + data[8:])


def _non_json_header(source: Path) -> None:
    shard = _shard(source)
    _, start = header_of(shard)
    data = bytearray(shard.read_bytes())
    data[8:start] = b"x" * (start - 8)
    shard.write_bytes(bytes(data))


def _overlap(header: dict, entry: dict) -> None:
    other = next(
        e for name, e in header.items() if name not in (MTP_TENSOR, "__metadata__") and e["data_offsets"][1] - e["data_offsets"][0] >= 8
    )
    begin = other["data_offsets"][0]
    size = entry["data_offsets"][1] - entry["data_offsets"][0]
    entry["data_offsets"] = [begin, begin + size]


def _out_of_range(header: dict, entry: dict) -> None:
    size = entry["data_offsets"][1] - entry["data_offsets"][0]
    entry["data_offsets"] = [10**9, 10**9 + size]


def _unknown_dtype(header: dict, entry: dict) -> None:
    entry["dtype"] = "Q7"


def _size_mismatch(header: dict, entry: dict) -> None:
    entry["shape"] = [entry["shape"][0] * 2, entry["shape"][1]]


def _escaping_tensor_name(header: dict, entry: dict) -> None:
    header["../../etc/passwd"] = header.pop(MTP_TENSOR)


def _edit_index(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(source: Path) -> None:
        path = source / "model.safetensors.index.json"
        index = json.loads(path.read_text())
        change(index)
        path.write_text(json.dumps(index))

    return edit


def _missing_geometry(source: Path) -> None:
    path = source / "config.json"
    config = json.loads(path.read_text())
    del config["text_config"]["hidden_size"]
    path.write_text(json.dumps(config))


def _wrong_type(source: Path) -> None:
    path = source / "config.json"
    config = json.loads(path.read_text())
    config["text_config"]["num_hidden_layers"] = "45"
    path.write_text(json.dumps(config))


SOURCE_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated shard": (_truncate, "data_offsets"),
    "header length beyond the file": (_huge_header_length, "header length"),
    "non-JSON header": (_non_json_header, "not valid UTF-8 JSON"),
    "overlapping offsets": (lambda s: _edit_entry(s, _overlap), "overlaps"),
    "out-of-range offsets": (lambda s: _edit_entry(s, _out_of_range), f"{MTP_TENSOR}.data_offsets"),
    "unknown dtype": (lambda s: _edit_entry(s, _unknown_dtype), f"{MTP_TENSOR}.dtype"),
    "shape/size mismatch": (lambda s: _edit_entry(s, _size_mismatch), f"{MTP_TENSOR}.data_offsets"),
    "tensor name escaping": (lambda s: _edit_entry(s, _escaping_tensor_name), "tensor name"),
    "shard name escaping": (_edit_index(lambda i: i["weight_map"].update({MTP_TENSOR: "../outside.safetensors"})), "escapes the repo"),
    "index points at a missing shard": (
        _edit_index(lambda i: i["weight_map"].update({MTP_TENSOR: "model-00009-of-00009.safetensors"})),
        "model-00009-of-00009.safetensors is missing",
    ),
    "index is not JSON": (
        lambda s: (s / "model.safetensors.index.json").write_text("{nope"),
        "model.safetensors.index.json: not valid JSON",
    ),
    "config missing geometry": (_missing_geometry, "text_config.hidden_size"),
    "config wrong type": (_wrong_type, "text_config.num_hidden_layers"),
}


def _assert_clean_refusal(result: object, named: str, workdir: Path) -> None:
    assert result.code == 2, result.stderr  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], stderr
    assert "Traceback" not in stderr
    assert not list(workdir.glob("draft/*.safetensors"))
    assert not (workdir / "fetch" / "fetch.json").exists()


@pytest.mark.parametrize("damage", sorted(SOURCE_DAMAGE))
def test_malformed_source_exits_2_with_one_line(
    damage: str, tmp_path: Path, synthetic_root: Path, make_recipe: RecipeMaker, workdir: Path
) -> None:
    source = tmp_path / "damaged-source"
    shutil.copytree(synthetic_root / "source", source)
    mutate, named = SOURCE_DAMAGE[damage]
    mutate(source)

    result = run_cli("build", "--recipe", str(make_recipe(source=source)), "--workdir", str(workdir))

    _assert_clean_refusal(result, named, workdir)


RECIPES: dict[str, tuple[str, str]] = {
    "unknown key": (
        "family: step3p7\nsource: {path: s}\ntarget: {path: t}\nlicense: apache-2.0\nlicence: mit\n",
        "licence: unknown key (did you mean 'license'?)",
    ),
    "not a mapping": ("- just\n- a list\n", "recipe: must be a mapping"),
    "python tag": ("family: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    "unclosed bracket": (
        "family: step3p7\ncard:\n  title: [unclosed\n  tags: []\n",
        "not valid YAML at line 4: expected ',' or ']', but got ':' (while parsing a flow sequence at line 3)",
    ),
    "bad repo id": ("family: step3p7\nsource: {repo: 'not a repo'}\ntarget: {path: t}\nlicense: apache-2.0\n", "source.repo"),
    "bad revision": (
        "family: step3p7\nsource: {repo: org/name, revision: '..'}\ntarget: {path: t}\nlicense: apache-2.0\n",
        "source.revision",
    ),
    "unknown family": ("family: llama\nsource: {path: s}\ntarget: {path: t}\nlicense: apache-2.0\n", "family: must be one of step3p7"),
    "missing license": ("family: step3p7\nsource: {path: s}\ntarget: {path: t}\n", "license: is required"),
    "bad shard size": (
        "family: step3p7\nsource: {path: s}\ntarget: {path: t}\nlicense: apache-2.0\nmax_shard_size: 5 parsecs\n",
        "max_shard_size",
    ),
    "too many connections": (
        "family: step3p7\nsource: {path: s}\ntarget: {path: t}\nlicense: apache-2.0\nfetch: {connections: 64}\n",
        "fetch.connections: must be at most 20, not 64",
    ),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_malformed_recipe_exits_2_naming_the_field(case: str, tmp_path: Path, workdir: Path) -> None:
    text, named = RECIPES[case]
    recipe = tmp_path / "bad" / "draft.yaml"
    recipe.parent.mkdir()
    recipe.write_text(text)

    result = run_cli("build", "--recipe", str(recipe), "--workdir", str(workdir))

    _assert_clean_refusal(result, named, workdir)
    assert str(recipe) in result.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli("build").code == 2
    assert run_cli("no-such-command").code == 2
