"""PostgreSQL on its own droplet: db-1 [base, postgres] serves web-1 [base, docker, nginx, app,
airflow] over the environment's private network; a third droplet (out-1, not a client) is refused.

One environment of three warm local droplets is created, provisioned and deployed once for the
module: the names app stores what is posted on db-1, Airflow's metadatabase is db-1's, db-1's
PostgreSQL, pg_hba and ufw let in web-1 only, and a second provision changes nothing.
"""
from __future__ import annotations

import html
import json
import time

import pytest

from provision.providers.local import reap
from provision.state import load_droplets
from tests.support import (DEFAULTS, AirflowAPI, AppRepo, Browser, DagRepo, Sandbox, airflow_settings, app_settings,
                           droplet_spec, http_base, last_json, run_name, sandbox_secret, ssh_script)

pytestmark = pytest.mark.integration

DB, WEB, OUT = "db-1", "web-1", "out-1"
NAME = "Ada \"db-1\" O'Hara"


class Split:
    def __init__(self, box: Sandbox, provision: dict, deploy: dict, output: str):
        self.box, self.provision, self.deploy, self.output = box, provision, deploy, output

    def address(self, host: str) -> str:
        return load_droplets(self.box.environment())[host].private_address

    def ssh(self, host: str, script: str) -> str:
        return ssh_script(self.box, script, host=host)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("db-host")
    names, dags = AppRepo.create(root / "names"), DagRepo.create(root / "dags")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"}, "airflow": airflow_settings(dags.root),
                "app": app_settings(names.root)}
    box.write({box.env: {"provider": "local", "droplets": [
        droplet_spec(DB, ["base", "postgres"], "s-1vcpu-2gb", warm=True),
        droplet_spec(WEB, ["base", "docker", "nginx", "app", "airflow"], "s-2vcpu-4gb", warm=True),
        droplet_spec(OUT, ["base"], "s-1vcpu-1gb", warm=True)]}}, defaults)
    try:
        box.invoke("droplet.create", "--env", box.env, check=True)
        provision, proc = box.provision_json()
        output = proc.stdout + proc.stderr
        assert provision["ok"], output[-5000:]
        done = box.invoke("deploy", "--env", box.env, "--json", timeout=1800)
        output += done.stdout + done.stderr
        assert done.returncode == 0, output[-5000:]
        yield Split(box, provision, last_json(done), output)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        reap({"dropship.env": box.env})


def test_the_droplets_know_their_private_addresses(split):
    addresses = {h: split.address(h) for h in (DB, WEB, OUT)}
    assert all(a.count(".") == 3 for a in addresses.values()) and len(set(addresses.values())) == 3, addresses


def test_a_name_posted_through_the_app_is_stored_on_db_1(split):
    browser = Browser(http_base(split.box, WEB))
    browser.add_name(NAME)
    assert NAME in [html.unescape(n) for n in browser.page()[1]]
    rows = split.ssh(DB, "runuser -u postgres -- psql -d names -Atc 'select name from name'")
    assert NAME in rows.splitlines(), rows
    # the app's URL names db-1's private address
    url = split.ssh(WEB, "grep -h '^DATABASE_URL=' /srv/names/releases/*/.env | head -n 1")
    assert f"@{split.address(DB)}:5432/names" in url


def test_the_deploy_took_its_dump_and_revision_on_db_1(split):
    dumps = split.ssh(DB, "ls /var/backups/dropship/names")
    assert any(line.startswith("pre-") and line.endswith(".dump") for line in dumps.split()), dumps
    revision = split.ssh(WEB, "cat /srv/names/releases/*/.dropship-db-revision")
    assert revision.strip() and revision.strip() == split.ssh(
        DB, "runuser -u postgres -- psql -d names -Atc 'select version_num from alembic_version'").strip()


def test_airflow_runs_against_db_1(split):
    api = AirflowAPI.of(split.box, WEB)
    deadline = time.monotonic() + 120
    while True:
        status, body = api.call("GET", "/api/v2/monitor/health")
        if status == 200 and body.get("metadatabase", {}).get("status") == "healthy":
            break
        assert time.monotonic() < deadline, (status, body)
        time.sleep(2)
    tables = split.ssh(DB, "runuser -u postgres -- psql -d airflow -Atc \"select count(*) from dag\"")
    assert int(tables.strip()) >= 1, tables
    conn = split.ssh(WEB, "grep -h '^AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=' /srv/airflow/airflow.env")
    assert f"@{split.address(DB)}:5432/airflow" in conn


def test_postgres_on_db_1_lets_in_exactly_web_1(split):
    db, web = split.address(DB), split.address(WEB)
    listen = split.ssh(DB, "runuser -u postgres -- psql -Atc 'show listen_addresses'").strip()
    assert listen == f"localhost,{db}"
    rules = split.ssh(DB, "runuser -u postgres -- psql -Atc \"select type, database, user_name, address, netmask, "
                          "auth_method from pg_hba_file_rules where type = 'host' order by line_number\"")
    assert rules.splitlines() == [
        "host|{all}|{all}|127.0.0.1|255.255.255.255|scram-sha-256",
        "host|{all}|{all}|::1|ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff|scram-sha-256",
        f"host|{{names}}|{{names}}|{web}|255.255.255.255|scram-sha-256",
        f"host|{{airflow}}|{{airflow}}|{web}|255.255.255.255|scram-sha-256"], rules
    ufw = split.ssh(DB, "ufw status | grep 5432 || true")
    assert [line.split() for line in ufw.splitlines()] == [["5432/tcp", "ALLOW", web]], ufw

    probe = f"timeout 5 bash -c '</dev/tcp/{db}/5432' && echo open || echo refused"
    assert split.ssh(WEB, probe).strip() == "open"
    assert split.ssh(OUT, probe).strip() == "refused"          # ufw drops it
    # pg_hba refuses a host it does not list (db-1's own private address, which ufw lets through)
    hba = split.ssh(DB, f"psql -w 'host={db} dbname=names user=names connect_timeout=5' -c 'select 1' 2>&1 || true")
    assert f'no pg_hba.conf entry for host "{db}"' in hba, hba


def test_secrets_never_show(split):
    for name in ("app_db_password", "airflow_db_password"):
        assert sandbox_secret(split.box, name) not in split.output


def test_a_second_provision_changes_nothing(split):
    again, proc = split.box.provision_json()
    assert again["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    changed = {h: r["changed"] for h, r in again["hosts"].items()}
    assert changed == {DB: 0, WEB: 0, OUT: 0}, json.dumps(again["changes"], indent=1)
