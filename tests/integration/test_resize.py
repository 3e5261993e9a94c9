"""``droplet.resize`` end to end on a real local droplet, a real power cycle each time.

One droplet (s-2vcpu-4gb) runs the names app, the guestbook app (another shape) and Airflow. Names
and guestbook entries are added through their forms; then the droplet is resized to s-4vcpu-8gb
with --size (a size not in the inventory), then back to the inventory's size by a plain
``droplet.resize``. After each: the container really restarted, the rows are unchanged and listed,
PostgreSQL, gunicorn and Airflow run the settings of the new size (read over SSH), Helloworld
still runs, the downtime was measured from outside and printed. A shrink the disk cannot follow
is refused before anything stops.
"""
from __future__ import annotations

import html
import json
import os
import subprocess

import pytest

from provision import sizing
from provision.providers.sizes import BASIC_SIZES
from provision.redact import Redactor
from provision.state import load_droplets
from provision.transport.hostkeys import KnownHosts
from provision.transport.ssh import Target, connect
from tests.support import (DEFAULTS, AppRepo, Browser, DagRepo, GuestbookRepo, Sandbox, airflow_settings,
                           app_settings, droplet_spec, guestbook, guestbook_page, http_base, last_json, run_name, sign)

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "docker", "nginx", "app", "airflow"]
SMALL, BIG = "s-2vcpu-4gb", "s-4vcpu-8gb"
NAMES = ["Ada", "Grace O'Hara", "Zoë; $(reboot)"]
ENTRIES = [("Linus", "hello from before the resize"), ("Margaret", "`backticks` and \"quotes\"")]


class Droplet:
    def __init__(self, box: Sandbox):
        self.box = box

    @property
    def info(self):
        return load_droplets(self.box.environment())["web-1"]

    def container_started(self) -> str:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", f"dropship-{self.box.env}-web-1"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def ssh(self, script: str) -> str:
        env, d = self.box.environment(), self.info
        target = Target("web-1", d.address, d.ssh_port, ("deploy",), env.workspace.key_path(env.name))
        session = connect(target, KnownHosts(env.workspace.known_hosts_path), Redactor())
        try:
            result = session.script(script, timeout=120)
        finally:
            session.close()
        assert result.rc == 0, result.stdout
        return result.stdout

    def rows(self) -> str:
        return self.ssh("runuser -u postgres -- psql -d names -Atc 'select * from name order by 1' && "
                        "runuser -u postgres -- psql -d guestbook -Atc 'select * from guestbook_entries order by 1'")

    def settings(self) -> dict[str, str]:
        """What runs now: PostgreSQL's settings, each slot's gunicorn worker processes, Airflow's parallelism."""
        out = self.ssh("""
for s in shared_buffers effective_cache_size maintenance_work_mem work_mem; do
  echo "postgres $s=$(runuser -u postgres -- psql -Atc "show $s")"
done
for app in names guestbook; do
  live=$(cat /srv/$app/live)
  pid=$(systemctl show -p MainPID --value "$app@$live")
  echo "gunicorn workers ($app)=$(pgrep -c -P "$pid")"
done
echo "airflow parallelism=$(cd /srv/airflow && docker compose -p airflow exec -T airflow-scheduler printenv AIRFLOW__CORE__PARALLELISM)"
""")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def expected(size: str) -> dict[str, str]:
    vcpus, memory_mb, _ = BASIC_SIZES[size]
    derived = sizing.derived(min(vcpus, os.cpu_count()), memory_mb, {"names": None, "guestbook": None}, True)
    pg = {k: v for k, v in derived.items() if k.startswith("postgres")}
    # PostgreSQL shows sizes in its own units (2048MB is "2GB")
    pg = {k: (f"{int(v[:-2]) // 1024}GB" if int(v[:-2]) % 1024 == 0 else v) for k, v in pg.items()}
    return {**derived, **pg}


@pytest.fixture(scope="module")
def droplet(tmp_path_factory):
    root = tmp_path_factory.mktemp("resize")
    names, book, dags = AppRepo.create(root / "names"), GuestbookRepo.create(root / "guestbook"), \
        DagRepo.create(root / "dags")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"}, "airflow": airflow_settings(dags.root),
                "apps": [app_settings(names.root), guestbook(book.root)]}
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, SMALL)]}}, defaults)
    try:
        box.create_and_provision()
        proc = box.invoke("deploy", "--env", box.env, "--json", timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        browser = Browser(http_base(box))
        for name in NAMES:
            browser.add_name(name)
        for author, message in ENTRIES:
            assert sign(browser, author, message) in (302, 303)
        yield Droplet(box)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        from provision.providers.local import reap
        reap({"dropship.env": box.env})          # its snapshots


def resize(d: Droplet, *args: str) -> dict:
    proc = d.box.invoke("droplet.resize", "--env", d.box.env, "--json", *args, timeout=1800)
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "downtime: " in proc.stderr, proc.stderr           # printed, as well as in the JSON
    down = report["downtime"]["web-1"]
    assert down["seconds"] is not None and down["requests"] > down["failed_requests"] > 0, down
    return report


def check_after(d: Droplet, size: str, rows: str, started_before: str) -> None:
    assert d.container_started() != started_before            # a real power cycle
    assert d.info.size == size
    assert d.rows() == rows
    browser = Browser(http_base(d.box))
    assert [html.unescape(n) for n in browser.page()[1]] == NAMES
    entries = guestbook_page(browser)[2]
    assert all(any(m in e for e in entries) for _, m in ENTRIES), entries
    running = d.settings()
    want = expected(size)
    assert {k: running[k] for k in want} == want
    proc = d.box.invoke("airflow.test", "--env", d.box.env, "--dag", "Helloworld", "--task", "task_1",
                        "--date", "2015-06-01", timeout=600)
    assert proc.returncode == 0 and "Hello World from Task 1" in proc.stdout, proc.stdout[-2000:] + proc.stderr


def test_preflight_refuses_a_plan_before_anything_stops(droplet):
    started = droplet.container_started()
    proc = droplet.box.invoke("droplet.resize", "--env", droplet.box.env, "--size", "s-1vcpu-1gb")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stdout + proc.stderr
    assert "has a 25 GB disk, smaller than the droplet's 80 GB" in lines[0] and "s-2vcpu-4gb" in lines[0]
    proc = droplet.box.invoke("droplet.resize", "--env", droplet.box.env, "--size", "s-3vcpu-5gb")
    assert proc.returncode == 1 and "is not offered" in proc.stderr, proc.stderr
    proc = droplet.box.invoke("droplet.resize", "--env", droplet.box.env, "--size", BIG, "--disk")
    assert proc.returncode == 1 and "--disk is permanent" in proc.stderr and "pass --yes" in proc.stderr
    dry = droplet.box.invoke("droplet.resize", "--env", droplet.box.env, "--size", BIG, "--dry-run", "--json")
    plan = last_json(dry)["plan"]["web-1"]
    assert (plan["from"], plan["to"]) == (SMALL, BIG)
    assert {s["setting"] for s in plan["settings"]} >= {"postgres shared_buffers", "gunicorn workers (names)"}
    assert "expected downtime" in dry.stderr
    assert droplet.container_started() == started


def test_resize_up_then_back_to_the_inventory(droplet):
    rows = droplet.rows()
    assert all(n in rows for n in ("Ada", "Grace O'Hara"))
    before = droplet.settings()
    assert {k: before[k] for k in expected(SMALL)} == expected(SMALL)

    started = droplet.container_started()
    up = resize(droplet, "--size", BIG)
    assert up["plan"]["web-1"]["to"] == BIG
    check_after(droplet, BIG, rows, started)
    listing = droplet.box.invoke("droplet.list", "--env", droplet.box.env)
    assert f"the inventory says {SMALL}, the droplet is {BIG}" in listing.stdout, listing.stdout

    started = droplet.container_started()
    back = resize(droplet, "--no-snapshot")                  # the inventory's size again
    assert back["plan"]["web-1"]["to"] == SMALL
    check_after(droplet, SMALL, rows, started)
    listed = json.loads(droplet.box.invoke("droplet.list", "--env", droplet.box.env, "--json").stdout)
    assert [(d["size"], d["inventory_size"]) for d in listed] == [(SMALL, SMALL)]
