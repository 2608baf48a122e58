"""The offline demo: a whole release rehearsed against the embedded Hub on synthetic weights.

Starts a fresh embedded Hub on loopback, seeds it with a synthetic Step-3.7-shaped BF16 source and
an NVFP4-like target (no MTP, arrays truncated to 45), then publishes `artifacts/demo` through
every stage: the build must reproduce the committed lock and the committed card, the upload is one
commit and one tag. A second publish follows and must change nothing.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import disable_progress_bars

from pipeline.cli.output import Output
from pipeline.errors import CheckFailed
from pipeline.flows.build import build
from pipeline.flows.publish import ReleaseOptions, publish
from pipeline.flows.runner import run_stages
from pipeline.recipe.layout import Workdir
from pipeline.recipe.loader import HubRef, load_recipe
from pipeline.recipe.versions import ReleaseVersion, Version, git_state
from pipeline.rehearsal.hub import HubServer
from pipeline.rehearsal.hub.auth import AccessPolicy
from pipeline.rehearsal.synthetic import SyntheticSpec, write_source, write_target
from pipeline.stages.context import Context

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DEMO_RECIPE = ARTIFACTS / "demo" / "draft.yaml"
DEMO_VERSION = Version(1, 0, 0)
# The demo's Hub is strict and accepts this one write token; it is recognisable so a leak would be easy to spot.
DEMO_TOKEN = "hf_demo_token_for_the_embedded_hub"


def _seed(api: HfApi, ref: HubRef, folder: Path, message: str) -> None:
    """Stage the demo's inputs quietly: their upload bars would read as the release's own."""
    api.create_repo(ref.repo_id, exist_ok=True)
    with disable_progress_bars():
        api.upload_folder(repo_id=ref.repo_id, folder_path=str(folder), commit_message=message)


def _synthetic(root: Path) -> tuple[Path, Path]:
    """The demo's weights, generated once and reused."""
    source, target = root / "source", root / "target"
    if not (source / "config.json").exists():
        write_source(source, SyntheticSpec())
    if not (target / "config.json").exists():
        write_target(target, SyntheticSpec())
    return source, target


def _refresh_artifacts(ctx: Context, today: str) -> None:
    """Rewrite the demo's committed lock, config and card from a fresh build (for maintainers)."""
    build(ctx, today, locked=False)
    run_stages(ctx, ("bench-import", "card"))


def run_demo(root: Path, out: Output, refresh: bool = False) -> int:
    """Run the rehearsal and print what was released; returns the exit code."""
    recipe = load_recipe(DEMO_RECIPE)
    assert isinstance(recipe.source, HubRef) and isinstance(recipe.target, HubRef) and recipe.destination
    constants.HF_HUB_DISABLE_XET = True  # the embedded Hub speaks LFS only; the client checks this at call time
    hub_root = root / "hub"
    shutil.rmtree(hub_root, ignore_errors=True)
    source, target = _synthetic(root / "synthetic")
    checkout = git_state(ARTIFACTS)
    version = ReleaseVersion(DEMO_VERSION, DEMO_VERSION.tag, checkout.git_commit, checkout.dirty)
    today = datetime.now(timezone.utc).date().isoformat()

    with HubServer(hub_root, access=AccessPolicy.from_specs([f"{DEMO_TOKEN}:write"]), cdn=True) as server:
        out.info(f"embedded Hub at {server.url}")
        api = HfApi(endpoint=server.url, token=DEMO_TOKEN, library_name="mtp-draft-pipeline")
        _seed(api, recipe.source, source, "Add the synthetic Step-3.7 BF16 source")
        _seed(api, recipe.target, target, "Add the synthetic NVFP4 target")
        ctx = Context(recipe=recipe, workdir=Workdir(root / "work"), out=out, api=api)
        options = ReleaseOptions(version, dry_run=False, allow_dirty=True)
        if refresh:
            _refresh_artifacts(ctx, today)

        first = publish(ctx, options, today)
        writes_before = server.stats.writes
        second = publish(ctx, options, today)
        second_writes = server.stats.writes - writes_before

        refs = api.list_repo_refs(recipe.destination.repo_id)
        tag_commit = next(t.target_commit for t in refs.tags if t.name == version.hub_tag)
        files = [f for f in first.plan.files if f.action != "delete"]
        lines = [
            f"released {recipe.destination.repo_id} {version.hub_tag} at commit {tag_commit}",
            f"  files: {len(files)} ({sum(f.size for f in files):,d} bytes), uploaded {first.result.uploaded_bytes if first.result else 0:,d} bytes",
            *(f"    {f.path}  {f.size:,d}  sha256 {f.sha256[:16]}" for f in files),
            f"  card: {ctx.artifacts.readme}",
            f"  verify: {ctx.workdir.verify_report}",
            f"second run: {'no commit, no tag, no write request' if second_writes == 0 and second.result and not second.result.created_commit else 'CHANGED SOMETHING'}",
        ]
        if second_writes or (second.result and (second.result.created_commit or second.result.created_tag)):
            raise CheckFailed("demo: the second publish changed the Hub; a release must be idempotent")
        out.result(
            "\n".join(lines),
            {
                "repo": recipe.destination.repo_id,
                "tag": version.hub_tag,
                "commit": tag_commit,
                "first": first.to_json(),
                "second": second.to_json(),
            },
        )
    return 0
