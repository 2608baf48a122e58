"""publish: every stage in order, then one verified, versioned release on the Hub.

`publish` rebuilds (unchanged stages are skipped), reproduces the committed lock, re-inspects the
target, imports benchmarks, checks the card and hands over to `release`, which refuses what must
not be published, plans the upload against the destination's head and (unless dry-run) applies
it: one commit, one tag. A stale head (HTTP 412) is re-planned once; a second one stops.
A review plan (`from_lock`) needs no weights: the draft's files are planned from the committed
lock, and it can only dry-run. `summary_markdown` renders a report for a CI job summary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError

from pipeline import __version__
from pipeline.card.markdown import escape_cell, fenced
from pipeline.checkpoint.files import atomic_write_bytes
from pipeline.errors import CheckFailed, InputError
from pipeline.flows.runner import BUILD_STAGES, run_stages
from pipeline.flows.subjects import check_attested
from pipeline.recipe.layout import LOCK_FILE
from pipeline.recipe.lock import build_lock, differences, load_lock
from pipeline.recipe.versions import ReleaseVersion
from pipeline.remote.calls import call
from pipeline.remote.errors import BranchMoved
from pipeline.remote.metadata import validate_card
from pipeline.stages import card
from pipeline.stages.context import Context
from pipeline.stages.upload import (
    LockedFile,
    ReleaseResult,
    UploadPlan,
    apply_plan,
    load_plan_files,
    locked_draft_files,
    plan_upload,
    verified_draft_files,
)

REPUBLISHABLE_VERDICTS = ("needed",)
# GitHub refuses a step summary over 1 MiB ("supports content up to a size of 1024k").
SUMMARY_LIMIT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReleaseOptions:
    version: ReleaseVersion
    dry_run: bool
    force: bool = False
    allow_dirty: bool = False  # rehearsals against a throwaway Hub (the demo) may publish a dirty tree
    from_lock: bool = False  # plan the draft's files from the committed lock, without weights (dry-run only)
    attested: Path | None = None  # `sha256  path` lines the release's files must equal exactly (flows/subjects.py)


@dataclass(frozen=True)
class ReleaseReport:
    plan: UploadPlan
    card_diff: str
    result: ReleaseResult | None
    replanned: bool
    from_lock: bool = False

    def to_json(self) -> dict[str, Any]:
        document = {"plan": self.plan.to_json(), "card_diff": self.card_diff, "replanned": self.replanned, "from_lock": self.from_lock}
        if self.result is not None:
            document["result"] = {
                "commit": self.result.commit,
                "created_commit": self.result.created_commit,
                "created_tag": self.result.created_tag,
                "uploaded_bytes": self.result.uploaded_bytes,
            }
        return document


def _destination(ctx: Context) -> str:
    if ctx.recipe.destination is None:
        raise InputError(f"{ctx.recipe.path}: destination: is required to upload", hint="add destination: {repo: org/name}")
    return ctx.recipe.destination.repo_id


def _committed_lock(ctx: Context) -> dict[str, Any]:
    lock_path = ctx.artifacts.lock
    committed = load_lock(lock_path)
    if committed is None:
        raise CheckFailed(
            f"{lock_path}: missing; a release needs a committed lock", hint=f"run: python -m pipeline build --draft {ctx.recipe.name}"
        )
    return committed


def _check_lock(ctx: Context) -> dict[str, Any]:
    """The committed lock must be what this build produces (inspect aside: it is re-checked at publish)."""
    lock_path = ctx.artifacts.lock
    committed = _committed_lock(ctx)
    diff = differences(committed, build_lock(ctx.recipe, ctx.workdir, committed.get("inspect"), ctx.source("source")))
    if diff:
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        raise CheckFailed(f"{lock_path}: the build does not reproduce the lock at {diff[0]}{more}")
    return committed


def _verdict_gate(ctx: Context, lock: dict[str, Any], force: bool) -> str | None:
    """Refuse a draft inspection found redundant or incompatible; return the verdict when forced past it."""
    inspect = lock.get("inspect") or {}
    verdict = inspect.get("verdict")
    if verdict is None or verdict in REPUBLISHABLE_VERDICTS:
        return None
    if not force:
        raise CheckFailed(
            f"inspect: the draft is {verdict}: {inspect.get('summary', '')}",
            hint="publish --force releases it anyway, and the card says so",
        )
    ctx.out.warn(f"publishing although inspection found the draft {verdict}")
    return str(verdict)


def _card_text(ctx: Context, forced_verdict: str | None, dry_run: bool) -> Path:
    """The README.md to upload: the committed card, which must equal a fresh render."""
    inputs = card.inputs_for(ctx, forced_verdict)
    fresh = card.render_card(inputs)
    committed = inputs.readme.read_text(encoding="utf-8") if inputs.readme.exists() else ""
    if fresh == committed:
        return inputs.readme
    if not (dry_run or forced_verdict):
        raise CheckFailed(
            f"{inputs.readme}: differs from a fresh render",
            hint=f"run: python -m pipeline card --draft {ctx.recipe.name}, review and commit",
        )
    if not forced_verdict:
        ctx.out.warn(f"{inputs.readme} differs from a fresh render; the plan uses the fresh render")
    rendered = ctx.workdir.root / "card" / card.CARD_FILE
    atomic_write_bytes(rendered, fresh.encode("utf-8"))
    return rendered


def _benchmark_files(ctx: Context) -> dict[str, Path]:
    if ctx.recipe.benchmarks is None:
        return {}
    files = {f"benchmarks/{p.name}": p for p in sorted(ctx.workdir.benchmarks.glob("*")) if p.is_file() and not p.name.startswith(".")}
    raw = ctx.recipe.benchmarks_folder
    files.update({f"benchmarks/raw/{p.relative_to(raw).as_posix()}": p for p in sorted(raw.rglob("*")) if p.is_file()})
    return files


def release_files(ctx: Context, readme: Path, locked: dict[str, Any] | None = None) -> dict[str, Path | LockedFile]:
    """Everything one release uploads: the verified draft, its card, lock, verify report and benchmarks.

    With `locked`, the draft's files come from that lock instead, and the verify report, which
    only a build writes, is left out.
    """
    committed: dict[str, Path] = {card.CARD_FILE: readme, LOCK_FILE: ctx.artifacts.lock}
    if locked is not None:
        return load_plan_files(locked_draft_files(locked), committed, _benchmark_files(ctx))
    return load_plan_files(
        verified_draft_files(ctx.workdir.draft, ctx.workdir.verify_report),
        {**committed, "verify.json": ctx.workdir.verify_report},
        _benchmark_files(ctx),
    )


def _messages(ctx: Context, lock: dict[str, Any], version: ReleaseVersion) -> tuple[str, str]:
    source = lock.get("source") or {}
    origin = f"{source.get('repo', 'a local folder')}@{(source.get('commit') or 'unresolved')[:12]}"
    summary = f"Release {version.label} of {ctx.recipe.name}: MTP draft from {origin}"
    description = "\n".join(
        [
            f"draft: {ctx.recipe.name}",
            f"version: {version.label}",
            f"source: {source.get('repo', 'local')}@{source.get('commit')}",
            f"target: {(lock.get('target') or {}).get('repo', 'local')}@{(lock.get('target') or {}).get('commit')}",
            f"tool: mtp-draft-pipeline {__version__} (git {version.git_commit})",
        ]
    )
    return summary, description


def _remote_card_diff(ctx: Context, plan: UploadPlan, readme: Path) -> str:
    entry = next((f for f in plan.files if f.path == card.CARD_FILE), None)
    if entry is None or entry.action == "unchanged":
        return ""
    old = ""
    if entry.action == "change" and plan.parent_commit:
        try:
            path = call(
                "read the published card",
                lambda: hf_hub_download(
                    plan.destination, card.CARD_FILE, revision=plan.parent_commit, endpoint=ctx.api.endpoint, token=ctx.api.token
                ),
                ctx.recipe.retries,
                repo=plan.destination,
                passthrough=(RemoteEntryNotFoundError,),
            )
            old = Path(path).read_text(encoding="utf-8")
        except RemoteEntryNotFoundError:
            old = ""
    return card.unified_diff(old, readme.read_text(encoding="utf-8"), f"hub/{card.CARD_FILE}", f"release/{card.CARD_FILE}")


def _release_gate(ctx: Context, options: ReleaseOptions) -> str:
    """Refuse, before any work, a release that cannot happen; returns the destination repo."""
    destination = _destination(ctx)
    if options.from_lock and not options.dry_run:
        raise InputError("a plan from the lock uploads nothing: it needs --dry-run")
    version = options.version
    if not options.dry_run:
        if not version.is_release:
            raise CheckFailed(
                f"untagged checkout ({version.label}): a dev version can only --dry-run",
                hint=f"tag the release: git tag {ctx.recipe.name}/v1.0.0",
            )
        if version.dirty and not options.allow_dirty:
            raise CheckFailed("the git tree has uncommitted changes; a release publishes only committed, reviewed files")
        notes = ctx.recipe.card.release_notes
        if notes and version.label not in {note.version for note in notes}:
            raise CheckFailed(
                f"{ctx.recipe.path}: card.release_notes: no entry for {version.label}; the card's changelog would not mention this release",
                hint=f"add {{version: {version.label}, notes: ...}} to card.release_notes, render the card and commit, then tag again",
            )
    return destination


def release(ctx: Context, options: ReleaseOptions, lock: dict[str, Any] | None = None, forced_verdict: str | None = None) -> ReleaseReport:
    """Refuse what must not be published, plan the upload, and apply it unless dry-run."""
    destination = _release_gate(ctx, options)
    if lock is None:
        lock = _committed_lock(ctx) if options.from_lock else _check_lock(ctx)
    if forced_verdict is None:
        forced_verdict = _verdict_gate(ctx, lock, options.force)
    version = options.version
    readme = _card_text(ctx, forced_verdict, options.dry_run)
    files = release_files(ctx, readme, lock if options.from_lock else None)
    message, description = _messages(ctx, lock, version)

    def plan() -> UploadPlan:
        return plan_upload(ctx.api, destination, files, version.label, version.hub_tag, message, description, ctx.recipe.retries)

    current = plan()
    if any(f.path == card.CARD_FILE and f.action in ("add", "change") for f in current.files):
        validate_card(ctx.api, readme, ctx.recipe.retries, destination)
    if options.attested is not None:
        check_attested(current, options.attested)
    card_diff = _remote_card_diff(ctx, current, readme)
    if options.dry_run:
        return ReleaseReport(current, card_diff, None, False, options.from_lock)
    try:
        return ReleaseReport(current, card_diff, apply_plan(ctx.api, current, ctx.recipe.retries), False)
    except BranchMoved:
        ctx.out.warn(f"{destination} moved while publishing; planning again against its new head")
    current = plan()
    if options.attested is not None:
        check_attested(current, options.attested)
    try:
        return ReleaseReport(current, card_diff, apply_plan(ctx.api, current, ctx.recipe.retries), True)
    except BranchMoved:
        raise CheckFailed(
            f"{destination}: the branch moved twice while publishing; nothing was overwritten", hint="run publish again"
        ) from None


def publish(ctx: Context, options: ReleaseOptions, today: str) -> ReleaseReport:
    """All stages in order, then the release."""
    from pipeline.flows.inspect import inspect_recipe

    _release_gate(ctx, options)  # an untagged or dirty checkout is refused before a byte is fetched
    run_stages(ctx, BUILD_STAGES)
    lock = _check_lock(ctx)
    # The build reads the locked commits; the need for the draft is judged on the target as it is now.
    report = inspect_recipe(dataclasses.replace(ctx, pins={}, opened={}), today)
    locked_inspect = lock.get("inspect") or {}
    if locked_inspect.get("target_commit") not in (None, report.target_commit):
        ctx.out.warn(f"the target moved since the lock was written ({locked_inspect.get('target_commit')} -> {report.target_commit})")
    lock = {**lock, "inspect": {**locked_inspect, "verdict": report.verdict, "summary": report.summary_line()}}
    forced_verdict = _verdict_gate(ctx, lock, options.force)
    run_stages(ctx, ("bench-import",))
    return release(ctx, options, lock, forced_verdict)


FROM_LOCK_NOTE = "planned from draft.lock.json without weights; the release build adds verify.json"


def describe(report: ReleaseReport, dry_run: bool) -> str:
    """The plan and outcome for people."""
    lines = [report.plan.human()]
    if report.from_lock:
        lines.append(FROM_LOCK_NOTE)
    if report.card_diff:
        lines += ["", "card diff against the Hub:", report.card_diff.rstrip("\n")]
    outcome = _outcome(report, dry_run)
    if outcome:
        lines.append(outcome)
    return "\n".join(lines)


def _outcome(report: ReleaseReport, dry_run: bool) -> str:
    if dry_run:
        return "dry run: nothing was written to the Hub"
    if report.result is None:
        return ""
    result = report.result
    commit = "no new commit (nothing changed)" if not result.created_commit else f"commit {result.commit}"
    tag = f"tag {report.plan.tag} created" if result.created_tag else f"tag {report.plan.tag or '(none)'} unchanged"
    return f"published: {commit}; {tag}; {result.uploaded_bytes:,d} bytes uploaded"


def summary_markdown(draft: str, report: ReleaseReport, dry_run: bool, limit: int = SUMMARY_LIMIT_BYTES) -> str:
    """The plan, the outcome and the card diff as Markdown for a CI job summary, at most `limit` bytes.

    The card diff is what gets cut when the whole would not fit; the job log keeps all of it.
    """
    plan = report.plan
    lines = [
        f"### {'Release plan' if dry_run else 'Release'}: {escape_cell(draft)} {escape_cell(plan.version)}",
        "",
        f"Destination `{plan.destination}`{'' if plan.repo_exists else ' (will be created)'}; "
        f"tag {f'`{plan.tag}` ({plan.tag_state})' if plan.tag else 'none (dev version)'}; "
        f"parent commit {f'`{plan.parent_commit}`' if plan.parent_commit else 'none'}.",
        "",
        "| Action | File | Size (bytes) | sha256 |",
        "|---|---|---:|---|",
        *(f"| {f.action} | {escape_cell(f.path)} | {f.size:,d} | `{f.sha256[:16]}` |" for f in plan.files),
        "",
        f"{len(plan.changed)} file(s) to change, {plan.upload_bytes:,d} bytes to upload; {_outcome(report, dry_run)}.",
    ]
    if report.from_lock:
        lines += ["", f"Note: {FROM_LOCK_NOTE}."]
    head = "\n".join(lines) + "\n"
    if not report.card_diff:
        return _cut(head + "\nThe card is unchanged on the Hub.\n", limit)
    title = "\n<details><summary>Card diff against the Hub</summary>\n\n"
    tail = "\n</details>\n"
    room = limit - len((head + title + tail).encode()) - 200  # the fence and the cut note
    diff = report.card_diff
    if len(diff.encode()) > room:
        kept = diff.encode()[: max(room, 0)].decode(errors="ignore").rpartition("\n")[0]
        diff = f"{kept}\n... cut: {len(diff.encode()) - len(kept.encode()):,d} more bytes are in the job log\n"
    return _cut(head + title + fenced(diff, "diff") + tail, limit)


def _cut(text: str, limit: int) -> str:
    """`text`, or as many whole lines of it as fit in `limit` bytes (a last resort for huge plans)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    note = "\n... cut to fit the job summary; the job log has everything\n"
    return data[: max(limit - len(note.encode()), 0)].decode(errors="ignore").rpartition("\n")[0] + note
