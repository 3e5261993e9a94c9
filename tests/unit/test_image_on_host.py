"""Getting the Airflow image onto a host, with a fake session: ship, pull, or build there."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from dataclasses import replace
from types import SimpleNamespace

import pytest

from provision import airflow_image as ai
from provision import image_on_host as ih
from provision.errors import RemoteError
from provision.inventory import AirflowBuild, AirflowSettings
from provision.transport.ssh import Result

AIRFLOW_SRC = Path(__file__).resolve().parents[2] / "app_src" / "airflow"


class FakeSession:
    """Answers ``docker image inspect`` from ``images``; keeps every command and stream it gets."""

    def __init__(self, user: str = "deploy", images=(), build_rc: int = 0, build_out: str = ""):
        self.user, self.name = user, "web-1"
        self.target = SimpleNamespace(address="203.0.113.7")
        self.images, self.build_rc, self.build_out = set(images), build_rc, build_out
        self.commands: list[str] = []
        self.streams: list[tuple[str, bytes]] = []

    def run(self, command, timeout=None):
        self.commands.append(command)
        if "docker image inspect" in command:
            return Result(0 if any(i in command for i in self.images) else 1, "", "")
        if "docker pull" in command:
            self.images.add(command.split()[-1].strip("'"))
            return Result(0, "", "")
        return Result(0, "", "")

    def send_stream(self, command, chunks, timeout=None):
        self.streams.append((command, b"".join(chunks)))
        return Result(0, "", "")

    def script(self, text, timeout=None, on_line=None):
        self.commands.append(text)
        return Result(self.build_rc, self.build_out, "")


class Recorder:
    def __init__(self):
        self.steps = []

    def step(self, host, status, label, seconds=None):
        self.steps.append((host, status, label))


def host_env(base: str = "python:3.12-slim-bookworm", version: str = "3.3.1"):
    settings = AirflowSettings(version=version, image=None, build=AirflowBuild(AIRFLOW_SRC, base, "host"),
                               dags=AIRFLOW_SRC / "dags")
    return SimpleNamespace(name="staging", settings=SimpleNamespace(airflow=settings), ca_certificates=())


def test_docker_commands_on_hosts_go_through_sudo_unless_root():
    assert ih.sudo(FakeSession("deploy"), "docker load") == "sudo -n docker load"
    assert ih.sudo(FakeSession("root"), "docker load") == "docker load"


def test_shipping_compresses_only_for_hosts_elsewhere():
    assert ih.is_loopback("127.0.0.1") and ih.is_loopback("127.0.0.5") and ih.is_loopback("::1")
    assert ih.is_loopback("localhost")
    assert not ih.is_loopback("203.0.113.7") and not ih.is_loopback("db.example.com")
    assert ih.save_commands("t:1", compress=False) == [["docker", "save", "t:1"]]
    assert ih.save_commands("t:1", compress=True) == [["docker", "save", "t:1"], ["gzip", "-1", "-c"]]


def test_host_build_plan_of_a_registry_base():
    plan = ai.plan_host_build(host_env())
    assert plan.tag.startswith("dropship/airflow:3.3.1-") and plan.version == "3.3.1"
    assert (plan.base, plan.ship_base) == ("python:3.12-slim-bookworm", False)
    assert plan.tag == ai.image_tag(host_env().settings.airflow, (), "")       # the base's name, not its id
    assert ai.plan_host_build(host_env(version="3.3.2")).tag != plan.tag
    with tarfile.open(fileobj=io.BytesIO(plan.context), mode="r:gz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
    assert {"Dockerfile", "requirements.txt", "ca/.keep"} <= names
    assert not any(n.startswith("dags") for n in names)


def test_build_on_host_pulls_the_base_streams_the_context_and_builds():
    plan = ai.plan_host_build(host_env())
    session, progress = FakeSession(), Recorder()
    assert ih.build_on_host(session, plan, progress) is True
    assert any("docker pull -q python:3.12-slim-bookworm" in c for c in session.commands)
    (command, data), = session.streams
    assert "tar -xzf - -C /var/tmp/dropship-airflow-build-" in command and data == plan.context
    script = session.commands[-1]
    buildx = "flock /var/tmp/dropship-airflow-build.lock env DOCKER_BUILDKIT=1 docker buildx build --progress=plain --load "
    assert buildx in script
    assert f"-f /var/tmp/dropship-airflow-build-{plan.tag.rsplit('-', 1)[1]}/Dockerfile.dropship-legacy" in script
    assert f"-t {plan.tag}" in script and "--build-arg AIRFLOW_VERSION=3.3.1" in script
    assert "--build-arg BASE_IMAGE=python:3.12-slim-bookworm" in script
    assert [s[2].split(" (")[0] for s in progress.steps] == ["pulled image python:3.12-slim-bookworm",
                                                              f"built image {plan.tag} on the host"]


def test_host_build_script_uses_buildkit_where_the_host_has_buildx():
    plan = ai.HostBuild("dropship/airflow:3.3.2-abc", "3.3.2", "python:3.12-slim", False, b"", legacy_file=True)
    tail = ("--build-arg BASE_IMAGE=python:3.12-slim --build-arg AIRFLOW_VERSION=3.3.2 --label dropship.airflow=1 "
            "-t dropship/airflow:3.3.2-abc '/var/tmp/c x' > /var/tmp/c.log 2>&1")
    lock = "flock /var/tmp/dropship-airflow-build.lock env"
    assert ih.host_build_script(plan, "/var/tmp/c x", "/var/tmp/c.log") == f"""
if docker buildx version >/dev/null 2>&1; then
  {lock} DOCKER_BUILDKIT=1 docker buildx build --progress=plain --load {tail}
else
  {lock} DOCKER_BUILDKIT=0 docker build --force-rm -f '/var/tmp/c x/Dockerfile.dropship-legacy' {tail}
fi
rc=$?
if [ $rc -ne 0 ]; then tail -n 200 /var/tmp/c.log; rm -rf '/var/tmp/c x'; exit $rc; fi
rm -rf '/var/tmp/c x' /var/tmp/c.log
"""
    plain = ih.host_build_script(replace(plan, legacy_file=False), "/var/tmp/c", "/var/tmp/c.log")
    assert "DOCKER_BUILDKIT=0 docker build --force-rm --build-arg" in plain


def test_build_on_host_does_nothing_when_the_host_has_the_tag():
    plan = ai.plan_host_build(host_env())
    session = FakeSession(images={plan.tag})
    assert ih.build_on_host(session, plan, Recorder()) is False
    assert not session.streams and len(session.commands) == 1


def test_failed_host_build_is_one_line_naming_host_step_and_log():
    plan = ai.plan_host_build(host_env())
    out = ("Step 6/12 : RUN pip install x\n ---> Running in 1f\n"
           "ERROR: No matching distribution found for apache-airflow==3.3.1\n"
           "The command '/bin/sh -c pip install x' returned a non-zero code: 1\n")
    session = FakeSession(images={"python:3.12-slim-bookworm"}, build_rc=1, build_out=out)
    with pytest.raises(RemoteError) as info:
        ih.build_on_host(session, plan, Recorder())
    text = str(info.value)
    assert "\n" not in text and info.value.host == "web-1" and f"docker build {plan.tag}" in text
    assert "No matching distribution found for apache-airflow==3.3.1" in text
    assert ".log on the host" in text
    assert not any("docker pull" in c for c in session.commands)             # the base was there


def test_failed_pull_is_one_line():
    class Refusing(FakeSession):
        def run(self, command, timeout=None):
            if "docker pull" in command:
                return Result(1, "", "Error response from daemon: manifest unknown\n")
            return super().run(command, timeout)

    with pytest.raises(RemoteError) as info:
        ih.pull_on_host(Refusing(), "registry.example.com/airflow:9")
    text = str(info.value)
    assert "\n" not in text and "docker pull registry.example.com/airflow:9" in text and "manifest unknown" in text


def test_dry_run_tag_is_the_tag_a_host_build_makes():
    assert ai.planned_tag(host_env()) == ai.plan_host_build(host_env()).tag
