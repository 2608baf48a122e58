"""watch: new upstream commits made through the real client on the embedded Hub, and what the
watcher says and proposes about them, reading headers and small files only."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import git
import pytest
from huggingface_hub import CommitOperationAdd

from pipeline.cli import watch as watch_command
from pipeline.errors import InputError
from pipeline.flows.proposal import Proposal, propose
from pipeline.rehearsal.hub import FaultPlan, HubServer
from tests.conftest import run_cli
from tests.hub_fixtures import SOURCE_REPO, TARGET_REPO, files_of
from tests.release_fixtures import DRAFT, Release

ROOT = Path(__file__).resolve().parent.parent
LOCK = f"artifacts/{DRAFT}/draft.lock.json"
CARD = f"artifacts/{DRAFT}/README.md"
BRANCH = f"watch/{DRAFT}"
MTP_TENSOR = "model.layers.45.eh_proj.weight"


def _watch(release: Release, *argv: str) -> tuple[int, dict[str, Any]]:
    result = release.cli("watch", "--json", *argv)
    assert result.code in (0, 1), result.stderr
    return result.code, json.loads(result.stdout)


def _blob(commit: git.Commit, path: str) -> bytes:
    return bytes((commit.tree / path).data_stream.read())


def _proposed(release: Release) -> git.Commit:
    return release.repo.commit(BRANCH)


def _shard_of(folder: Path, tensor: str) -> str:
    return str(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][tensor])


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _join(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _flip_one_value(shard: bytes, tensor: str) -> bytes:
    """The same header, one byte of `tensor` changed."""
    header, body = _split(shard)
    begin = header[tensor]["data_offsets"][0]
    return _join(header, body[:begin] + bytes([body[begin] ^ 0x01]) + body[begin + 1 :])


def _transpose_shape(shard: bytes, tensor: str) -> bytes:
    """The same bytes, `tensor` declared with its two dimensions swapped."""
    header, body = _split(shard)
    header[tensor]["shape"] = header[tensor]["shape"][::-1]
    return _join(header, body)


def _commit_file(release: Release, repo: str, path: str, data: bytes, message: str) -> str:
    return str(release.api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo, commit_message=message).oid)


def test_nothing_moved_exits_0_and_proposes_nothing(release: Release) -> None:
    release.prepare(tag=None)
    code, report = _watch(release, "--propose")
    assert code == 0
    assert report["changed"] == [] and report["proposals"] == []
    assert report["drafts"][0]["headline"] == f"{DRAFT}: unchanged"
    assert BRANCH not in [head.name for head in release.repo.heads]


def test_a_pending_lock_is_skipped_without_reaching_the_hub(hub_endpoint: HubServer) -> None:
    hub_endpoint.stats.reset()
    result = run_cli("watch", "--draft", "step-3.7-flash-mtp-draft", "--artifacts", str(ROOT / "artifacts"), "--json")
    assert result.code == 0, result.stderr
    [draft] = json.loads(result.stdout)["drafts"]
    assert draft["skipped"] == "the lock is not resolved yet; its first build resolves it" and not draft["changed"]
    assert hub_endpoint.stats.requests == 0


def test_watch_needs_a_draft_or_all() -> None:
    result = run_cli("watch")
    assert result.code == 2
    assert result.stderr.startswith("error: watch: name a draft with --draft NAME (or --recipe PATH), or give --all")
    both = run_cli("watch", "--all", "--draft", "demo")
    assert both.code == 2 and "--all" in both.stderr


def test_a_target_commit_shipping_the_mtp_makes_the_draft_redundant_and_the_proposal_says_so(
    release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    release.prepare(tag=None)
    head, committed_lock = release.repo.head.commit, json.loads((release.folder / "draft.lock.json").read_text())
    new_target = release.api.upload_folder(
        repo_id=TARGET_REPO,
        folder_path=str(synthetic_pairs["redundant-target"]),
        commit_message="Add a BF16 MTP shard and restore the arrays",
    ).oid

    code, report = _watch(release, "--propose")

    assert code == 1
    [draft] = report["drafts"]
    assert draft["source"] is None
    assert draft["target"]["old_commit"] == committed_lock["target"]["commit"] and draft["target"]["new_commit"] == new_target
    assert (draft["target"]["old_verdict"], draft["target"]["verdict"], draft["target"]["change"]) == (
        "needed",
        "redundant",
        "now redundant",
    )
    assert draft["target"]["reasons"][0].startswith("the target ships all 51 MTP tensors")
    proposed = _proposed(release)
    assert proposed.parents == (head,)
    assert {diff.a_path for diff in head.diff(proposed)} == {LOCK, CARD}
    lock = json.loads(_blob(proposed, LOCK))
    assert lock["target"]["commit"] == new_target and lock["inspect"]["verdict"] == "redundant"
    assert {k: v for k, v in lock.items() if k not in ("target", "inspect")} == {
        k: v for k, v in committed_lock.items() if k not in ("target", "inspect")
    }
    card = _blob(proposed, CARD).decode()
    assert f"> This draft is redundant for {TARGET_REPO} at commit `{new_target}`: that revision ships its own MTP layers." in card
    assert (
        f'`vllm serve {TARGET_REPO} --revision {new_target} --speculative-config \'{{"method":"mtp","num_speculative_tokens":1}}\'`' in card
    )
    # the checkout is left as it was: same branch, same files, nothing staged
    assert release.repo.head.commit == head and not release.repo.is_dirty(untracked_files=True)
    pull_request = (release.workdir / "watch" / DRAFT / "pull-request.md").read_text()
    assert pull_request.startswith(f"# {DRAFT}: target at {new_target[:12]}: now redundant\n\n")
    assert f"| Target | {TARGET_REPO} | `{committed_lock['target']['commit']}` | `{new_target}` | now redundant |" in pull_request
    assert "```diff\n" in pull_request and "+> This draft is redundant" in pull_request
    assert "goes through `publish --force`" in pull_request

    release.repo.git.checkout(BRANCH)
    assert release.cli("card", "--check").code == 0  # the proposed card is exactly a fresh render of the proposed lock


def test_a_later_run_that_learns_nothing_new_keeps_the_proposed_commit(
    release: Release, synthetic_pairs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    release.prepare(tag=None)
    release.api.upload_folder(
        repo_id=TARGET_REPO, folder_path=str(synthetic_pairs["redundant-target"]), commit_message="Add a BF16 MTP shard"
    )
    monkeypatch.setattr(watch_command, "today", lambda: "2026-11-30")
    assert _watch(release, "--propose")[0] == 1
    first = _proposed(release)
    monkeypatch.setattr(watch_command, "today", lambda: "2026-12-07")

    code, report = _watch(release, "--propose")

    assert code == 1  # the target still moved: the proposal stands
    [proposal] = report["proposals"]
    assert proposal["already_proposed"] is True and proposal["commit"] == first.hexsha == _proposed(release).hexsha
    assert json.loads(_blob(first, LOCK))["inspect"]["checked_at"] == "2026-11-30"  # dated when first found


def test_a_new_finding_replaces_the_proposed_commit(release: Release, synthetic_pairs: dict[str, Path]) -> None:
    release.prepare(tag=None)
    release.api.upload_folder(repo_id=TARGET_REPO, folder_path=str(synthetic_pairs["redundant-target"]), commit_message="Add MTP")
    assert _watch(release, "--propose")[0] == 1
    first = _proposed(release)
    newer = _commit_file(release, TARGET_REPO, "README.md", b"---\nlicense: apache-2.0\n---\n\nMoved again.\n", "Card only")

    code, report = _watch(release, "--propose")

    [proposal] = report["proposals"]
    assert code == 1 and proposal["already_proposed"] is False and proposal["commit"] != first.hexsha
    assert json.loads(_blob(_proposed(release), LOCK))["target"]["commit"] == newer


def test_a_readme_only_source_commit_is_re_pinned_and_a_locked_build_reproduces_the_draft(
    release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    release.prepare(tag=None)
    built = files_of(release.workdir / "draft")
    committed_lock = json.loads((release.folder / "draft.lock.json").read_text())
    readme = (synthetic_pairs["source"] / "README.md").read_bytes() + b"\nA paragraph added upstream.\n"
    new_source = _commit_file(release, SOURCE_REPO, "README.md", readme, "Reword the card")

    code, report = _watch(release, "--propose")

    assert code == 1
    [draft] = report["drafts"]
    source = draft["source"]
    assert (source["state"], source["summary"]) == ("bytes-unchanged", "source moved, draft bytes unchanged")
    assert (source["old_commit"], source["new_commit"]) == (committed_lock["source"]["commit"], new_source)
    assert source["files"] == ["README.md"] and source["shards"] == [] and source["fields"] == []
    assert draft["target"]["change"] == "still needed" and not draft["target"]["moved"]
    lock = json.loads(_blob(_proposed(release), LOCK))
    assert lock["source"]["commit"] == new_source and lock["unresolved"] == []
    assert lock["tensors"] == committed_lock["tensors"] and lock["files"] == committed_lock["files"]
    assert lock["source"]["shard_sha256"] == committed_lock["source"]["shard_sha256"]

    release.repo.git.checkout(BRANCH)
    rebuilt = release.cli("build", "--locked", "--rerun")
    assert rebuilt.code == 0, rebuilt.stderr
    assert "lock: reproduced" in rebuilt.stdout
    assert files_of(release.workdir / "draft") == built


def test_a_source_commit_changing_one_tensors_values_needs_a_rebuild_naming_its_shard(
    release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    release.prepare(tag=None)
    shard = _shard_of(synthetic_pairs["source"], MTP_TENSOR)
    _commit_file(release, SOURCE_REPO, shard, _flip_one_value((synthetic_pairs["source"] / shard).read_bytes(), MTP_TENSOR), "Retrain")

    code, report = _watch(release, "--propose")

    assert code == 1
    source = report["drafts"][0]["source"]
    assert source["summary"] == "rebuild needed"
    [change] = source["shards"]
    assert change["shard"] == shard and MTP_TENSOR in change["tensors"] and change["header_changes"] == []
    assert change["old_sha256"] != change["new_sha256"]
    assert source["reasons"] == [
        f"{shard} changed and holds {len(change['tensors'])} draft tensor(s); headers unchanged, but equal metadata cannot prove equal values"
    ]
    lock = json.loads(_blob(_proposed(release), LOCK))
    cleared = sorted(t["name"] for t in lock["tensors"] if t["sha256"] is None)
    assert cleared == sorted(change["tensors"]) and lock["files"] == {} and lock["verify"]["passed"] is False
    assert any(line.startswith(f"source: {shard} changed") for line in lock["unresolved"])


def test_a_shape_change_names_the_tensor_and_watch_reads_no_weights(
    release: Release, synthetic_pairs: dict[str, Path], hub_endpoint: HubServer
) -> None:
    release.prepare(tag=None)
    shard = _shard_of(synthetic_pairs["source"], MTP_TENSOR)
    _commit_file(release, SOURCE_REPO, shard, _transpose_shape((synthetic_pairs["source"] / shard).read_bytes(), MTP_TENSOR), "Reshape")
    release.api.upload_folder(repo_id=TARGET_REPO, folder_path=str(synthetic_pairs["redundant-target"]))
    hub_endpoint.stats.reset()

    code, report = _watch(release)

    assert code == 1
    [change] = report["drafts"][0]["source"]["shards"]
    assert [(h["tensor"], h["field"], h["old"], h["new"]) for h in change["header_changes"]] == [
        (MTP_TENSOR, "shape", [64, 128], [128, 64])
    ]
    assert report["drafts"][0]["target"]["change"] == "now redundant"
    # Everything watch may read: every small file and every shard header of both repos, at both commits.
    allowed = 2 * sum(_readable_bytes(synthetic_pairs[role]) for role in ("source", "redundant-target", "target"))
    tensor_bytes = sum(
        entry["data_offsets"][1] - entry["data_offsets"][0]
        for path in synthetic_pairs["source"].glob("*.safetensors")
        for name, entry in _split(path.read_bytes())[0].items()
        if name.startswith("model.layers.4") and int(name.split(".")[2]) >= 45
    )
    sent = hub_endpoint.stats.resolve_bytes_sent
    assert 0 < sent <= allowed < tensor_bytes, (sent, allowed, tensor_bytes)


def _readable_bytes(folder: Path) -> int:
    """Bytes of the files that are not weights, plus each shard's length prefix and header."""
    total = 0
    for path in folder.iterdir():
        if path.suffix == ".safetensors":
            total += 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
        else:
            total += path.stat().st_size
    return total


def test_an_older_lock_without_shard_hashes_is_compared_through_the_locked_commits_listing(
    release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    release.prepare(tag=None)
    lock_path = release.folder / "draft.lock.json"
    lock = json.loads(lock_path.read_text())
    del lock["source"]["shard_sha256"]
    lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    assert release.cli("build", "--locked").code == 0  # a lock written before the field existed still reproduces
    release.commit_and_tag(None)
    readme = (synthetic_pairs["source"] / "README.md").read_bytes() + b"\nMore words.\n"
    _commit_file(release, SOURCE_REPO, "README.md", readme, "Reword")

    code, report = _watch(release)

    assert code == 1 and report["drafts"][0]["source"]["state"] == "bytes-unchanged"


@pytest.mark.parametrize("kind", ["value", "shape"])
def test_the_human_report_names_the_shard(release: Release, synthetic_pairs: dict[str, Path], kind: str) -> None:
    release.prepare(tag=None)
    shard = _shard_of(synthetic_pairs["source"], MTP_TENSOR)
    change = _flip_one_value if kind == "value" else _transpose_shape
    _commit_file(release, SOURCE_REPO, shard, change((synthetic_pairs["source"] / shard).read_bytes(), MTP_TENSOR), "Change")
    result = release.cli("watch")
    assert result.code == 1
    assert f"{DRAFT}: rebuild needed (source " in result.stdout and f"source shard {shard}: sha256" in result.stdout
    assert (f"header {MTP_TENSOR}: shape [64,128] -> [128,64]" in result.stdout) == (kind == "shape")


def test_config_and_licence_changes_are_reported_field_by_field(release: Release, synthetic_pairs: dict[str, Path]) -> None:
    release.prepare(tag=None)
    config = json.loads((synthetic_pairs["source"] / "config.json").read_text())
    config["text_config"]["rope_theta"] = config["text_config"]["rope_theta"][:45]
    config["quantization_config"] = {"quant_method": "fp8"}
    card = (synthetic_pairs["source"] / "README.md").read_text().replace("license: apache-2.0", "license: mit")
    release.api.create_commit(
        SOURCE_REPO,
        [
            CommitOperationAdd("config.json", json.dumps(config, indent=2).encode()),
            CommitOperationAdd("README.md", card.encode()),
        ],
        commit_message="Relicense and re-export",
    )

    code, report = _watch(release)

    assert code == 1
    source = report["drafts"][0]["source"]
    assert source["state"] == "rebuild-needed" and source["shards"] == []
    fields = {(f["file"], f["field"]): (f["old"], f["new"]) for f in source["fields"]}
    assert set(fields) == {("config.json", "text_config.rope_theta"), ("config.json", "quantization_config"), ("README.md", "license")}
    assert fields["config.json", "quantization_config"] == (None, {"quant_method": "fp8"})
    assert len(fields["config.json", "text_config.rope_theta"][0]) == 48 and len(fields["config.json", "text_config.rope_theta"][1]) == 45
    assert fields["README.md", "license"] == ("apache-2.0", "mit")
    assert source["reasons"] == ["the draft carries config.json, which changed", "the source card's license changed: apache-2.0 -> mit"]
    human = release.cli("watch").stdout
    assert "source config.json: text_config.rope_theta: 48 entries -> 45" in human
    assert "source README.md: license: apache-2.0 -> mit" in human


def test_the_lock_records_the_lfs_sha256_of_every_source_shard_holding_a_draft_tensor(
    release: Release, synthetic_pairs: dict[str, Path]
) -> None:
    release.prepare(tag=None)
    source = json.loads((release.folder / "draft.lock.json").read_text())["source"]
    shards = {t: _shard_of(synthetic_pairs["source"], t) for t in [MTP_TENSOR, "model.embed_tokens.weight"]}
    assert set(shards.values()) <= set(source["shards_read"])
    assert source["shard_sha256"] == {
        shard: hashlib.sha256((synthetic_pairs["source"] / shard).read_bytes()).hexdigest() for shard in source["shards_read"]
    }


def test_all_watches_every_draft_but_the_offline_demos(hub_endpoint: HubServer) -> None:
    # What the scheduled workflow runs on this repository: the demo's repos exist only on the embedded
    # Hub, and the real draft's lock is still pending, so nothing is asked of the Hub.
    hub_endpoint.stats.reset()
    result = run_cli("watch", "--all", "--artifacts", str(ROOT / "artifacts"), "--json")
    assert result.code == 0, result.stderr
    drafts = json.loads(result.stdout)["drafts"]
    assert [d["draft"] for d in drafts] == ["step-3.7-flash-mtp-draft"] and drafts[0]["skipped"]
    assert hub_endpoint.stats.requests == 0


def test_all_proposes_for_each_draft_that_moved(release: Release, synthetic_pairs: dict[str, Path]) -> None:
    release.prepare(tag=None)
    pending = release.folder.parent / "pending-draft"
    pending.mkdir()
    (pending / "draft.yaml").write_text(release.recipe.read_text())
    release.api.upload_folder(repo_id=TARGET_REPO, folder_path=str(synthetic_pairs["redundant-target"]))

    argv = ["--artifacts", str(release.folder.parent), "--workdir", str(release.root / "build"), "--json"]
    result = run_cli("watch", "--all", "--propose", *argv)

    assert result.code == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] == [DRAFT]
    assert {d["draft"]: d["skipped"] for d in report["drafts"]} == {"pending-draft": "no committed lock", DRAFT: None}
    assert [(p["branch"], p["pull_request"]) for p in report["proposals"]] == [
        (BRANCH, str(release.root / "build" / DRAFT / "watch" / DRAFT / "pull-request.md"))
    ]


def test_a_hub_that_keeps_failing_exits_3_and_proposes_nothing(
    release: Release, synthetic_pairs: dict[str, Path], hub_endpoint: HubServer
) -> None:
    release.prepare(tag=None)
    readme = (synthetic_pairs["source"] / "README.md").read_bytes() + b"\nReworded.\n"
    _commit_file(release, SOURCE_REPO, "README.md", readme, "Reword")
    hub_endpoint.faults = FaultPlan(error_status=503, error_route="resolve", error_times=10_000)

    result = release.cli("watch", "--propose")

    assert result.code == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "503" in errors[0] and SOURCE_REPO in errors[0] and "Traceback" not in result.stderr
    assert BRANCH not in [head.name for head in release.repo.heads]
    assert not (release.workdir / "watch").exists()


def test_a_proposal_commits_only_its_files_and_leaves_staged_work_and_the_branch_alone(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path / "project")
    repo.config_writer().set_value("user", "name", "Watcher").release()
    repo.config_writer().set_value("user", "email", "watch@example.invalid").release()
    root = Path(repo.working_tree_dir or "")
    (root / "kept.txt").write_text("committed\n")
    (root / "lock.json").write_text("{}\n")
    repo.index.add(["kept.txt", "lock.json"])
    head = repo.index.commit("base")
    (root / "kept.txt").write_text("staged, not proposed\n")
    repo.index.add(["kept.txt"])
    proposal = Proposal("watch/x", "x: re-pin", "Body.", {"lock.json": b'{"commit": "new"}\n', "card.md": b"# Card\n"})

    result = propose(repo, proposal, tmp_path / "out")

    branch = repo.commit("watch/x")
    assert result.commit == branch.hexsha and branch.parents == (head,)
    assert {d.a_path or d.b_path for d in head.diff(branch)} == {"lock.json", "card.md"} == set(result.changed)
    assert _blob(branch, "kept.txt") == b"committed\n" and _blob(branch, "lock.json") == b'{"commit": "new"}\n'
    assert repo.head.commit == head and repo.active_branch.name != "watch/x"
    assert [d.a_path for d in repo.index.diff("HEAD")] == ["kept.txt"]  # the staged change is still staged
    assert (tmp_path / "out" / "pull-request.md").read_text() == "# x: re-pin\n\nBody.\n"
    again = propose(repo, Proposal("watch/x", "x: re-pin", "Body.", {"lock.json": b"{}\n"}), tmp_path / "out")
    assert again.commit is None and again.changed == ()  # HEAD already holds it: nothing to commit
    repo.git.checkout("watch/x")
    with pytest.raises(InputError, match=r"^watch/x: is the checked-out branch$"):
        propose(repo, Proposal("watch/x", "x: re-pin", "Body.", {"lock.json": b"{}\n"}), tmp_path / "out")
