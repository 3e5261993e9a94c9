"""Which Docker builder builds, and the Dockerfile the legacy builder gets (pure parts, fake CLIs)."""
from __future__ import annotations

import os

import pytest

from provision.builder import (BUILDKIT, BUILDX, LEGACY, build_command, client_version, docker_clis, find_builder,
                               has_builtin_buildkit, legacy_dockerfile)
from provision.errors import DropshipError


def test_legacy_dockerfile_drops_only_cache_mounts():
    text = ("FROM x\n"
            "RUN --mount=type=cache,id=uv,target=/root/.cache/uv set -eu; \\\n    uv pip install a\n"
            "run  --network=host --mount=target=/c,type=cache,sharing=locked  make\n"
            "RUN echo --mount=type=cache,target=/x\n"
            "# RUN --mount=type=cache,target=/y\n")
    assert legacy_dockerfile(text) == ("FROM x\n"
                                       "RUN set -eu; \\\n    uv pip install a\n"
                                       "run  --network=host make\n"
                                       "RUN echo --mount=type=cache,target=/x\n"
                                       "# RUN --mount=type=cache,target=/y\n")
    plain = "FROM x\nRUN pip install a\n"
    assert legacy_dockerfile(plain) == plain


@pytest.mark.parametrize("flag", ["--mount=type=secret,id=token", "--mount=type=ssh", "--mount=target=/src",
                                  "--mount=type=bind,source=.,target=/src"])
def test_a_mount_that_changes_what_a_step_sees_needs_buildkit(flag):
    with pytest.raises(DropshipError) as info:
        legacy_dockerfile(f"FROM x\n\nRUN {flag} make\n", "app_src/airflow/Dockerfile")
    assert str(info.value).startswith(f"app_src/airflow/Dockerfile line 3: RUN {flag} needs BuildKit")
    assert "docker-buildx" in info.value.fix


def test_client_version_and_builtin_buildkit():
    assert client_version("Docker version 20.10.24+dfsg1, build 297e128") == (20, 10)
    assert client_version("Docker version 28.2.2, build e6534b4") == (28, 2)
    assert client_version("bash: docker: command not found") is None
    assert [has_builtin_buildkit(v) for v in [(18, 6), (18, 9), (20, 10), (22, 6), (23, 0), (28, 2), None]] == [
        False, True, True, True, False, False, False]


def fake_cli(folder, name="docker"):
    folder.mkdir(parents=True, exist_ok=True)
    cli = folder / name
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    return str(cli)


def test_the_first_cli_that_builds_with_buildkit(tmp_path):
    new, old = fake_cli(tmp_path / "local"), fake_cli(tmp_path / "usr")
    path = os.pathsep.join([str(tmp_path / "local"), str(tmp_path / "none"), str(tmp_path / "usr"),
                            str(tmp_path / "local")])
    assert docker_clis(path) == [new, old]
    versions = {new: "Docker version 28.2.2, build e6534b4", old: "Docker version 20.10.24+dfsg1, build 297e128"}
    asked = []

    def run(buildx):
        def answer(argv):
            asked.append(argv)
            if argv[1:] == ["--version"]:
                return 0, versions[argv[0]]
            return (0, "github.com/docker/buildx v0.13.1") if buildx else (1, "")
        return answer

    assert find_builder(path, {}, run(buildx=False)) == (old, BUILDKIT)      # 28 without buildx: the next one
    assert asked == [[new, "--version"], [new, "buildx", "version"], [old, "--version"]]
    assert find_builder(path, {}, run(buildx=True)) == (new, BUILDX)         # 28 with buildx
    assert find_builder(path, {"DOCKER_BUILDKIT": "0"}, run(buildx=True)) == ("docker", LEGACY)
    assert find_builder(str(tmp_path / "local"), {}, run(buildx=False)) == ("docker", LEGACY)
    assert find_builder(str(tmp_path / "none"), {}, run(buildx=True)) == ("docker", LEGACY)


def test_build_command():
    assert build_command(LEGACY) == ["build", "--force-rm"]
    assert build_command(BUILDKIT) == ["build", "--progress=plain"]
    assert build_command(BUILDX) == ["buildx", "build", "--progress=plain", "--load"]   # --load: see builder
