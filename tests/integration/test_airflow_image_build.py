"""The Airflow image for real: built here (no registry), run, and shipped to a local droplet over SSH.

The first run builds the python base (a Debian rootfs, ~20 s) and the image (uv, ~15 s); later runs
find both by tag and build nothing. The droplet (roles base + docker, provisioned by Dropship) gets
the image through ``docker save | ssh | docker load`` once; the second ship sends nothing.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from provision import airflow_image as ai
from provision import image_on_host as ih
from provision.builder import LEGACY, local_builder
from provision.errors import DropshipError, RemoteError
from provision.redact import Redactor
from provision.transport.hostkeys import KnownHosts
from provision.transport.ssh import Target, connect
from tests.support import DEFAULTS, PROJECT, Sandbox, docker_exec, droplet_spec, run_name

pytestmark = pytest.mark.integration

AIRFLOW_SRC = PROJECT / "app_src" / "airflow"
DAGS = AIRFLOW_SRC / "dags"
VERSION = "3.3.2"
NO_EXAMPLES = ["-e", "AIRFLOW__CORE__LOAD_EXAMPLES=False"]

DAGBAG_PY = r"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="/opt/airflow/dags")
dag = bag.dags.get("Helloworld")
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dag_ids),
    "tasks": sorted(dag.task_ids) if dag else None,
    "downstream": sorted(dag.get_task("task_1").downstream_task_ids) if dag else None,
    "upstream": {t: sorted(dag.get_task(t).upstream_task_ids) for t in dag.task_ids} if dag else None,
    "schedule": str(dag.schedule) if dag else None,
    "catchup": dag.catchup if dag else None,
    "start": dag.start_date.isoformat() if dag else None,
    "retries": sorted({dag.get_task(t).retries for t in dag.task_ids}) if dag else None,
    "commands": {t: dag.get_task(t).bash_command for t in dag.task_ids} if dag else None,
}))
"""


def airflow_section() -> dict:
    return {"version": VERSION, "build": {"context": str(AIRFLOW_SRC)}, "dags": str(DAGS)}


def run_in_image(tag: str, command: list[str], options: list[str] = (), timeout: float = 300):
    proc = subprocess.run(["docker", "run", "--rm", *options, tag, *command], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


class Recorder:
    """A Progress that keeps what it is told."""

    def __init__(self):
        self.steps: list[tuple[str, str, str]] = []

    def step(self, host, status, label, seconds=None):
        self.steps.append((host, status, label))

    def diff(self, host, text):
        pass


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    if not shutil.which("docker"):
        pytest.skip("docker is not installed")
    box = Sandbox(tmp_path_factory.mktemp("airflow-image"), run_name())
    defaults = {k: v for k, v in DEFAULTS.items() if k != "app"}
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("af-1", ["base", "docker"], warm=True)],
                         "airflow": airflow_section()}}, defaults)
    return box


@pytest.fixture(scope="module")
def built(box):
    """(tag, cold build seconds or None when it was cached, warm seconds)."""
    env = box.environment()
    first = ai.build(env)
    again = ai.build(env)
    assert again.tag == first.tag and not again.built
    print(f"\nairflow image {first.tag}: first build {first.seconds:.1f} s (built={first.built}), "
          f"again {again.seconds:.1f} s")
    return first.tag, first, again


@pytest.fixture(scope="module")
def droplet(box):
    """A droplet with Docker, made and provisioned (roles base, docker) as a user would."""
    try:
        box.create_and_provision()
        from provision.state import load_droplets

        yield load_droplets(box.environment())["af-1"]
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")


@pytest.fixture
def session(box, droplet):
    env = box.environment()
    target = Target("af-1", droplet.address, droplet.ssh_port, ("deploy",), env.workspace.key_path(env.name))
    s = connect(target, KnownHosts(env.workspace.known_hosts_path), Redactor())
    try:
        yield s
    finally:
        s.close()


def container(box) -> str:
    return f"dropship-{box.env}-af-1"


# ---- the image ----------------------------------------------------------------------------------------

def test_build_is_reused(built):
    tag, _, again = built
    assert tag.startswith(f"dropship/airflow:{VERSION}-")
    assert again.seconds < 30
    assert subprocess.run(["docker", "image", "inspect", ai.LOCAL_PYTHON_BASE], capture_output=True).returncode == 0


def test_airflow_version_and_conventions(built):
    tag = built[0]
    assert run_in_image(tag, ["airflow", "version"]).strip() == VERSION
    assert run_in_image(tag, []).strip() == VERSION                           # the default command
    out = run_in_image(tag, ["sh", "-c", 'id -u; id -g; echo "$AIRFLOW_HOME"; pwd; command -v airflow; '
                                         'curl --version | head -1; test -w "$AIRFLOW_HOME" && echo writable'])
    uid, gid, home, cwd, airflow, curl, writable = out.splitlines()
    assert (uid, gid, home, cwd) == ("50000", "0", "/opt/airflow", "/opt/airflow")
    assert airflow == "/opt/airflow-venv/bin/airflow" and curl.startswith("curl ") and writable == "writable"
    run_in_image(tag, ["python", "-c", "import airflow.providers.standard.operators.bash, airflow.sdk, "
                                       "airflow.providers.postgres, psycopg2"])
    assert "airflow db migrate" in run_in_image(tag, ["airflow", "db", "migrate", "--help"])
    # uv's download cache was a build-time mount (or not used): nothing of it is in the image
    assert run_in_image(tag, ["sh", "-c", "ls -A /var/cache/uv 2>/dev/null | wc -l"]).strip() == "0"


def test_every_package_is_the_pinned_one(built):
    pins = AIRFLOW_SRC / "constraints" / f"airflow-{VERSION}-py3.13.txt"
    wanted = {ln.lower() for ln in pins.read_text().splitlines() if ln and not ln.startswith("#")}
    frozen = {ln.lower() for ln in run_in_image(built[0], ["pip", "freeze"]).split()}
    assert frozen == wanted, (sorted(frozen - wanted), sorted(wanted - frozen))


def test_helloworld_dag_imports(built):
    out = run_in_image(built[0], ["python", "-c", DAGBAG_PY], [*NO_EXAMPLES, "-v", f"{DAGS}:/opt/airflow/dags:ro"])
    bag = json.loads(out.strip().splitlines()[-1])
    assert bag["errors"] == {} and bag["dags"] == ["Helloworld"]
    assert bag["tasks"] == ["task_1", "task_2", "task_3", "task_4"]
    assert bag["downstream"] == ["task_2", "task_3", "task_4"]
    assert bag["upstream"] == {"task_1": [], "task_2": ["task_1"], "task_3": ["task_1"], "task_4": ["task_1"]}
    assert (bag["schedule"], bag["catchup"], bag["retries"]) == ("@daily", False, [0])
    assert bag["start"] == "2015-06-01T00:00:00+00:00"
    assert bag["commands"]["task_3"] == 'echo "Hello World from Task 3"'


def test_helloworld_task_runs(built):
    # `airflow tasks test` needs the metadata tables: a throwaway sqlite DB made by `airflow db migrate`.
    script = ("airflow db migrate >/tmp/migrate.log 2>&1 || { tail -20 /tmp/migrate.log; exit 3; }; "
              "exec airflow tasks test Helloworld task_1 2015-06-01")
    out = run_in_image(built[0], ["sh", "-c", script], [*NO_EXAMPLES, "-v", f"{DAGS}:/opt/airflow/dags:ro"])
    assert "Hello World from Task 1" in out
    assert "Hello World from Task 2" not in out


def test_failed_build_ends_in_one_line_with_the_reason(box, built):
    env = box.environment()
    bogus = replace(env.settings.airflow, version="0.0.1")
    env = replace(env, settings=replace(env.settings, airflow=bogus))
    with pytest.raises(DropshipError) as info:
        ai.build_image(env)
    text = str(info.value)
    assert "\n" not in text and "dropship/airflow:0.0.1-" in text
    assert "apache-airflow" in text and "0.0.1" in text and "see /" in text


def test_bare_debian_base_gets_what_it_lacks_and_the_dags_requirements(box, built, tmp_path):
    """A Debian base with python3 but no python3-venv and no curl (as Debian's own images are): the
    Dockerfile installs them with apt. The local droplet's rootfs is such a base (cached after one build).
    The build context's requirements.txt lists a package the DAGs need that no constraint pins, as a
    user writes it: installed next to Airflow, every other package still the pinned one."""
    from provision.providers.local_image import debian_tags

    rootfs = debian_tags()[0]
    if subprocess.run(["docker", "image", "inspect", rootfs], capture_output=True).returncode != 0:
        pytest.skip(f"{rootfs} is not here (local droplets were built from a registry image)")
    assert subprocess.run(["docker", "run", "--rm", rootfs, "sh", "-c", "command -v curl || python3 -m venv /tmp/v"],
                          capture_output=True).returncode != 0
    context = tmp_path / "airflow"
    shutil.copytree(AIRFLOW_SRC, context, ignore=shutil.ignore_patterns("dags", "__pycache__"))
    (context / "requirements.txt").write_text("# for the report DAGs\n\n  toolz==1.0.0   # pinned by us\n")
    env = box.environment()
    af = env.settings.airflow
    env = replace(env, settings=replace(env.settings, airflow=replace(
        af, build=replace(af.build, base_image=rootfs, context=context))))
    made = ai.build(env)
    if not made.built:          # an earlier run's image (a machine with old images): build it again
        subprocess.run(["docker", "image", "rm", made.tag], capture_output=True, check=True)
        made = ai.build(env)
    tag = made.tag
    assert made.built and tag != built[0]
    build_log = Path(tempfile.gettempdir(), f"dropship-airflow-build-{tag.rsplit('-', 1)[1]}.log").read_text()
    if local_builder()[1] != LEGACY:
        # uv's cache mount kept the first build's downloads: only the package no earlier build had is fetched
        downloads = re.findall(r"Downloading (\S+)", build_log) + re.findall(r"Downloaded (\S+)", build_log)
        assert "RUN --mount=type=cache" in build_log and "apache-airflow-core" not in downloads, downloads
        assert set(downloads) <= {"toolz"}, downloads
    out = run_in_image(tag, ["sh", "-c", "airflow version; curl --version | head -1; id -u; "
                                         "python -c 'import toolz; print(toolz.__version__)'"])
    assert out.split("\n")[0] == VERSION and "curl " in out and out.split()[-2:] == ["50000", "1.0.0"]
    pins = AIRFLOW_SRC / "constraints" / f"airflow-{VERSION}-py3.13.txt"
    wanted = {ln.lower() for ln in pins.read_text().splitlines() if ln and not ln.startswith("#")} | {"toolz==1.0.0"}
    frozen = {ln.lower() for ln in run_in_image(tag, ["pip", "freeze"]).split()}
    assert frozen == wanted, (sorted(frozen - wanted), sorted(wanted - frozen))


# ---- shipping -----------------------------------------------------------------------------------------

def test_ship_then_nothing_to_ship(box, built, session):
    tag = built[0]
    progress = Recorder()
    started = time.monotonic()
    assert ih.ship_image(session, tag, progress) is True
    seconds = time.monotonic() - started
    (host, status, label), = progress.steps
    assert (host, status) == ("af-1", "ok") and label.startswith(f"shipped image {tag} (")
    print(f"\nship: {label} [{seconds:.1f} s in all]")
    started = time.monotonic()
    assert ih.ship_image(session, tag, progress) is False
    assert len(progress.steps) == 1 and time.monotonic() - started < 10
    ids = docker_exec(container(box), f"docker image inspect --format '{{{{.Id}}}}' {tag}").strip()
    local = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True,
                           text=True).stdout.strip()
    assert ids == local
    result = session.run(f"sudo -n docker run --rm {tag} airflow version", timeout=120)
    assert result.rc == 0 and result.stdout.strip() == VERSION, result.stderr


def test_ship_compressed(box, built, session):
    """The stream remote hosts get (gzip; docker load reads it as it is), tried on the local droplet."""
    tag = built[0]
    docker_exec(container(box), f"docker rmi {tag}")
    progress = Recorder()
    assert ih.ship_image(session, tag, progress, compress=True) is True
    print(f"\nship (gzip): {progress.steps[0][2]}")
    ids = docker_exec(container(box), f"docker image inspect --format '{{{{.Id}}}}' {tag}").strip()
    assert ids == subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True,
                                 text=True).stdout.strip()
    sent_mb = float(progress.steps[0][2].split("(")[1].split(" MB")[0])
    local_mb = int(subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True,
                                  text=True).stdout) / 1e6
    assert sent_mb < local_mb * 0.7


def test_send_stream_collects_output_and_stops_when_the_command_does(session):
    chunks = (b"x" * (1 << 20) for _ in range(4))
    result = session.send_stream("sh -c 'wc -c; echo oops >&2; exit 3'", chunks, timeout=60)
    assert (result.rc, result.stdout.strip(), result.stderr.strip()) == (3, str(4 << 20), "oops")
    assert session.send_stream("id -un", [b""], timeout=30).stdout.strip() == "root"
    # A command that stops reading early: the rest is not sent, and nothing hangs.
    consumed = []

    def endless():
        while True:
            consumed.append(1)
            yield b"y" * (1 << 20)

    started = time.monotonic()
    result = session.send_stream("head -c 10", endless(), timeout=60)
    assert result.rc == 0 and result.stdout == "y" * 10
    assert time.monotonic() - started < 30 and len(consumed) < 200


def test_registry_pull_fails_in_one_line(session):
    with pytest.raises(RemoteError) as info:
        ih.pull_on_host(session, "apache/airflow:3.3.2")
    assert info.value.host == "af-1" and "docker pull apache/airflow:3.3.2" in str(info.value)
    assert "\n" not in str(info.value)
