"""Test code: a fake `docker run` for the benchmark workflow's sweep step.

It runs the container's entrypoint on this machine instead of in an image: `-v HOST:CONTAINER`
mounts become path rewrites, `-w` the working folder, and `--entrypoint sh IMAGE ARGS...` runs
`sh ARGS...`. GPU and IPC options are accepted and ignored. Whatever `vllm` is first on PATH
(tests/fake_vllm_sweep.py in the tests) plays the image's vLLM.
"""

from __future__ import annotations

import os
import subprocess
import sys

IGNORED_WITH_VALUE = {"--gpus"}
IGNORED_FLAGS = {"--rm", "--ipc=host"}


def main(argv: list[str]) -> int:
    if argv[:1] != ["run"]:
        print(f"fake docker: only `docker run` is implemented, not {argv[:1]}", file=sys.stderr)
        return 2
    mounts: list[tuple[str, str]] = []
    workdir, entrypoint = "/", None
    args = argv[1:]
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag == "-v":
            host, container = args.pop(0).split(":", 1)
            mounts.append((container, host))
        elif flag == "-w":
            workdir = args.pop(0)
        elif flag == "--entrypoint":
            entrypoint = args.pop(0)
        elif flag in IGNORED_WITH_VALUE:
            args.pop(0)
        elif flag not in IGNORED_FLAGS:
            print(f"fake docker: unknown option {flag}", file=sys.stderr)
            return 2
    image, command = args[0], args[1:]

    def host_path(word: str) -> str:
        for container, host in sorted(mounts, key=lambda mount: -len(mount[0])):
            if word == container or word.startswith(container + "/"):
                return host + word[len(container) :]
        return word

    assert entrypoint is not None and image, argv
    os.makedirs(host_path(workdir), exist_ok=True)
    return subprocess.run([entrypoint, *map(host_path, command)], cwd=host_path(workdir)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
