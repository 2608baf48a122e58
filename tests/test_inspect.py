"""inspect: each verdict on real synthetic folders, the card line, the JSON form and the bytes read."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.checkpoint.readers import read_shard_header
from pipeline.checkpoint.safetensors_format import DTYPE_BYTES, PlannedTensor, TensorEntry, write_shard
from pipeline.checkpoint.sources import LocalSource
from pipeline.families import FAMILIES
from pipeline.flows.inspect import InspectReport, inspect
from pipeline.rehearsal.synthetic import TARGET_VARIANTS, SyntheticSpec, step_config, write_target
from tests.conftest import RecipeMaker, run_cli

STEP = FAMILIES["step3p7"]
TODAY = "2026-06-05"
TARGET_REPO = "stepfun-ai/Step-3.7-Flash-NVFP4"
TARGET_COMMIT = "4275532ffd9a9496ff36b7a2dc4a9db1048da438"
MTP_SHARD = "model-mtp-bf16.safetensors"
HEAD_OUTPUTS = tuple(f"model.layers.{layer}.transformer.shared_head.output.weight" for layer in (45, 46, 47))
Tensor = tuple[str, str, tuple[int, ...]]


class PinnedFolder(LocalSource):
    """A folder that reports a resolved commit, standing in for a Hub repo pinned to one."""

    def __init__(self, root: Path, label: str, commit: str) -> None:
        super().__init__(root, label)
        self.commit = commit

    def resolve(self) -> str:
        return self.commit


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One pristine target folder per synthetic variant."""
    root = tmp_path_factory.mktemp("targets")
    return {variant: write_target(root / variant, SyntheticSpec(), variant) for variant in TARGET_VARIANTS}


@pytest.fixture
def copy_target(tmp_path: Path, targets: dict[str, Path]) -> Callable[[str], Path]:
    def copy(variant: str) -> Path:
        return Path(shutil.copytree(targets[variant], tmp_path / f"target-{variant}"))

    return copy


def _inspect(source: Path, target: Path) -> tuple[InspectReport, LocalSource, LocalSource]:
    source_reader = LocalSource(source, "source")
    target_reader = PinnedFolder(target, "target", TARGET_COMMIT)
    report = inspect(source_reader, target_reader, STEP, TODAY, source_name="stepfun-ai/Step-3.7-Flash", target_name=TARGET_REPO)
    return report, source_reader, target_reader


def _mtp_entries(folder: Path) -> list[TensorEntry]:
    header = read_shard_header(LocalSource(folder, "target"), MTP_SHARD)
    return sorted(header.tensors.values(), key=lambda entry: entry.begin)


def _zeros(nbytes: int) -> Callable[[], Iterator[bytes]]:
    return lambda: iter([bytes(nbytes)])


def _replace_mtp_shard(folder: Path, tensors: list[Tensor]) -> None:
    """Rewrite the target's MTP shard (zero bytes) and its index entries to hold exactly `tensors`."""
    planned = []
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
        planned.append(PlannedTensor(name, dtype, shape, nbytes, _zeros(nbytes)))
    with open(folder / MTP_SHARD, "wb") as handle:
        write_shard(handle, planned)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    weight_map = {name: shard for name, shard in index["weight_map"].items() if shard != MTP_SHARD}
    weight_map.update({name: MTP_SHARD for name, _, _ in tensors})
    index["weight_map"] = dict(sorted(weight_map.items()))
    index_path.write_text(json.dumps(index))


def test_a_target_without_mtp_and_with_truncated_arrays_needs_the_draft(synthetic_root: Path, targets: dict[str, Path]) -> None:
    report, _, target = _inspect(synthetic_root / "source", targets["no-mtp"])

    assert report.verdict == "needed"
    assert report.summary_line() == f"checked against {TARGET_REPO}@{TARGET_COMMIT}: ships no MTP tensors; arrays truncated to 45"
    assert "none of the 51 MTP tensors" in report.reasons[0] and "num_nextn_predict_layers: 3" in report.reasons[0]
    assert "have 45" in report.reasons[1] and "need 48" in report.reasons[1]
    assert {a.field for a in report.truncated_arrays} >= {"text_config.layer_types", "text_config.swiglu_limits_shared"}
    assert len(report.mtp_missing) == 51 and report.mtp_found == ()
    assert report.checked_at == TODAY and report.target_commit == TARGET_COMMIT
    assert target.bytes_transferred == 0  # no MTP keys in the index, so not even a header is read


def test_a_target_with_a_complete_mtp_shard_makes_the_draft_redundant(synthetic_root: Path, targets: dict[str, Path]) -> None:
    report, _, _ = _inspect(synthetic_root / "source", targets["mtp-shard"])

    assert report.verdict == "redundant", report.reasons
    assert report.summary_line() == f"checked against {TARGET_REPO}@{TARGET_COMMIT}: ships all 51 MTP tensors; arrays cover all 48 layers"
    assert len(report.mtp_found) == 51 and report.mtp_missing == ()
    assert report.mtp_namespaces == ("model.layers.N.*",)
    assert {t.shard for t in report.mtp_found} == {MTP_SHARD}
    assert report.mtp_quantized == () and report.mtp_misshapen == ()


def test_an_incomplete_mtp_set_is_needed_and_names_the_missing_tensors(synthetic_root: Path, targets: dict[str, Path]) -> None:
    report, _, _ = _inspect(synthetic_root / "source", targets["incomplete-mtp"])

    assert report.verdict == "needed"
    assert report.mtp_missing == HEAD_OUTPUTS
    assert "48 of 51" in report.reasons[0]
    assert all(name in report.reasons[0] for name in HEAD_OUTPUTS)
    assert "ships 48 of 51 MTP tensors" in report.summary_line()


@pytest.mark.parametrize(("variant", "key"), [("other-vocab", "vocab_size"), ("other-hidden", "hidden_size")])
def test_another_geometry_is_incompatible(synthetic_root: Path, targets: dict[str, Path], variant: str, key: str) -> None:
    report, _, _ = _inspect(synthetic_root / "source", targets[variant])

    assert report.verdict == "incompatible"
    assert report.reasons == (f"{key} differs: draft {getattr(SyntheticSpec(), key)}, target {2 * getattr(SyntheticSpec(), key)}",)
    assert f"{key} differs (draft" in report.summary_line()
    assert [row.key for row in report.geometry if not row.agrees] == [key]


def test_a_different_tokenizer_json_is_incompatible(synthetic_root: Path, copy_target: Callable[[str], Path]) -> None:
    target = copy_target("mtp-shard")
    (target / "tokenizer.json").write_text('{"model": {"type": "another"}}\n')

    report, _, _ = _inspect(synthetic_root / "source", target)

    assert report.verdict == "incompatible"
    assert report.reasons == ("tokenizer.json differs between source and target, so token ids may not match",)
    row = next(f for f in report.tokenizer if f.name == "tokenizer.json")
    assert row.source_sha256 != row.target_sha256 and row.same_content is False


def test_a_resaved_tokenizer_and_changed_settings_are_noted_not_incompatible(
    synthetic_root: Path, copy_target: Callable[[str], Path]
) -> None:
    target = copy_target("mtp-shard")
    tokenizer = json.loads((target / "tokenizer.json").read_text())
    (target / "tokenizer.json").write_text(json.dumps(tokenizer, indent=4))
    (target / "tokenizer_config.json").write_text('{"bos_token": "<s>", "chat_template": "{{ messages }}"}\n')

    report, _, _ = _inspect(synthetic_root / "source", target)

    assert report.verdict == "redundant", report.reasons
    states = {f.name: f.same_content for f in report.tokenizer}
    assert states == {"tokenizer.json": True, "tokenizer_config.json": False}
    assert any(note.startswith("tokenizer_config.json differs") for note in report.notes)


def test_mtp_under_the_language_model_namespace_is_found_but_still_needed(synthetic_root: Path, copy_target: Callable[[str], Path]) -> None:
    target = copy_target("mtp-shard")
    entries = _mtp_entries(target)
    _replace_mtp_shard(target, [(e.name.replace("model.", "model.language_model.", 1), e.dtype, e.shape) for e in entries])

    report, _, _ = _inspect(synthetic_root / "source", target)

    assert len(report.mtp_found) == 51 and report.mtp_missing == ()
    assert report.mtp_namespaces == ("model.language_model.layers.N.*",)
    assert report.mtp_found[0].found_as.startswith("model.language_model.layers.45.")
    assert report.verdict == "needed"
    assert report.reasons == ("51 MTP tensors are named model.language_model.layers.N.*, which vLLM's Step3p5MTP loader does not read",)
    assert "ships all 51 MTP tensors (under model.language_model.layers.N.*)" in report.summary_line()


def test_nvfp4_mtp_tensors_are_reported_as_quantized_and_the_draft_stays_needed(
    synthetic_root: Path, copy_target: Callable[[str], Path]
) -> None:
    target = copy_target("mtp-shard")
    tensors: list[Tensor] = []
    for entry in _mtp_entries(target):
        if len(entry.shape) == 2:  # the ModelOpt NVFP4 layout of a Linear: packed uint8 weight plus scales
            out, inp = entry.shape
            stem = entry.name.removesuffix(".weight")
            tensors += [(entry.name, "U8", (out, inp // 2)), (stem + ".weight_scale", "F8_E4M3", (out, inp // 16))]
        else:
            tensors.append((entry.name, entry.dtype, entry.shape))
    _replace_mtp_shard(target, tensors)

    report, _, _ = _inspect(synthetic_root / "source", target)

    assert report.verdict == "needed"
    assert len(report.mtp_quantized) == 3 * 10 and {t.dtype for t in report.mtp_quantized} == {"U8"}
    assert report.mtp_misshapen == ()  # packed shapes are not mistaken for wrong ones
    assert report.reasons[0].startswith("30 MTP tensors are quantized (U8)")
    assert len(report.mtp_unexpected) == 30 and "weight_scale" in report.notes[0]
    assert report.to_json()["mtp"]["quantized"][0].endswith(".weight")


def test_complete_mtp_with_truncated_arrays_is_still_needed(synthetic_root: Path, copy_target: Callable[[str], Path]) -> None:
    target = copy_target("mtp-shard")
    (target / "config.json").write_text(json.dumps(step_config(SyntheticSpec(), arrays=45, quantized=True)))

    report, _, _ = _inspect(synthetic_root / "source", target)

    assert report.verdict == "needed"
    assert len(report.reasons) == 1 and report.reasons[0].startswith("per-layer arrays stop short")
    assert report.summary_line().endswith("ships all 51 MTP tensors; arrays truncated to 45")


def test_inspect_reads_shard_headers_only(synthetic_root: Path, targets: dict[str, Path]) -> None:
    target_dir = targets["mtp-shard"]
    report, source, target = _inspect(synthetic_root / "source", target_dir)

    header = read_shard_header(LocalSource(target_dir, "target"), MTP_SHARD)
    assert target.bytes_transferred == header.data_start  # the 8-byte length and the JSON header, nothing else
    assert target.bytes_transferred < (target_dir / MTP_SHARD).stat().st_size / 10
    assert source.bytes_transferred == 0
    assert {t.shard for t in report.mtp_found} == {MTP_SHARD}


def test_the_json_form_has_a_stable_key_order_and_round_trips(synthetic_root: Path, targets: dict[str, Path]) -> None:
    report, _, _ = _inspect(synthetic_root / "source", targets["incomplete-mtp"])

    data = report.to_json()

    assert list(data) == [
        "schema",
        "verdict",
        "summary",
        "reasons",
        "notes",
        "checked_at",
        "family",
        "source",
        "target",
        "mtp",
        "arrays",
        "geometry",
        "tokenizer",
        "quantization",
    ]
    assert json.loads(json.dumps(data)) == data
    assert data["target"] == {"name": TARGET_REPO, "commit": TARGET_COMMIT}
    assert data["mtp"]["missing"] == list(HEAD_OUTPUTS) and data["mtp"]["shards"] == [MTP_SHARD]
    assert report.to_json() == data


def test_cli_inspect_prints_the_verdict_as_json(make_recipe: RecipeMaker) -> None:
    result = run_cli("inspect", "--recipe", str(make_recipe()), "--json")

    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "needed"
    assert data["summary"] == "checked against local folder target: ships no MTP tensors; arrays truncated to 45"
    assert data["target"]["commit"] is None and len(data["checked_at"]) == 10


@pytest.mark.parametrize(("variant", "verdict"), [("mtp-shard", "redundant"), ("other-vocab", "incompatible")])
def test_cli_inspect_exits_0_for_every_verdict(make_recipe: RecipeMaker, targets: dict[str, Path], variant: str, verdict: str) -> None:
    result = run_cli("inspect", "--recipe", str(make_recipe(target=targets[variant])))

    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"verdict: {verdict}\nchecked against local folder target: ")


def test_an_index_pointing_at_a_shard_without_the_tensor_is_bad_input(make_recipe: RecipeMaker, copy_target: Callable[[str], Path]) -> None:
    target = copy_target("mtp-shard")
    index_path = target / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"][HEAD_OUTPUTS[0]] = "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(index))

    result = run_cli("inspect", "--recipe", str(make_recipe(target=target)))

    assert result.code == 2
    assert f"weight_map.{HEAD_OUTPUTS[0]} points at model-00001-of-00003.safetensors, whose header lacks it" in result.stderr
