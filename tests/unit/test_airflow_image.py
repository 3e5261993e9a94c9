"""The Airflow image's recipe, pure: what goes into the build context and when the tag changes."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import os

import pytest

from provision import airflow_image as ai
from provision.build_failures import failure_summary
from provision.builder import LEGACY_DOCKERFILE, legacy_dockerfile
from provision.errors import DropshipError
from provision.inventory import LOCAL_PYTHON_BASE, AirflowBuild, AirflowSettings

PROJECT = Path(__file__).resolve().parents[2]
AIRFLOW_SRC = PROJECT / "app_src" / "airflow"
BASE_ID = "sha256:" + "ab" * 32
PINS = "constraints/airflow-3.3.2-py3.13.txt"
OLDER_PINS = "constraints/airflow-3.3.1-py3.13.txt"


@pytest.fixture
def folder(tmp_path):
    """A copy of app_src/airflow (with a cache file that must not count)."""
    dest = tmp_path / "airflow"
    shutil.copytree(AIRFLOW_SRC, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "dags" / "__pycache__").mkdir()
    (dest / "dags" / "__pycache__" / "helloworld.cpython-313.pyc").write_bytes(b"\0")
    return dest


@pytest.fixture
def cas(tmp_path):
    a, b = tmp_path / "certs" / "corp root.crt", tmp_path / "other" / "corp root.crt"
    for p, body in ((a, "AAA"), (b, "BBB")):
        p.parent.mkdir(parents=True)
        p.write_text(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    return [a, b]


def settings(folder: Path, base: str = LOCAL_PYTHON_BASE, version: str = "3.3.2") -> AirflowSettings:
    return AirflowSettings(version=version, image=None, build=AirflowBuild(folder, base), dags=folder / "dags")


def test_tag_shape_and_stability(folder, cas):
    tag = ai.image_tag(settings(folder), cas, BASE_ID)
    assert re.fullmatch(r"dropship/airflow:3\.3\.2-[0-9a-f]{12}", tag)
    assert ai.image_tag(settings(folder), cas, BASE_ID) == tag
    # the same recipe in another folder is the same image
    other = folder.parent / "copy"
    shutil.copytree(folder, other)
    assert ai.image_tag(settings(other), cas, BASE_ID) == tag


def test_tag_changes_with_what_goes_into_the_image(folder, cas):
    tag = ai.image_tag(settings(folder), cas, BASE_ID)
    seen = {tag}

    def changed(new: str) -> None:
        assert new not in seen
        seen.add(new)

    changed(ai.image_tag(settings(folder), cas, "sha256:" + "cd" * 32))            # base rebuilt
    changed(ai.image_tag(settings(folder, base="python:3.12-slim-bookworm"), cas, BASE_ID))
    changed(ai.image_tag(settings(folder, version="3.3.1"), cas, BASE_ID))
    changed(ai.image_tag(settings(folder), cas[:1], BASE_ID))                       # fewer CAs
    cas[1].write_text(cas[1].read_text().replace("BBB", "CCC"))
    changed(ai.image_tag(settings(folder), cas, BASE_ID))                           # CA content
    (folder / "requirements.txt").write_text("requests==2.32.3\n")
    changed(ai.image_tag(settings(folder), cas, BASE_ID))
    (folder / "Dockerfile").write_text((folder / "Dockerfile").read_text() + "\n# touched\n")
    changed(ai.image_tag(settings(folder), cas, BASE_ID))
    assert ai.image_tag(settings(folder, version="3.3.1"), cas, BASE_ID).startswith("dropship/airflow:3.3.1-")


def test_dags_and_caches_do_not_change_the_tag(folder, cas):
    tag = ai.image_tag(settings(folder), cas, BASE_ID)
    (folder / "dags" / "helloworld.py").write_text("# edited DAG\n")
    (folder / "dags" / "new_dag.py").write_text("# another DAG\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"1")
    (folder / "notes.txt~").write_text("editor backup")
    assert ai.image_tag(settings(folder), cas, BASE_ID) == tag


def test_context_files_exclude_dags_but_keep_nested_folders(folder):
    (folder / "config").mkdir()
    (folder / "config" / "webserver_config.py").write_text("")
    (folder / "config" / "dags").mkdir()                     # only the top-level dags/ is left out
    (folder / "config" / "dags" / "keep.txt").write_text("")
    files = ai.context_files(folder)
    assert {"Dockerfile", "requirements.txt", ".dockerignore", "config/webserver_config.py",
            "config/dags/keep.txt", PINS, OLDER_PINS} == set(files)
    assert not any(rel.startswith("dags/") for rel in files)


def test_assemble_context_has_ca_folder_and_no_dags(folder, cas, tmp_path):
    dest = tmp_path / "ctx"
    dest.mkdir()
    written = ai.assemble_context(folder, cas, dest)
    assert written == sorted([".dockerignore", "Dockerfile", LEGACY_DOCKERFILE, "requirements.txt", PINS, OLDER_PINS,
                              "ca/00-corp-root.crt", "ca/01-corp-root.crt", "tools/uv"])
    assert (dest / "tools" / "uv").read_bytes() == ai.controller_uv().read_bytes()     # the pinned uv, runnable
    assert os.access(dest / "tools" / "uv", os.X_OK)
    assert not (dest / "dags").exists()
    assert (dest / "ca" / "00-corp-root.crt").read_text() == cas[0].read_text()
    assert (dest / "ca" / "01-corp-root.crt").read_text() == cas[1].read_text()
    assert (dest / "Dockerfile").read_bytes() == (folder / "Dockerfile").read_bytes()
    assert (dest / LEGACY_DOCKERFILE).read_text() == legacy_dockerfile((folder / "Dockerfile").read_text())


def test_assemble_context_without_cas_keeps_an_empty_ca_folder(folder, tmp_path):
    dest = tmp_path / "ctx"
    dest.mkdir()
    assert ai.assemble_context(folder, [], dest) == [".dockerignore", "Dockerfile", LEGACY_DOCKERFILE, "ca/.keep",
                                                     OLDER_PINS, PINS, "requirements.txt", "tools/uv"]
    assert [p.name for p in (dest / "ca").iterdir()] == [".keep"]


def test_a_legacy_dockerfile_only_where_it_differs_and_can_be_made(folder, tmp_path):
    plain = "FROM python:3.12-slim\nRUN pip install x\n"
    (folder / "Dockerfile").write_text(plain)
    (tmp_path / "a").mkdir()
    assert LEGACY_DOCKERFILE not in ai.assemble_context(folder, [], tmp_path / "a")
    (folder / "Dockerfile").write_text("FROM python:3.12-slim\nRUN --mount=type=secret,id=t pip install x\n")
    (tmp_path / "b").mkdir()
    assert LEGACY_DOCKERFILE not in ai.assemble_context(folder, [], tmp_path / "b")   # the legacy build says why


def test_a_stray_ca_folder_in_the_source_is_replaced(folder, cas, tmp_path):
    (folder / "ca").mkdir()
    (folder / "ca" / "stale.crt").write_text("old")
    dest = tmp_path / "ctx"
    dest.mkdir()
    ai.assemble_context(folder, cas, dest)
    assert sorted(p.name for p in (dest / "ca").iterdir()) == ["00-corp-root.crt", "01-corp-root.crt"]


def test_ca_names_end_in_crt_and_never_collide(cas, tmp_path):
    pem = tmp_path / "bundle.pem"
    pem.write_text("x")
    names = [n for n, _ in ai.ca_entries([*cas, pem, tmp_path / "we!rd name.crt"])]
    assert names == ["00-corp-root.crt", "01-corp-root.crt", "02-bundle.crt", "03-we-rd-name.crt"]


def test_registry_image_has_nothing_to_build(folder):
    registry = AirflowSettings(version="3.3.2", image="apache/airflow:3.3.2", build=None, dags=None)
    with pytest.raises(DropshipError, match="registry image"):
        ai.image_tag(registry, [], BASE_ID)


def test_build_args():
    args = ("dropship/python-base:trixie", "3.3.2", "dropship/airflow:3.3.2-abc", Path("/tmp/c"))
    tail = ["--build-arg", "BASE_IMAGE=dropship/python-base:trixie", "--build-arg", "AIRFLOW_VERSION=3.3.2",
            "--label", "dropship.airflow=1", "-t", "dropship/airflow:3.3.2-abc", "/tmp/c"]
    assert ai.build_args(*args) == ["build", "--progress=plain", *tail]
    assert ai.build_args(*args, legacy_file=True) == ["build", "--progress=plain", *tail]
    assert ai.build_args(*args, "buildx") == ["buildx", "build", "--progress=plain", "--load", *tail]
    assert ai.build_args(*args, "legacy") == ["build", "--force-rm", *tail]
    assert ai.build_args(*args, "legacy", legacy_file=True) == [
        "build", "--force-rm", "-f", "/tmp/c/Dockerfile.dropship-legacy", *tail]


def test_python_base_recipe():
    tag = ai.python_base_tag()
    assert re.fullmatch(r"dropship/python-base:trixie-[0-9a-f]{12}", tag)
    assert LOCAL_PYTHON_BASE == "dropship/python-base:trixie"
    include = next(a for a in ai.PYTHON_BASE_ARGS if a.startswith("--include="))
    packages = include.split("=", 1)[1].split(",")
    assert {"python3", "python3-venv", "ca-certificates", "curl"} <= set(packages)
    assert not {"systemd", "openssh-server"} & set(packages)


def test_failure_summary_is_one_line_of_the_last_meaningful_lines():
    log = "\n".join([
        "Sending build context to Docker daemon  10kB",
        "Step 5/17 : RUN pip install x",
        " ---> Running in abc",
        "\x1b[91mERROR: Could not find a version that satisfies the requirement apache-airflow==9.9.9",
        "ERROR: No matching distribution found for apache-airflow==9.9.9",
        "\x1b[0mRemoving intermediate container abc",
        "The command '/bin/sh -c pip install x' returned a non-zero code: 1",
    ])
    summary = failure_summary(log, lines=3)
    assert "\n" not in summary
    assert summary == ("ERROR: Could not find a version that satisfies the requirement apache-airflow==9.9.9 | "
                       "ERROR: No matching distribution found for apache-airflow==9.9.9 | "
                       "The command '/bin/sh -c pip install x' returned a non-zero code: 1")
    assert len(failure_summary("x" * 5000, limit=100)) == 101


def test_dockerfile_conventions():
    text = (AIRFLOW_SRC / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0].startswith("ARG BASE_IMAGE") and lines[1] == "FROM ${BASE_IMAGE}"
    assert "ARG AIRFLOW_VERSION=3.3.2" in lines
    assert "ENTRYPOINT" not in text.replace("No ENTRYPOINT", "")
    assert 'CMD ["airflow", "version"]' in lines and "WORKDIR /opt/airflow" in lines
    assert "USER ${AIRFLOW_UID}" in lines and "ARG AIRFLOW_UID=50000" in lines
    assert "COPY ca/ " in text and "update-ca-certificates" in text and "UV_SYSTEM_CERTS=1" in text
    assert "COPY tools/uv /usr/local/bin/uv" in lines and "pip install" not in text.replace("uv pip install", "")
    assert '"apache-airflow[postgres,fab,celery]==${AIRFLOW_VERSION}"' in text
    assert "dags/" in (AIRFLOW_SRC / ".dockerignore").read_text().split()
    # uv's cache: a BuildKit cache mount, used only where it is one (never in a layer of the image)
    assert text.count("RUN --mount=type=cache,id=dropship-uv,target=/var/cache/uv set -eu; \\\n"
                      "    if grep -qs ' /var/cache/uv ' /proc/mounts; then unset UV_NO_CACHE; fi;") == 2
    assert "UV_NO_CACHE=1 UV_CACHE_DIR=/var/cache/uv" in text and "--mount" not in legacy_dockerfile(text)


def test_every_package_of_the_default_image_is_pinned():
    """constraints/airflow-<version>-py3.13.txt (Debian 13's Python) pins all of the image's packages."""
    from provision.inventory import load_inventory

    version = load_inventory(PROJECT / "inventory.yaml")["local"].settings.airflow.version
    pins = [ln for ln in (AIRFLOW_SRC / "constraints" / f"airflow-{version}-py3.13.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert all(re.match(r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+$", ln) for ln in pins), pins
    assert f"apache-airflow=={version}" in pins and f"apache-airflow-core=={version}" in pins
    assert len(pins) > 100 and not any(ln.lower().startswith("pip==") for ln in pins)
    text = (AIRFLOW_SRC / "Dockerfile").read_text()
    assert "COPY constraints/ " in text and text.count("-c /opt/airflow-constraints.txt") == 2

