"""`invoke deploy` when things go wrong, against a real local droplet over real SSH.

The module's droplet (roles base, postgres, nginx, app: no Docker, faster) ships a copy of
app_src kept in a throwaway git repository, so each test commits a broken or slow version,
deploys it and reverts it. Every test ends with the last good release serving through nginx
and the deploy lock free. What happened on the host is checked through `docker exec`, a
channel that does not depend on the SSH transport under test.
"""
from __future__ import annotations

import getpass
import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import DEFAULTS, INVOKE, PROJECT, Sandbox, docker_exec, droplet_spec, one_error_line, run_name

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "nginx", "app"]
ROOT = "/srv/names"
LOCK = f"{ROOT}/deploy.lock"
ME = f"{getpass.getuser()}@{socket.gethostname()}"
SINCE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="dropship tests", GIT_AUTHOR_EMAIL="tests@dropship.invalid",
               GIT_COMMITTER_NAME="dropship tests", GIT_COMMITTER_EMAIL="tests@dropship.invalid")
    proc = subprocess.run(["git", "-C", str(repo), "-c", "commit.gpgsign=false", *args], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout




@dataclass
class Site:
    """The module's droplet and the git work tree it ships."""

    box: Sandbox
    droplet: object
    src: Path

    @property
    def container(self) -> str:
        return f"dropship-{self.box.env}-web-1"

    @property
    def url(self) -> str:
        return f"http://{self.droplet.address}:{self.droplet.port(80)}"

    # -- the controller ---------------------------------------------------------------------------
    def deploy(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.box.invoke("deploy", "--env", self.box.env, *args, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        """`invoke ARGS` in its own process group (so the whole run can be killed at once)."""
        env = dict(os.environ, DROPSHIP_INVENTORY=str(self.box.inventory), PYTHONUNBUFFERED="1")
        return subprocess.Popen(INVOKE + list(args), cwd=self.box.root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def commit(self, message: str, files: dict[str, str]) -> None:
        for rel, text in files.items():
            (self.src / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.src / rel).write_text(text)
        git(self.src, "add", "-A")
        git(self.src, "commit", "-q", "-m", message)

    def revert(self) -> None:
        git(self.src, "revert", "--no-edit", "HEAD")

    # -- the host -------------------------------------------------------------------------------
    def sh(self, script: str, check: bool = True) -> str:
        return docker_exec(self.container, script, check=check)

    def healthz(self) -> tuple[int | None, object]:
        """(HTTP status, body) of /healthz through nginx; (None, reason) when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()[:300]
        except (OSError, ValueError) as exc:
            return None, str(exc)

    def live_release(self) -> str:
        status, body = self.healthz()
        assert status == 200 and body["status"] == "ok", (status, body)
        return body["release"]

    def live_slot(self) -> str:
        return self.sh(f"cat {ROOT}/live").strip()

    def releases(self) -> list[str]:
        return self.sh(f"ls -1 {ROOT}/releases").split()

    def lock_state(self) -> str:
        return self.sh(f"[ -e {LOCK} ] && echo held || echo free").strip()

    def lock_holder_alive(self) -> bool:
        """Whether the process recorded in the lock (the deploying root shell) still runs."""
        return self.sh(f"""
read -r pid start < {LOCK}/shell 2>/dev/null || {{ echo gone; exit 0; }}
if [ -r /proc/$pid/stat ] && [ "$(cut -d' ' -f22 /proc/$pid/stat)" = "$start" ]; then echo alive; else echo gone; fi
""").strip() == "alive"

    def db_state(self) -> str:
        """The app database's schema and alembic revision (pg_dump's random \\restrict keys dropped)."""
        out = self.sh("cd /tmp && runuser -u postgres -- pg_dump --schema-only names && echo '-- alembic_version' && "
                      "runuser -u postgres -- psql -d names -Atc 'select version_num from alembic_version'")
        return "\n".join(ln for ln in out.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict")))

    def assert_serving(self, release: str) -> None:
        """nginx answers 200 with ``release``, the live slot holds it, and the lock is free."""
        assert self.healthz() == (200, {"status": "ok", "release": release})
        slot = self.live_slot()
        assert self.sh(f"basename $(readlink {ROOT}/slots/{slot})").strip() == release
        assert self.sh(f"systemctl is-active names@{slot}.service", check=False).strip() == "active"
        assert self.lock_state() == "free"


def current_head(versions: Path) -> str:
    """The Alembic head of the migrations in ``versions`` (the revision nobody revises)."""
    revs, downs = set(), set()
    for path in versions.glob("*.py"):
        text = path.read_text()
        revs.add(re.search(r"^revision = ['\"](\w+)['\"]", text, re.M).group(1))
        down = re.search(r"^down_revision = ['\"](\w+)['\"]", text, re.M)
        if down:
            downs.add(down.group(1))
    (head,) = revs - downs
    return head


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One local droplet provisioned with the app role, serving v1 from a temp git repo."""
    src = tmp_path_factory.mktemp("appsrc") / "app"
    shutil.copytree(PROJECT / "app_src", src,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".pytest_cache"))
    git(src, "init", "-q")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "v1")

    box = Sandbox(tmp_path_factory.mktemp("deployfail"), run_name())
    app = {"name": "names", "source": str(src), "wsgi": "wsgi:app", "requirements": "requirements.txt",
           "release_command": "flask --app wsgi db upgrade", "health_path": "/healthz", "keep_releases": 5,
           "env": {"FLASK_CONFIG": "production"}, "database": DEFAULTS["app"]["database"]}
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, warm=True)]}},
              defaults={**DEFAULTS, "app": app})
    try:
        box.create_and_provision()
        from provision.state import load_droplets

        site = Site(box, load_droplets(box.environment())["web-1"], src)
        proc = site.deploy()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        site.assert_serving(site.live_release())
        yield site
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")


@pytest.fixture
def good(site):
    """The release serving when the test starts; afterwards a lock a failed test left is cleared."""
    release = site.live_release()
    assert site.lock_state() == "free"
    yield release
    if site.lock_state() != "free":
        site.sh(f"rm -rf {LOCK}")


FAILING_MIGRATION = '''"""add a table, then fail: the release command must leave the database as it was

Revision ID: {rev}
Revises: {down}
"""
from alembic import op
import sqlalchemy as sa

revision = '{rev}'
down_revision = '{down}'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('half_done', sa.Column('id', sa.Integer(), primary_key=True))
    op.execute("SELECT * FROM no_such_table")


def downgrade():
    op.drop_table('half_done')
'''


def test_failing_migration_leaves_db_and_old_release(site, good):
    versions = site.src / "migrations" / "versions"
    rev = "f00dbad00001"
    db_before, releases_before = site.db_state(), site.releases()
    assert "CREATE TABLE public.name" in db_before
    site.commit("a migration that fails midway", {
        f"migrations/versions/{rev}_fail_midway.py": FAILING_MIGRATION.format(rev=rev, down=current_head(versions))})
    try:
        proc = site.deploy()
        line = one_error_line(proc)
        assert line.startswith("error: web-1: release command: flask --app wsgi db upgrade: "), line
        assert "no_such_table" in line and "(fix: " in line, line
        assert "[web-1] ok           pg_dump before migrations" in proc.stdout
        assert "start " not in proc.stdout and "switch nginx" not in proc.stdout

        assert site.db_state() == db_before          # no half_done table, alembic_version unchanged
        assert "half_done" not in site.db_state()
        assert site.releases() == releases_before    # the failed release's folder was removed
        site.assert_serving(good)
        audit = site.sh(f"tail -n 1 {ROOT}/audit.log")
        assert "deploy" in audit and "failed at release command" in audit, audit
    finally:
        site.revert()


BROKEN_HEALTH = '    return {"status": "broken", "release": release}, 500\n'


def test_failing_health_check_keeps_old_release(site, good):
    views = site.src / "names" / "views.py"
    text = views.read_text()
    ok_line = '    return {"status": "ok", "release": release}\n'
    assert ok_line in text
    live = site.live_slot()
    idle = "green" if live == "blue" else "blue"
    site.commit("healthz answers 500", {"names/views.py": text.replace(ok_line, BROKEN_HEALTH)})
    try:
        proc = site.deploy()
        line = one_error_line(proc)
        assert line.startswith("error: web-1: health check: "), line
        assert f"journalctl -u names@{idle}.service" in line, line
        assert re.search(rf"start \S+ in slot {idle}", proc.stdout), proc.stdout
        assert "switch nginx" not in proc.stdout

        site.assert_serving(good)
        assert site.live_slot() == live
        state = site.sh(f"systemctl is-active names@{idle}.service", check=False).strip()
        assert state != "active", state
        assert site.sh(f"grep -c 127.0.0.1:{8001 if live == 'blue' else 8002} "
                       "/etc/nginx/dropship/names-upstream.conf").strip() == "1"
    finally:
        site.revert()


SLOW_WSGI = '''"""WSGI entry point, slow to import: deploys of this version hold the lock for seconds."""
import time

time.sleep(3)

from names import create_app  # noqa: E402

app = create_app()
'''


def test_concurrent_deploys_one_refused(site, good):
    site.commit("slow to start", {"wsgi.py": SLOW_WSGI})
    try:
        runs = [site.popen("deploy", "--env", site.box.env) for _ in range(2)]
        outs = []
        for p in runs:
            out, _ = p.communicate(timeout=300)
            outs.append((p.returncode, out))
        codes = sorted(rc for rc, _ in outs)
        assert codes == [0, 1], outs
        won = next(out for rc, out in outs if rc == 0)
        lost = next(out for rc, out in outs if rc == 1)
        errors = [ln for ln in lost.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in lost, lost
        release = re.search(r"start (\S+) in slot \w+", won).group(1)
        assert re.match(rf"error: web-1: lock: another deploy holds the lock: {re.escape(ME)} since {SINCE} "
                        rf"\(deploy {re.escape(release)}\) \(fix: .*invoke unlock --env {site.box.env}", errors[0]), \
            errors[0]
        assert "upload" not in lost
        site.assert_serving(release)
    finally:
        site.revert()


class HealthPoller(threading.Thread):
    """Ask /healthz through nginx every 0.1 s and record every answer until stopped."""

    def __init__(self, site: Site):
        super().__init__(daemon=True)
        self.site, self.answers, self.stopping = site, [], threading.Event()

    def run(self):
        while not self.stopping.is_set():
            status, body = self.site.healthz()
            self.answers.append((status, body.get("release") if isinstance(body, dict) else body))
            time.sleep(0.1)

    def stop(self) -> list:
        self.stopping.set()
        self.join(15)
        return self.answers


class HeldWheel:
    """six's wheel served over HTTP on the droplet network's gateway; the first request is held until
    ``release()`` (a slow mirror): a virtualenv build that fetches it is mid-install for as long."""

    NAME = "six-1.17.0-py2.py3-none-any.whl"

    def __init__(self, env: str, folder: Path):
        from provision.providers.local import network_name

        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "-d", str(folder), "six==1.17.0"], check=True, capture_output=True, timeout=120)
        data = (folder / self.NAME).read_bytes()
        gateway = subprocess.run(["docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}",
                                  network_name(env)], capture_output=True, text=True, check=True).stdout.strip()
        self.requested, self.released = threading.Event(), threading.Event()
        held = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):                   # uv asks first (whether ranges are served: no)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def do_GET(self):
                held.requested.set()
                held.released.wait(120)
                self.do_HEAD()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((gateway, 0), Handler)
        self.url = f"http://{gateway}:{self.httpd.server_address[1]}/{self.NAME}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()


def test_killed_connection_then_redeploy_completes(site, good, tmp_path):
    req = site.src / "requirements.txt"
    wheel = HeldWheel(site.box.env, tmp_path)
    site.commit("one more requirement: a new virtualenv", {"requirements.txt": req.read_text() + f"six @ {wheel.url}\n"})
    try:
        venvs_before = set(site.sh(f"ls -1 {ROOT}/shared/venvs").split())
        releases_before = set(site.releases())
        poller = HealthPoller(site)
        poller.start()
        proc = site.popen("deploy", "--env", site.box.env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "".join(seen)
                continue
            seen.append(line)
            if "] ok" in line and " upload " in line:
                break
        else:
            pytest.fail("no upload step within 120 s:\n" + "".join(seen))
        # the virtualenv of the new requirements is being built, six's download held: kill the deploy mid-step
        assert wheel.requested.wait(60), "the new virtualenv never fetched six:\n" + "".join(seen)
        building = set(site.sh(f"ls -1 {ROOT}/shared/venvs").split()) - venvs_before
        assert len(building) == 1, building
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        new_venv = building.pop()
        assert site.sh(f"[ -e {ROOT}/shared/venvs/{new_venv}/.complete ] && echo complete || echo partial"
                       ).strip() == "partial"
        wheel.release()                   # the killed run's step goes on (see below) and ends

        # the site is fully on the old release: nginx, the live slot and its unit agree
        site.sh(f"test -d {LOCK}")                   # the killed deploy could not release its lock
        assert site.healthz() == (200, {"status": "ok", "release": good})
        slot = site.live_slot()
        assert site.sh(f"basename $(readlink {ROOT}/slots/{slot})").strip() == good

        # The killed run's root shell outlives its SSH session until the step it was running ends,
        # so an immediate re-run is refused naming it (or, if that step just ended, takes over).
        holder = json.loads(site.sh(f"cat {LOCK}/holder"))
        assert holder["by"] == ME and holder["action"] == "deploy"
        again = site.deploy()
        if again.returncode != 0:
            line = one_error_line(again)
            assert line.startswith(f"error: web-1: lock: another deploy holds the lock: {ME} since {holder['since']} "
                                   f"(deploy {holder['what']}) (fix: "), line
            deadline = time.monotonic() + 240
            while site.lock_holder_alive():
                assert time.monotonic() < deadline, "the killed run's root shell never ended"
                time.sleep(0.5)
            answers = poller.stop()
            assert answers and all(a == (200, good) for a in answers), sorted(set(map(str, answers)))
            # from now on the lock is stale: a plain re-run takes it over and completes
            poller = HealthPoller(site)
            poller.start()
            again = site.deploy()
        answers = poller.stop()
        assert again.returncode == 0, again.stdout + again.stderr
        assert "took over a stale lock" in again.stdout, again.stdout
        release = re.search(r"start (\S+) in slot \w+", again.stdout).group(1)
        # A re-run within the killed run's second gets its id (same commit, same second): the killed run's
        # unfinished folder is then removed first and the release built afresh (the checks below).
        assert release >= holder["what"], (holder, again.stdout)
        if release == holder["what"]:
            assert again.stdout.count("read state") == 2, again.stdout    # state re-read after the removal
        assert all(status == 200 and rid in (good, release) for status, rid in answers), \
            sorted(set(map(str, answers)))
        site.assert_serving(release)
        assert site.sh(f"readlink {ROOT}/releases/{release}/.venv").strip() == f"{ROOT}/shared/venvs/{new_venv}"
        assert site.sh(f"{ROOT}/releases/{release}/.venv/bin/python -c 'import six; print(six.__version__)'"
                       ).strip() == "1.17.0"
        assert release not in releases_before
    finally:
        wheel.close()
        site.revert()


def test_unlock_clears_a_lock_left_by_hand(site, good):
    holder = {"by": "alice@laptop", "since": "2026-01-02T03:04:05Z", "action": "deploy", "what": "by-hand"}
    # held by a live process (pid 1, with its start time), so it is not stale
    site.sh(f"""mkdir {LOCK}
printf '%s\\n' '{json.dumps(holder)}' > {LOCK}/holder
echo "1 $(cut -d' ' -f22 /proc/1/stat)" > {LOCK}/shell
""")
    refused = site.deploy()
    line = one_error_line(refused)
    assert line.startswith("error: web-1: lock: another deploy holds the lock: alice@laptop since "
                           "2026-01-02T03:04:05Z (deploy by-hand) (fix: "), line
    assert "upload" not in refused.stdout
    assert site.lock_state() == "held"
    assert site.healthz() == (200, {"status": "ok", "release": good})

    careful = site.box.invoke("unlock", "--env", site.box.env)     # its holder (pid 1) still runs
    assert careful.returncode == 1 and "still running a step" in careful.stdout + careful.stderr
    assert site.lock_state() == "held"

    unlocked = site.box.invoke("unlock", "--env", site.box.env, "--force")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    assert "web-1: deploy lock released" in unlocked.stdout
    assert site.lock_state() == "free"

    proc = site.deploy()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "took over a stale lock" not in proc.stdout
    site.assert_serving(re.search(r"start (\S+) in slot \w+", proc.stdout).group(1))
