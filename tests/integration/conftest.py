"""Integration tier: real local droplets (systemd containers with sshd) reached over real SSH.

Droplets created and provisioned once per session are shared by the tests that only read them
or restore what they change (``web``: the base roles; ``app_stack``: two apps and Airflow (Celery),
deployed); droplets of killed earlier runs are reaped first.
"""
from __future__ import annotations

import subprocess

import pytest

from provision.providers.local import reap
from provision.state import load_droplets
from tests.support import (DEFAULTS, AppRepo, Browser, DagRepo, GuestbookRepo, Sandbox, airflow_settings, app_settings,
                           droplet_spec, guestbook, http_base, reap_dead_runs, run_name, sign, ssh_script)

ROLES = ["base", "postgres", "docker", "nginx"]
APP_STACK_ROLES = ["base", "postgres", "docker", "nginx", "app", "airflow"]


@pytest.fixture(scope="session", autouse=True)
def _reap_leftovers():
    reap_dead_runs()


@pytest.fixture(scope="session")
def web(tmp_path_factory):
    """A freshly created and provisioned droplet (from the bare image: its tests are about a first
    provision): (sandbox, droplet, first provision's JSON)."""
    box = Sandbox(tmp_path_factory.mktemp("web"), run_name())
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES)]}})
    box.invoke("droplet.create", "--env", box.env, check=True)
    try:
        first, proc = box.provision_json()
        assert first["ok"], proc.stderr
        from provision.state import load_droplets

        droplet = load_droplets(box.environment())["web-1"]
        yield box, droplet, first
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")


class AppStack:
    """A droplet running two apps of different shapes (names at the root, guestbook at /guestbook)
    and Airflow with the CeleryExecutor (its worker on the same host), deployed, with NAMES and
    ENTRIES added through the apps' forms."""

    NAMES = ["Ada", "Grace O'Hara", "Zoë; $(reboot)"]
    ENTRIES = [("Linus", "hello from before the resize"), ("Margaret", "`backticks` and \"quotes\"")]
    SIZE = "s-2vcpu-4gb"

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
        return ssh_script(self.box, script)

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
echo "airflow worker concurrency=$(cd /srv/airflow && docker compose -p airflow exec -T airflow-worker printenv AIRFLOW__CELERY__WORKER_CONCURRENCY)"
""")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def app_stack(tmp_path_factory):
    """One AppStack for the tests that leave it as they found it (operations, resize), brought up as
    the quickstart does (`invoke up`)."""
    root = tmp_path_factory.mktemp("app-stack")
    names, book, dags = AppRepo.create(root / "names"), GuestbookRepo.create(root / "guestbook"), \
        DagRepo.create(root / "dags")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"},
                "airflow": {**airflow_settings(dags.root), "executor": "celery"},
                "apps": [app_settings(names.root), guestbook(book.root)]}
    droplet = droplet_spec("web-1", APP_STACK_ROLES, AppStack.SIZE, warm=True)
    box.write({box.env: {"provider": "local", "droplets": [droplet]}}, defaults)
    try:
        box.preload_airflow("web-1")              # shipping the image is test_airflow_image_build's
        proc = box.invoke("up", "--env", box.env, timeout=1800)        # the README's main job, on this inventory
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"web-1: open {http_base(box)}/\n" in proc.stdout and "  guestbook: " in proc.stdout
        assert "  Airflow UI: " in proc.stdout and "RECAP deploy" in proc.stdout + proc.stderr, proc.stdout
        browser = Browser(http_base(box))
        for name in AppStack.NAMES:
            browser.add_name(name)
        for author, message in AppStack.ENTRIES:
            assert sign(browser, author, message) in (302, 303)
        yield AppStack(box)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        reap({"dropship.env": box.env})          # its snapshots
