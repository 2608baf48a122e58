"""`build --preflight`: will the build fit on the workdir's filesystem? Reads metadata, writes nothing."""

from __future__ import annotations

from pipeline.checkpoint.disk import refuse_unless_room
from pipeline.cli.output import Output
from pipeline.stages import fetch
from pipeline.stages.context import Context


def preflight(ctx: Context, out: Output) -> int:
    """Plan the draft's shards from the source headers and compare the bytes to write with the free space.

    Exit 0 when they fit; otherwise the same one-line refusal (exit 1) that `build` gives before
    writing anything. The release workflow runs this on a fresh runner before the build.
    """
    check = fetch.preflight(fetch.fetch_inputs(ctx))
    refuse_unless_room(check)
    data = {"draft": ctx.recipe.name, "folder": str(check.folder), "needed_bytes": check.needed, "free_bytes": check.free, "fits": True}
    out.result(f"preflight: {check.describe()}: fits", data)
    return 0
