"""`invoke deploy / rollback / releases / db.*` against a real local droplet over real SSH and HTTP.

The module's droplet (roles base, postgres, nginx, app; no docker) ships a copy of app_src kept
in a git repository of its own, where each new version is a commit changing the index heading.
The tests run in order and share the droplet's state: deploy, submit names through the real form,
redeploy, roll back and forward; zero failed requests under load while a deploy and a rollback
switch releases; database backup and restore; a one-file deploy that uploads one file and reuses
the virtualenv; that no switch above was still in progress when its command returned; last, with
no failed request, PostgreSQL moves to a host of its own (its data copied with `db.copy`), then an
lb and a second web host join.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from tests.loadgen import LoadGenerator
from provision.airflow_image import controller_ca_files
from provision.state import load_droplets
from provision.engine.uv import UV_VERSION
from tests.support import (DEFAULTS, INVOKE, AppRepo, Browser, Sandbox, app_settings, docker_exec, droplet_spec,
                           heading, http_base, last_json, one_error_line, run_name)

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "nginx", "app"]
NAMES = ["Ada Lovelace", "Grace Hopper", "Linus Torvalds"]
UPLOAD = re.compile(r"upload (\d+) changed, (\d+) removed file\(s\)")
VENV = re.compile(r"\] ok\s+virtualenv ([0-9a-f]+) \((\d+\.\d)s\)")


@dataclass
class Site:
    box: Sandbox
    repo: AppRepo
    url: str                                              # http://127.0.0.1:<port 80>
    releases: dict[str, str] = field(default_factory=dict)  # version label -> release id
    venv: str = ""                                        # digest of the virtualenv of the first deploy
    late: list[str] = field(default_factory=list)         # switches not yet served when the command returned
    returned: float = 0.0                                 # time.monotonic() when the last deploy/rollback returned

    @property
    def env(self) -> str:
        return self.box.env


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    repo = AppRepo.create(root / "app")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, warm=True)]}},
              defaults={**DEFAULTS, "app": app_settings(repo.root)})
    try:
        box.create_and_provision()
        yield Site(box, repo, http_base(box))
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")


# --- helpers -----------------------------------------------------------------------------------------

def deploy(site: Site, label: str) -> subprocess.CompletedProcess:
    """Commit version ``label`` (unless v1) and `invoke deploy --json` it; records its release id."""
    if label != "v1":
        site.repo.version(label)
    proc = site.box.invoke("deploy", "--env", site.env, "--json")
    site.returned = time.monotonic()
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout + proc.stderr
    site.releases[label] = report["release"]
    switched(site, label, f"deploy {label}")
    return proc


def rollback(site: Site, label: str, *args: str) -> subprocess.CompletedProcess:
    """`invoke rollback ARGS`, expected to make version ``label`` live."""
    proc = site.box.invoke("rollback", "--env", site.env, *args)
    site.returned = time.monotonic()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    switched(site, label, f"rollback {' '.join(args)} to {label}".replace("  ", " "))
    return proc


def switched(site: Site, label: str, what: str, within: float = 5.0) -> None:
    """Once the command has returned, every request must reach ``label``'s release. Records a
    switch still in progress (old release answering) in ``site.late`` and waits for it to finish,
    so the tests go on; test_switch_is_complete_when_the_command_returns fails on them."""
    want = site.releases[label]
    started = time.monotonic()
    answers = [serving(site) for _ in range(5)]
    if set(answers) == {want}:
        return
    while time.monotonic() - started < within:
        if serving(site) == want:
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"{what}: {want} is still not served {within} s after the command returned")
    site.late.append(f"{what}: answers right after it returned: {answers}")




def invoke_without_tty(box: Sandbox, *args: str) -> subprocess.CompletedProcess:
    """`invoke ARGS` with no terminal to ask on (stdin is /dev/null), outside CI (which answers yes)."""
    env = dict(os.environ, DROPSHIP_INVENTORY=str(box.inventory), CI="")
    return subprocess.run(INVOKE + list(args), cwd=box.root, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)


def serving(site: Site) -> str:
    """The release answering /healthz now (or what answered instead)."""
    status, _, body = Browser(site.url).open("/healthz")
    try:
        return json.loads(body)["release"] if status == 200 else f"HTTP {status}"
    except (ValueError, KeyError):
        return f"HTTP {status}: {body[:80]!r}"


def releases(site: Site) -> dict[str, dict]:
    proc = site.box.invoke("releases", "--env", site.env, "--json", check=True)
    return {r["id"]: r for r in last_json(proc)["web-1"]}


def assert_live(site: Site, live: str, warm: str | None) -> None:
    rows = releases(site)
    assert [r for r, row in rows.items() if row["live"]] == [site.releases[live]], rows
    assert [r for r, row in rows.items() if row["warm"]] == ([site.releases[warm]] if warm else []), rows
    assert Browser(site.url).health() == {"status": "ok", "release": site.releases[live]}


# --- the tests (in order, sharing the droplet) ---------------------------------------------------------

def test_deploy_submit_redeploy_rollback(site):
    browser = Browser(site.url)
    proc = deploy(site, "v1")
    assert site.releases["v1"].endswith(site.repo.git("rev-parse", "--short=8", "HEAD"))
    site.venv = VENV.search(proc.stderr).group(1)
    assert browser.page() == (heading("v1"), [])
    assert_live(site, "v1", None)

    for name in NAMES:
        browser.add_name(name)
    assert browser.page() == (heading("v1"), NAMES)

    deploy(site, "v2")
    assert browser.page() == (heading("v2"), NAMES)
    assert_live(site, "v2", "v1")

    rollback(site, "v1")
    assert browser.page() == (heading("v1"), NAMES)
    assert_live(site, "v1", "v2")

    rollback(site, "v2", "--to", site.releases["v2"])
    assert browser.page() == (heading("v2"), NAMES)
    assert_live(site, "v2", "v1")

    line = one_error_line(site.box.invoke("rollback", "--env", site.env, "--to", "20200101T000000Z-deadbeef"))
    assert "unknown release 20200101T000000Z-deadbeef" in line and "use one of:" in line
    assert site.releases["v1"] in line and site.releases["v2"] in line
    assert_live(site, "v2", "v1")


def under_load(site: Site, action, what: str):
    """Run ``action`` under load (/healthz at 60 req/s, / at 15 req/s over keep-alive connections);
    no request may fail, /healthz must get >= 50 req/s. Returns the /healthz stats."""
    health = LoadGenerator(site.url + "/healthz", rate=60, concurrency=8).start()
    page = LoadGenerator(site.url + "/", rate=15, concurrency=4, keepalive=True).start()
    try:
        time.sleep(0.5)
        action()
        time.sleep(1.0)
    finally:
        stats = health.stop(), page.stop()
    for s in stats:
        print(f"{what}: {s.summary()}")
        assert s.total > 0 and s.failed == 0, f"{what}: {s.summary()}"
    assert stats[0].rps >= 50, f"{what}: {stats[0].summary()}"
    return stats[0]


def assert_switched_under_load(site: Site, load, old: str, new: str, what: str) -> None:
    """Both releases answered during the action, the old one never after the command returned."""
    assert set(load.releases) == {site.releases[old], site.releases[new]}, load.summary()
    last_old = load.spans[site.releases[old]][1]
    if last_old > site.returned:
        site.late.append(f"{what}: a request sent {last_old - site.returned:.3f} s after the command returned "
                         f"reached the old release ({old})")


def test_zero_failed_requests_during_deploy_and_rollback(site):
    load = under_load(site, lambda: deploy(site, "v3"), "deploy v3")
    assert_switched_under_load(site, load, "v2", "v3", "deploy v3")
    assert_live(site, "v3", "v2")

    load = under_load(site, lambda: rollback(site, "v2"), "rollback to v2")
    assert_switched_under_load(site, load, "v3", "v2", "rollback to v2")
    assert_live(site, "v2", "v3")


def test_db_backup_list_restore(site):
    browser = Browser(site.url)
    _, before = browser.page()
    assert before == NAMES

    proc = site.box.invoke("db.backup", "--env", site.env, check=True)
    *_, path, recap = proc.stdout.strip().splitlines()
    assert recap.startswith("recap: 1 database(s) dumped on web-1 in ")
    name = path.rsplit("/", 1)[-1]
    assert path.startswith("/var/backups/dropship/names/manual-") and name.endswith(".dump")
    listed = last_json(site.box.invoke("db.backups", "--env", site.env, "--json", check=True))
    assert name in {b["name"] for b in listed}
    assert all(b["bytes"] > 0 for b in listed)

    browser.add_name("Margaret Hamilton")
    assert browser.page()[1] == NAMES + ["Margaret Hamilton"]

    line = one_error_line(invoke_without_tty(site.box, "db.restore", "--env", site.env, "--file", name))
    assert "pass --yes" in line
    assert browser.page()[1] == NAMES + ["Margaret Hamilton"]      # refused: nothing restored

    proc = site.box.invoke("db.restore", "--env", site.env, "--file", name, "--yes", check=True)
    assert f"restored from {path}" in proc.stdout
    assert browser.page()[1] == NAMES
    browser.add_name("Margaret Hamilton")                           # the app still writes after a restore
    assert browser.page()[1] == NAMES + ["Margaret Hamilton"]


def test_one_file_deploy_is_incremental(site):
    # A developer's local files that git ignores (here through .git/info/exclude) do not ship.
    (site.repo.root / ".git" / "info" / "exclude").write_text("venv/\n.env\n*.sqlite\n")
    for name, text in (("venv/bin/activate", "# a local venv"), (".env", "DEV_API_KEY=dev-only"), ("dev.sqlite", "x")):
        (site.repo.root / name).parent.mkdir(parents=True, exist_ok=True)
        (site.repo.root / name).write_text(text)
    proc = deploy(site, "v4")
    uploads = UPLOAD.findall(proc.stderr)
    assert uploads == [("1", "0")], proc.stderr
    release = f"/srv/names/releases/{site.releases['v4']}"
    on_host = f"dropship-{site.env}-web-1"
    assert docker_exec(on_host, f"ls -A {release} | grep -cx -e venv -e dev.sqlite || true").strip() == "0"
    assert "DEV_API_KEY" not in docker_exec(on_host, f"cat {release}/.env")
    digest, seconds = VENV.search(proc.stderr).groups()
    assert digest == site.venv and float(seconds) < 2, proc.stderr
    assert "BUILT" not in proc.stderr
    assert Browser(site.url).page()[0] == heading("v4")
    assert_live(site, "v4", "v2")


def pyc_inode(host: str, venv: str) -> str:
    """The inode of flask/app.py's bytecode in ``venv``."""
    return docker_exec(host, f"stat -c %i {venv}/lib/python3*/site-packages/flask/__pycache__/app.*.pyc").strip()


def test_requirement_change_builds_a_venv_with_uv_that_the_live_slot_runs_and_later_deploys_reuse(site):
    req = site.repo.root / "requirements.txt"
    req.write_text(req.read_text().rstrip("\n") + "\nsix==1.17.0\n")          # a package the app never needed
    with LoadGenerator(site.url + "/healthz", rate=40) as gen:
        proc = deploy(site, "v5")
        stats = gen.stop()
    assert stats.failed == 0, stats.summary()
    digest = VENV.search(proc.stderr).group(1)
    assert digest != site.venv, proc.stderr
    on_host = f"dropship-{site.env}-web-1"
    venv = f"/srv/names/shared/venvs/{digest}"
    assert f"uv = {UV_VERSION}" in docker_exec(on_host, f"cat {venv}/pyvenv.cfg")    # built by uv
    live = docker_exec(on_host, "cat /srv/names/live").strip()
    assert docker_exec(on_host, f"readlink -f /srv/names/slots/{live}/.venv").strip() == venv
    pid = docker_exec(on_host, f"systemctl show -p MainPID --value names@{live}").strip()
    assert f"/srv/names/slots/{live}/.venv/bin/gunicorn" in docker_exec(on_host, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert docker_exec(on_host, f"runuser -u names -- {venv}/bin/python -c 'import six, flask; print(six.__version__)'"
                       ).strip() == "1.17.0"
    # made from the previous venv: its compiled files linked, not compiled again (uv links every venv's
    # sources to its cache, bytecode is each venv's own); only six added; the previous one untouched
    old = f"/srv/names/shared/venvs/{site.venv}"
    assert pyc_inode(on_host, venv) == pyc_inode(on_host, old)
    assert docker_exec(on_host, f"ls {venv}/lib/python3*/site-packages/__pycache__/ | grep -c '^six\\.'"
                       ).strip() == "1"                                           # what was added is compiled
    freeze = "/usr/local/lib/dropship/uv-{v}/bin/uv pip freeze -q --python {p}/bin/python".format
    before, after = (set(docker_exec(on_host, freeze(v=UV_VERSION, p=p)).split()) for p in (old, venv))
    assert after - before == {"six==1.17.0"} and before - after == set(), (before, after)
    assert "No module named 'six'" in docker_exec(on_host, f"{old}/bin/python -c 'import six' 2>&1 || true")
    proc = deploy(site, "v6")                                                     # requirements unchanged
    assert VENV.search(proc.stderr).group(1) == digest and "BUILT" not in proc.stderr
    # the newest venv cannot seed the next (it has no interpreter): a new one is built from scratch
    docker_exec(on_host, "d=/srv/names/shared/venvs/0bad; mkdir -p $d/lib/$(basename $(readlink -f /usr/bin/python3)) && "
                         "echo 'relocatable = true' > $d/pyvenv.cfg && touch $d/.complete")
    req.write_text(req.read_text() + "# the same packages, another hash\n")
    proc = deploy(site, "v6b")
    fresh = f"/srv/names/shared/venvs/{VENV.search(proc.stderr).group(1)}"
    assert fresh != venv and pyc_inode(on_host, fresh) != pyc_inode(on_host, venv)
    # no venv outlives the releases using it (the 0bad one included)
    linked = docker_exec(on_host, "readlink /srv/names/releases/*/.venv | sort -u").split()
    assert docker_exec(on_host, "ls -d /srv/names/shared/venvs/*").split() == linked and fresh in linked


def test_a_venv_made_from_an_older_one_gets_what_a_new_venv_would(site):
    """The seed's versions are no preference: a requirement loosened from an old pin resolves afresh."""
    req = site.repo.root / "requirements.txt"
    on_host = f"dropship-{site.env}-web-1"
    version = "runuser -u names -- /srv/names/shared/venvs/{}/bin/python -c 'import six; print(six.__version__)'".format
    req.write_text(re.sub(r"(?m)^six==.*$", "six==1.16.0", req.read_text()))
    pinned = VENV.search(deploy(site, "v6c").stderr).group(1)
    assert docker_exec(on_host, version(pinned)).strip() == "1.16.0"
    req.write_text(re.sub(r"(?m)^six==.*$", "six>=1.16", req.read_text()))
    loose = VENV.search(deploy(site, "v6d").stderr).group(1)
    newest = docker_exec(on_host, version(loose)).strip()
    assert newest != "1.16.0" and tuple(map(int, newest.split("."))) >= (1, 17), newest


def test_installs_trust_the_system_ca_store_and_a_certificate_failure_says_so(site):
    """Behind this machine's TLS-inspecting proxy only the CAs that provision installs on the host make
    PyPI trusted: uv uses the system store; its own bundled roots do not know the proxy's CA."""
    on_host = f"dropship-{site.env}-web-1"
    try_install = ("rm -rf /tmp/v /tmp/c && /usr/local/lib/dropship/uv-{v}/bin/uv venv -q /tmp/v && "
                   "UV_CACHE_DIR=/tmp/c {tls}/usr/local/lib/dropship/uv-{v}/bin/uv pip install -q --python /tmp/v/bin/python "
                   "six==1.17.0 2>&1; echo rc=$?")
    assert "rc=0" in docker_exec(on_host, try_install.format(v=UV_VERSION, tls="UV_SYSTEM_CERTS=1 "))
    behind_proxy = bool(controller_ca_files())
    bundled = docker_exec(on_host, try_install.format(v=UV_VERSION, tls=""))
    assert ("rc=0" not in bundled and "UnknownIssuer" in bundled) if behind_proxy else "rc=0" in bundled, bundled
    if not behind_proxy:
        return
    # the host loses the proxy's CA: a deploy that must install refuses in one line, the old release serves on
    before = serving(site)
    docker_exec(on_host, "mkdir /root/cas-aside && mv /usr/local/share/ca-certificates/* /root/cas-aside/ && "
                         "update-ca-certificates --fresh >/dev/null")
    try:
        req = site.repo.root / "requirements.txt"
        req.write_text(req.read_text() + "idna\n")
        site.repo.commit("another requirement")
        proc = site.box.invoke("deploy", "--env", site.env)
        line = one_error_line(proc)
        assert "virtualenv" in line and "certificate verification failed installing requirements.txt" in line, line
        assert "ca_certificates" in line and serving(site) == before
    finally:
        docker_exec(on_host, "mv /root/cas-aside/*.crt /usr/local/share/ca-certificates/; rm -rf /root/cas-aside")
    report, proc = site.box.provision_json()                              # puts the CAs it manages back
    assert report["ok"], proc.stdout[-2000:]
    deploy(site, "v7")


def test_switch_is_complete_when_the_command_returns(site):
    """Deploys and rollbacks above: right after `invoke` returned, only the new release answered."""
    assert site.releases, "nothing was deployed"
    assert not site.late, "the old release still answered after the command returned:\n" + "\n".join(site.late)


def test_moving_postgres_to_a_host_of_its_own_needs_the_data_copied_first(site):
    """PostgreSQL moves from web-1 to db-1 (`invoke up`): the deploy refuses to serve db-1's empty
    database, web-1 serving its own meanwhile; `db.copy --from web-1` copies it, then the deploy
    switches to db-1 (web-1's PostgreSQL stopped: the names still show). No request fails."""
    _, names = Browser(site.url).page()
    site.box.write({site.env: {"provider": "local", "droplets": [
        droplet_spec("web-1", ["base", "nginx", "app"], warm=True),
        droplet_spec("db-1", ["base", "postgres"], "s-1vcpu-1gb", warm=True)]}},
        defaults={**DEFAULTS, "app": app_settings(site.repo.root)})
    done: dict[str, subprocess.CompletedProcess] = {}

    def move() -> None:
        done["up"] = site.box.invoke("up", "--env", site.env, timeout=900)
        done["copy"] = site.box.invoke("db.copy", "--env", site.env, "--from", "web-1", "--yes")
        done["deploy"] = site.box.invoke("deploy", "--env", site.env)

    under_load(site, move, "postgres moves to db-1")
    address = load_droplets(site.box.environment())["db-1"].private_address
    error = one_error_line(done["up"])
    assert error.startswith(f"error: web-1: database move: database names moves from 127.0.0.1 on web-1 (where the "
                            f"live release reads it) to {address}, where it has no tables"), error
    assert "`invoke db.copy --env ENV --from web-1`" in error and "--empty-database" in error, error
    assert done["copy"].returncode == 0 and "names: copied from web-1 to db-1 (" in done["copy"].stdout and \
        "recap: 1 database(s) copied from web-1 to db-1 in " in done["copy"].stdout, \
        done["copy"].stdout + done["copy"].stderr
    assert done["deploy"].returncode == 0, done["deploy"].stdout[-3000:] + done["deploy"].stderr[-3000:]
    docker_exec(f"dropship-{site.env}-web-1", "systemctl stop postgresql")
    assert Browser(site.url).page()[1] == names                        # read from db-1
    # the release before reads web-1's own database: going back to it is refused, nothing changed
    error = one_error_line(site.box.invoke("rollback", "--env", site.env))
    assert (f"reads database names at 127.0.0.1, and it is at {address} now (PostgreSQL moved since): going back "
            "would serve the old one; nothing changed") in error, error
    assert Browser(site.url).page()[1] == names


def test_growing_from_one_droplet_to_an_lb_and_two_web_hosts_fails_no_request(site):
    """web-1 keeps serving while an lb and a second web host join (`invoke up`): db-1's PostgreSQL
    already listens on its private address, so letting web-2 in is a reload, not a restart."""
    _, names = Browser(site.url).page()
    site.box.write({site.env: {"provider": "local", "droplets": [
        droplet_spec("lb-1", ["base", "nginx", "lb"], "s-1vcpu-1gb", warm=True),
        droplet_spec("web-1", ["base", "nginx", "app"], warm=True),
        droplet_spec("web-2", ["base", "nginx", "app"], "s-1vcpu-1gb", warm=True),
        droplet_spec("db-1", ["base", "postgres"], "s-1vcpu-1gb", warm=True)]}},
        defaults={**DEFAULTS, "app": app_settings(site.repo.root)})
    done: dict[str, subprocess.CompletedProcess] = {}
    under_load(site, lambda: done.setdefault("up", site.box.invoke("up", "--env", site.env, timeout=900)),
               "lb-1 and web-2 join")
    proc = done["up"]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "[db-1] ran          handler: reload postgresql" in out and "restart postgresql" not in out, out
    lb = Browser(http_base(site.box, "lb-1"))
    answers = {lb.health()["release"] for _ in range(6)}
    assert len(answers) == 1, answers                                     # one release on both web hosts
    assert lb.page()[1] == names                                          # web-2 reads web-1's database
