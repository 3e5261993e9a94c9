"""Which Docker builder builds an image, and the Dockerfile the legacy builder gets.

BuildKit is used wherever the docker CLI offers it: a CLI older than 23 has it built in
(``BUILDKIT``), a newer one needs the buildx plugin (``BUILDX``: ``docker buildx build --load``;
without ``--load`` a builder of buildx's docker-container driver would keep the image to itself).
BuildKit keeps caches between builds (``RUN --mount=type=cache``), such as uv's downloads. The
legacy builder gets the Dockerfile with its cache mounts taken out: a cache changes how fast a step
runs, never what it makes. Any other mount (secret, ssh, bind) changes what a step sees, so a
Dockerfile with one needs BuildKit. ``DOCKER_BUILDKIT=0`` in the environment asks for the legacy
builder, as it does for docker itself.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Callable

from .errors import DropshipError

LEGACY_DOCKERFILE = "Dockerfile.dropship-legacy"     # written next to the Dockerfile in a build context
LEGACY, BUILDKIT, BUILDX = "legacy", "buildkit", "buildx"     # how a docker CLI builds
BUILDX_FIX = "install Docker's buildx plugin (Debian and Ubuntu: apt-get install docker-buildx)"
_RUN = re.compile(r"^(\s*RUN\s+)((?:--\S+\s+)*)", re.I)
_VERSION = re.compile(r"version (\d+)\.(\d+)", re.I)


def legacy_dockerfile(text: str, name: str = "Dockerfile") -> str:
    """``text`` without the ``--mount=type=cache,…`` flags of its ``RUN`` instructions (pure).

    Raises DropshipError naming ``name``, the line and the flag for a mount of another type."""
    out = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        m = _RUN.match(line)
        if m and m.group(2):
            kept = []
            for flag in m.group(2).split():
                if not flag.startswith("--mount="):
                    kept.append(flag)
                elif "type=cache" not in flag[len("--mount="):].split(","):
                    raise DropshipError(f"{name} line {number}: RUN {flag} needs BuildKit, which this docker "
                                        "does not have", BUILDX_FIX)
            line = m.group(1) + "".join(f + " " for f in kept) + line[m.end():]
        out.append(line)
    return "".join(out)


def client_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from ``docker --version``'s ``Docker version 20.10.24+dfsg1, build …`` (pure)."""
    m = _VERSION.search(text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def has_builtin_buildkit(version: tuple[int, int] | None) -> bool:
    """A CLI from 18.09 to 22.x builds with BuildKit itself; 23 on hands it to buildx (pure)."""
    return version is not None and (18, 9) <= version < (23, 0)


def docker_clis(path: str) -> list[str]:
    """Every ``docker`` executable on ``path``, first one first, each file once."""
    seen, out = set(), []
    for folder in path.split(os.pathsep):
        cli = Path(folder or ".") / "docker"
        if cli.is_file() and os.access(cli, os.X_OK) and cli.resolve() not in seen:
            seen.add(cli.resolve())
            out.append(str(cli))
    return out


def build_command(kind: str) -> list[str]:
    """The docker subcommand and flags that build with a builder ``kind`` (pure)."""
    return {LEGACY: ["build", "--force-rm"], BUILDKIT: ["build", "--progress=plain"],
            BUILDX: ["buildx", "build", "--progress=plain", "--load"]}[kind]


def find_builder(path: str, environ: dict[str, str],
                 run: Callable[[list[str]], tuple[int, str]]) -> tuple[str, str]:
    """(docker CLI, builder kind): the first CLI on ``path`` that builds with BuildKit, else
    ``("docker", LEGACY)``. ``run(argv)`` gives (exit status, stdout)."""
    if environ.get("DOCKER_BUILDKIT", "").strip().lower() in ("0", "false"):
        return "docker", LEGACY
    for cli in docker_clis(path):
        rc, out = run([cli, "--version"])
        version = client_version(out) if rc == 0 else None
        if has_builtin_buildkit(version):
            return cli, BUILDKIT
        if version and run([cli, "buildx", "version"])[0] == 0:
            return cli, BUILDX
    return "docker", LEGACY


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return 1, ""
    return proc.returncode, proc.stdout


@functools.lru_cache(maxsize=1)
def local_builder() -> tuple[str, str]:
    """``find_builder`` for this machine (asked once per process)."""
    return find_builder(os.environ.get("PATH", os.defpath), dict(os.environ), _run)
