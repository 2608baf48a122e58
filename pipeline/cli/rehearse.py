"""Handlers of the rehearsal commands: the offline demo, the embedded Hub and synthetic checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.output import Output
from pipeline.errors import InputError
from pipeline.families import FAMILIES


def demo_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.rehearsal.demo import run_demo

    return run_demo(Path(args.root), out, refresh=args.refresh_artifacts)


def demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default="build/demo",
        metavar="DIR",
        help="where the demo keeps its Hub, synthetic weights and workdir (default: %(default)s)",
    )
    parser.add_argument(
        "--refresh-artifacts", action="store_true", help="rewrite artifacts/demo's lock, config and card from this run before publishing"
    )


def hub_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.rehearsal.hub import serve
    from pipeline.rehearsal.hub.access_options import access_from_options

    if args.hub_command != "serve":
        raise InputError("hub: the only action is 'serve'")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.public:
        raise InputError(f"--host {args.host}: the embedded Hub listens on loopback unless --public is given")
    access, publishers = access_from_options(args.token, args.tokens_file, args.trusted_publisher, args.oidc_key_file)

    def ready(url: str) -> None:
        mode = (
            f"strict: {len(access.tokens)} token(s), {len(publishers.publishers)} publisher(s)"
            if access.strict
            else "open: no token needed"
        )
        out.info(f"embedded Hub serving {Path(args.root).resolve()} at {url} ({mode})")
        out.info(f"use it with: HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1 hf upload ... (Ctrl-C stops it)")

    serve(Path(args.root), args.host, args.port, on_ready=ready, access=access, publishers=publishers)
    return 0


def hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hub_command", metavar="serve", choices=["serve"], help="run the embedded Hub until interrupted")
    parser.add_argument("--root", required=True, metavar="DIR", help="folder holding the repos (created if missing; kept between runs)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed on start)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--public", action="store_true", help="allow a non-loopback --host")
    strict = parser.add_argument_group("strict mode (any of these makes the Hub refuse what the real Hub refuses)")
    strict.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="VALUE:ROLE[:REPO...]",
        help="accept this token with role read or write, limited to the listed repos if any (repeatable)",
    )
    strict.add_argument("--tokens-file", metavar="PATH", help="tokens as VALUE:ROLE[:REPO...], one a line (keeps them out of ps)")
    strict.add_argument(
        "--trusted-publisher",
        action="append",
        default=[],
        metavar="'REPO CLAIM=VALUE...'",
        help="exchange id tokens whose claims match exactly for a 1-hour write token on REPO, "
        "e.g. 'org/draft sub=repo:org/tool:environment:release' (repeatable; needs --oidc-key-file)",
    )
    strict.add_argument("--oidc-key-file", metavar="PATH", help="the HS256 key id tokens are signed with (see pipeline.rehearsal.hub.oidc)")


def synth_command(args: argparse.Namespace, out: Output) -> int:
    from pipeline.families import FAMILIES
    from pipeline.rehearsal.synthetic import TARGET_VARIANTS, SyntheticSpec, write_source, write_target
    from pipeline.rehearsal.synthetic_families import FamilySpec, write_family_source, write_family_target

    if args.family not in FAMILIES:
        raise InputError(f"--family: must be one of {', '.join(FAMILIES)}")
    if args.target_variant not in TARGET_VARIANTS:
        raise InputError(f"--target-variant: must be one of {', '.join(TARGET_VARIANTS)}")
    root = Path(args.out)
    if args.family == "step3p7":
        spec = SyntheticSpec.real_shapes if args.real_shapes else SyntheticSpec
        write_source(root / "source", spec(seed=args.seed, shards=args.shards))
        write_target(root / "target", spec(seed=args.seed, shards=args.shards), args.target_variant)
    else:
        if args.real_shapes:
            raise InputError("--real-shapes: only the step3p7 generator knows real tensor sizes")
        family_spec = FamilySpec(seed=args.seed, shards=args.shards)
        write_family_source(root / "source", args.family, family_spec)
        write_family_target(root / "target", args.family, family_spec, args.target_variant)
    out.result(f"wrote {root / 'source'} and {root / 'target'}", {"source": str(root / "source"), "target": str(root / "target")})
    return 0


def synth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write source/ and target/ into")
    parser.add_argument(
        "--family",
        default="step3p7",
        metavar="NAME",
        help=f"model family of the synthetic checkpoint: {', '.join(FAMILIES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--target-variant",
        default="no-mtp",
        metavar="KIND",
        help="no-mtp, mtp-shard, incomplete-mtp, other-vocab or other-hidden (default: %(default)s)",
    )
    parser.add_argument("--real-shapes", action="store_true", help="the released tensor sizes (about 6 GB of MTP tensors)")
    parser.add_argument("--shards", type=int, default=4, help="number of source shards (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for bytes and shard layout (default: %(default)s)")
