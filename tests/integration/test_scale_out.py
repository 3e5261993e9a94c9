"""Scale-out end to end: every role on a host of its own, over the environment's private network.

    lb-1       [base, nginx, lb]               nginx balancing web-1 and web-2
    web-1/2    [base, nginx, app]              the names app (blue/green slots behind each host's nginx)
    db-1       [base, postgres]                the app's and Airflow's databases
    airflow-1  [base, docker, nginx, airflow]  Airflow with the CeleryExecutor, Redis as its broker, Flower
    worker-1   [base, docker, airflow_worker]  the only Celery worker
    out-1      [base]                          a host let in nowhere

One environment of warm local droplets is created, provisioned and deployed once for the module;
the tests run in order and share it. Under load through the lb (0 failed requests): a rolling
deploy, a rolling rollback, a release failing its health check (stops after the first batch), a
rolling resize of the web tier, a third web host joining after its gate and drained when removed
(its droplet then destroyed by name), a deploy after one killed while web-1 was drained, and last
PostgreSQL moving to a new db-2 with the app's and Airflow's data. Helloworld runs on worker-1;
PostgreSQL and Redis let in exactly their clients.
"""
from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest

from provision.providers.local import reap
from provision.state import load_droplets
from tests.loadgen import LoadGenerator
from tests.support import (DEFAULTS, INVOKE, AirflowAPI, AppRepo, Browser, DagRepo, Sandbox, airflow_settings,
                           app_settings, docker_exec, droplet_spec, heading, http_base, last_json, one_error_line,
                           poll, run_name, sandbox_secret, ssh_script)

pytestmark = pytest.mark.integration

LB, WEB, DB, AIRFLOW, WORKER, OUT = "lb-1", ["web-1", "web-2"], "db-1", "airflow-1", "worker-1", "out-1"
SMALL, BIGGER = "s-1vcpu-2gb", "s-2vcpu-2gb"
VIEWS = "names/views.py"
HEALTHY = 'return {"status": "ok", "release": release}'
NAME = "Ada \"db-1\" O'Hara"
DAG = "Helloworld"
COMPOSE = "docker compose --project-directory /srv/airflow -p airflow"


@dataclass
class Farm:
    box: Sandbox
    repo: AppRepo
    dags: DagRepo
    output: str = ""
    web_size: str = SMALL
    db: str = DB                         # the host with the postgres role
    gone: str = ""                       # the private address of a web host removed from the inventory
    releases: dict[str, str] = field(default_factory=dict)     # version label -> release id

    @property
    def url(self) -> str:
        return http_base(self.box, LB)

    @property
    def api(self) -> AirflowAPI:
        return AirflowAPI.of(self.box, AIRFLOW)

    def write(self, web: list[str]) -> None:
        droplets = [droplet_spec(LB, ["base", "nginx", "lb"], "s-1vcpu-1gb", warm=True)]
        droplets += [droplet_spec(w, ["base", "nginx", "app"], self.web_size, warm=True) for w in web]
        droplets += [droplet_spec(DB, ["base"] + (["postgres"] if self.db == DB else []), "s-1vcpu-2gb", warm=True),
                     *([droplet_spec(self.db, ["base", "postgres"], "s-1vcpu-2gb", warm=True)] if self.db != DB else []),
                     droplet_spec(AIRFLOW, ["base", "docker", "nginx", "airflow"], "s-2vcpu-4gb", warm=True),
                     droplet_spec(WORKER, ["base", "docker", "airflow_worker"], "s-2vcpu-4gb", warm=True),
                     droplet_spec(OUT, ["base"], "s-1vcpu-1gb", warm=True)]
        app = {k: v for k, v in app_settings(self.repo.root).items() if k != "health_path"}
        defaults = {**DEFAULTS, "app": {**app, "health": {"path": "/healthz", "timeout": 10}},
                    "airflow": {**airflow_settings(self.dags.root), "executor": "celery",
                                "flower": {"url_path": "/celery", "user": "watch"}}}
        self.box.write({self.box.env: {"provider": "local", "droplets": droplets, "deploy": {"batch_size": 1}}},
                       defaults)

    def deploy(self, label: str | None, *args: str, check: bool = True):
        if label and label != "v1":
            self.repo.version(label)
        proc = self.box.invoke("deploy", "--env", self.box.env, "--json", *args, timeout=1800)
        self.output += proc.stdout + proc.stderr
        if check:
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
            self.releases[label] = last_json(proc)["release"]
        return proc

    def address(self, host: str) -> str:
        return load_droplets(self.box.environment())[host].private_address

    def ssh(self, host: str, script: str) -> str:
        return ssh_script(self.box, script, host=host)

    def tcp(self, host: str, address: str, port: int) -> str:
        return self.ssh(host, f"timeout 5 bash -c '</dev/tcp/{address}/{port}' 2>/dev/null && echo open "
                              "|| echo refused").strip()

    def container(self, host: str) -> str:
        return f"dropship-{self.box.env}-{host}"

    def cpus(self, host: str) -> int:
        out = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.NanoCpus}}", self.container(host)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    def live(self, host: str) -> str:
        """The release the host's own nginx serves (/healthz on its published port 80)."""
        return Browser(http_base(self.box, host)).health()["release"]

    def through_lb(self, n: int = 6) -> set[str]:
        return {Browser(self.url).health()["release"] for _ in range(n)}

    def upstream(self) -> str:
        return self.ssh(LB, "cat /etc/nginx/dropship/lb-upstream.conf")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale-out")
    repo, dags = AppRepo.create(root / "names"), DagRepo.create(root / "dags")
    (root / "env").mkdir()
    farm = Farm(Sandbox(root / "env", run_name()), repo, dags)
    farm.write(WEB)
    try:
        farm.box.preload_airflow(AIRFLOW, WORKER)     # shipping the image is test_airflow_image_build's
        farm.box.invoke("droplet.create", "--env", farm.box.env, check=True)
        report, proc = farm.box.provision_json()
        farm.output += proc.stdout + proc.stderr
        assert report["ok"], farm.output[-6000:]
        assert set(report["hosts"]) == {LB, *WEB, DB, AIRFLOW, WORKER, OUT}
        farm.deploy("v1")
        yield farm
    finally:
        farm.box.invoke("droplet.destroy", "--env", farm.box.env, "--yes")
        reap({"dropship.env": farm.box.env})


def under_load(farm: Farm, action, what: str):
    """Run ``action`` with /healthz and / loaded through the lb; no request may fail."""
    health = LoadGenerator(farm.url + "/healthz", rate=40, concurrency=6).start()
    page = LoadGenerator(farm.url + "/", rate=10, concurrency=3, keepalive=True).start()
    try:
        time.sleep(0.5)
        result = action()
        time.sleep(1.0)
    finally:
        stats = health.stop(), page.stop()
    for s in stats:
        print(f"{what}: {s.summary()}")
        assert s.total > 0 and s.failed == 0, f"{what}: {s.summary()}"
    return result, stats[0]


# --- the private network and who is let in --------------------------------------------------------

def test_the_droplets_know_their_private_addresses(farm):
    addresses = {h: farm.address(h) for h in (LB, *WEB, DB, AIRFLOW, WORKER, OUT)}
    assert all(a.count(".") == 3 for a in addresses.values()) and len(set(addresses.values())) == 7, addresses


def test_the_lb_serves_both_web_hosts(farm):
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1}
    assert farm.through_lb() == {v1}
    upstream = farm.upstream()
    assert len(re.findall(r"^server \S+:80 max_fails=1 fail_timeout=5s;   # web-\d$", upstream, re.M)) == 2, upstream
    assert heading("v1") in Browser(farm.url).open("/")[2]
    ufw = farm.ssh(WEB[0], "ufw status | grep '^80/tcp' || true")
    assert ["80/tcp", "ALLOW", farm.address(LB)] in [line.split() for line in ufw.splitlines()], ufw


def test_a_name_posted_through_the_lb_is_stored_on_db_1(farm):
    browser = Browser(farm.url)
    browser.add_name(NAME)
    assert NAME in [html.unescape(n) for n in browser.page()[1]]
    rows = farm.ssh(DB, "runuser -u postgres -- psql -d names -Atc 'select name from name'")
    assert NAME in rows.splitlines(), rows
    for w in WEB:       # both web hosts' releases name db-1's private address
        url = farm.ssh(w, "grep -h '^DATABASE_URL=' /srv/names/releases/*/.env | head -n 1")
        assert f"@{farm.address(DB)}:5432/names" in url, w


def test_the_deploy_took_its_dump_and_revision_on_db_1(farm):
    dumps = farm.ssh(DB, "ls /var/backups/dropship/names")
    assert any(line.startswith("pre-") and line.endswith(".dump") for line in dumps.split()), dumps
    revision = farm.ssh(WEB[0], "cat /srv/names/releases/*/.dropship-db-revision")
    assert revision.strip() and revision.strip() == farm.ssh(
        DB, "runuser -u postgres -- psql -d names -Atc 'select version_num from alembic_version'").strip()


def test_postgres_on_db_1_lets_in_exactly_its_clients(farm):
    db = farm.address(DB)
    listen = farm.ssh(DB, "runuser -u postgres -- psql -Atc 'show listen_addresses'").strip()
    assert listen == f"localhost,{db}"
    rules = farm.ssh(DB, "runuser -u postgres -- psql -Atc \"select database, user_name, address, auth_method "
                         "from pg_hba_file_rules where type = 'host' and address not in ('127.0.0.1', '::1')\"")
    want = {f"{{names}}|{{names}}|{farm.address(w)}|scram-sha-256" for w in WEB}
    want |= {f"{{airflow}}|{{airflow}}|{farm.address(h)}|scram-sha-256" for h in (AIRFLOW, WORKER)}
    assert sorted(rules.split()) == sorted(want), rules
    ufw = farm.ssh(DB, "ufw status | grep 5432 || true")
    assert sorted(line.split()[2] for line in ufw.splitlines()) == \
        sorted(farm.address(h) for h in (*WEB, AIRFLOW, WORKER)), ufw
    for host in (WEB[1], WORKER):
        assert farm.tcp(host, db, 5432) == "open", host
    assert farm.tcp(OUT, db, 5432) == "refused"            # ufw drops it
    # pg_hba refuses a host it does not list (db-1's own private address, which ufw lets through)
    hba = farm.ssh(DB, f"psql -w 'host={db} dbname=names user=names connect_timeout=5' -c 'select 1' 2>&1 || true")
    assert f'no pg_hba.conf entry for host "{db}"' in hba, hba


def test_redis_on_airflow_1_answers_worker_1_with_the_password_only_and_refuses_out_1(farm):
    address = farm.address(AIRFLOW)
    assert farm.tcp(OUT, address, 6379) == "refused"          # ufw drops it
    assert farm.tcp(WEB[0], address, 6379) == "refused"
    password = sandbox_secret(farm.box, "airflow_redis_password")
    talk = ("import os, socket, time\n"
            f"s = socket.create_connection(({address!r}, 6379), timeout=5)\n"
            "s.sendall(os.environ['SAY'].encode()); time.sleep(1); print(s.recv(200).decode())\n")

    def ask(say: str) -> str:       # the password travels in the environment, never on a command line
        proc = subprocess.run(["docker", "exec", "-i", "-e", "SAY", farm.container(WORKER), "python3", "-"],
                              input=talk, env={"SAY": say, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                              timeout=60)
        return proc.stdout + proc.stderr

    assert "NOAUTH" in ask("PING\r\n")
    assert ask(f"AUTH {password}\r\nPING\r\n").split() == ["+OK", "+PONG"]


# --- Airflow: the scheduler on airflow-1, the tasks on worker-1 -------------------------------------

def test_airflow_status_lists_the_worker_host_healthy(farm):
    proc = farm.box.invoke("airflow.status", "--env", farm.box.env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = last_json(proc)
    assert [(r["host"], r["health"]) for r in rows if r["service"] == "airflow-worker"] == \
        [(WORKER, "healthy")], rows
    assert [(r["host"], r["health"]) for r in rows if r["service"] == "airflow-flower"] == \
        [(AIRFLOW, "healthy")], rows
    assert all(r["state"] == "running" for r in rows) and "recap:" in proc.stdout, rows
    status = farm.box.invoke("status", "--env", farm.box.env, "--json")
    found = last_json(status)
    assert [(s["service"], s["health"]) for s in found[WORKER]["airflow"]] == [("airflow-worker", "healthy")], found
    assert "airflow-scheduler" in {s["service"] for s in found[AIRFLOW]["airflow"]}
    assert set(found[DB]["backups"]) >= {"names"} and found[LB]["airflow"] == [], found


def flower(farm: Farm, path: str, login: tuple[str, str] | None) -> tuple[int, str]:
    import base64
    import urllib.error
    import urllib.request

    req = urllib.request.Request(http_base(farm.box, AIRFLOW) + "/celery" + path)
    if login:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_flower_shows_worker_1_behind_its_login(farm):
    password = sandbox_secret(farm.box, "airflow_flower_password")
    assert flower(farm, "/workers", None)[0] == 401
    assert flower(farm, "/workers", ("watch", password + "x"))[0] == 401
    status, body = flower(farm, "/api/workers?refresh=1", ("watch", password))
    assert status == 200 and f"celery@{WORKER}" in json.loads(body), body[:500]
    status, page = flower(farm, "/workers", ("watch", password))
    assert status == 200 and "/celery/static/" in page, page[:500]        # its links carry the path
    assert farm.tcp(OUT, farm.address(AIRFLOW), 5555) == "refused"         # on 127.0.0.1 only


def test_a_helloworld_run_executes_on_worker_1_against_db_1(farm):
    api = farm.api
    status, run = api.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None})
    assert status == 200, (status, run)
    path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"

    def finished():
        state = api.get(path)["state"]
        return state if state in ("success", "failed") else None

    assert poll(f"run {run['dag_run_id']} finished", finished, 400, every=2) == "success"
    tis = api.get(path + "/taskInstances")["task_instances"]
    assert sorted((t["task_id"], t["state"]) for t in tis) == [(f"task_{n}", "success") for n in range(1, 5)], tis
    hostname = docker_exec(farm.container(WORKER), f"{COMPOSE} exec -T airflow-worker hostname").strip()
    assert hostname == WORKER and {t["hostname"] for t in tis} == {hostname}, [t["hostname"] for t in tis]
    log = api.get(path + "/taskInstances/task_1/logs/1")
    assert "Hello World from Task 1" in json.dumps(log), str(log)[:2000]
    runs = farm.ssh(DB, f"runuser -u postgres -- psql -d airflow -Atc \"select state from dag_run where "
                        f"run_id = '{run['dag_run_id']}'\"")
    assert runs.strip() == "success", runs
    assert "worker" not in farm.ssh(AIRFLOW, f"{COMPOSE} ps --services")       # no worker on airflow-1


def test_a_dag_change_reaches_worker_1_and_airflow_1_together(farm):
    farm.dags.edit("helloworld.py", "Hello World from Task {n}", "Hello again from Task {n}", "DAGs v2")
    done = farm.box.invoke("deploy", "--env", farm.box.env, "--only", "airflow", "--json", timeout=1200)
    farm.output += done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    release = last_json(done)["releases"]["airflow"]
    for host in (AIRFLOW, WORKER):
        assert farm.ssh(host, "readlink /srv/airflow/dags/current").strip() == f"releases/{release}", host
        assert "Hello again" in farm.ssh(host, "cat /srv/airflow/dags/current/helloworld.py"), host


# --- the web tier: rolling deploys, rollback, resize, growing and shrinking -------------------------

def test_a_rolling_deploy_under_load_fails_no_request(farm):
    proc, load = under_load(farm, lambda: farm.deploy("v2"), "deploy v2")
    v2 = farm.releases["v2"]
    assert {farm.live(w) for w in WEB} == {v2}
    assert farm.through_lb() == {v2}
    assert heading("v2") in Browser(farm.url).open("/")[2]
    out = proc.stdout + proc.stderr
    assert "batch 1/2: web-1" in out and "batch 2/2: web-2" in out, out
    assert "drain web-1" in out and "put back web-2" in out, out
    assert out.count("release command: flask --app wsgi db upgrade") == 1, out      # on the first host only
    assert set(load.releases) <= {farm.releases["v1"], v2}


def test_a_rolling_rollback_under_load_fails_no_request(farm):
    def back():
        proc = farm.box.invoke("rollback", "--env", farm.box.env, "--app", "names")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        return proc

    proc, _ = under_load(farm, back, "rollback")
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1} and farm.through_lb() == {v1}
    assert "RECAP rollback" in proc.stdout and all(h in proc.stdout for h in (LB, *WEB))


def test_a_release_failing_its_health_check_stops_after_the_first_batch(farm):
    views = farm.repo.root / VIEWS
    views.write_text(views.read_text().replace(HEALTHY, 'return {"status": "broken", "release": release}, 500'))
    farm.repo.commit("broken health")
    try:
        proc, _ = under_load(farm, lambda: farm.deploy(None, "--only", "names", check=False), "broken deploy")
    finally:
        views.write_text(views.read_text().replace('return {"status": "broken", "release": release}, 500', HEALTHY))
        farm.repo.commit("healthy again")
    assert proc.returncode != 0
    report = last_json(proc)
    assert report["hosts"]["web-1"]["failed"] == 1 and report["hosts"]["web-2"]["skipped"] == 1, report
    error = report["hosts"]["web-1"]["error"]
    assert "web-1: health check" in error and "deploy stopped at batch 1/2" in error, error
    assert "web-2 untouched" in error and "invoke deploy --env" in error, error
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1} and farm.through_lb() == {v1}
    assert " down" not in farm.upstream() and "\n" not in error


def test_a_web_host_that_does_not_answer_stops_the_deploy_before_anything_changes(farm):
    dumps = farm.ssh(DB, "ls /var/backups/dropship/names")
    upstream = farm.upstream()
    subprocess.run(["docker", "pause", farm.container("web-2")], check=True, capture_output=True)
    try:       # web-2 hangs: its SSH port takes the connection and says nothing
        proc = farm.deploy("v2 again", "--only", "names", check=False)
    finally:
        subprocess.run(["docker", "unpause", farm.container("web-2")], check=True, capture_output=True)
    assert proc.returncode != 0
    report = last_json(proc)
    assert report["hosts"]["web-2"]["failed"] == 1, report
    assert all(report["hosts"][h]["skipped"] == 1 for h in (LB, "web-1")), report
    error = report["hosts"]["web-2"]["error"]
    assert error.startswith("web-2: connect: unreachable at ") and "; deploy changed nothing (fix: " in error, error
    # batch 1 (web-1) was not drained, migrated or switched
    assert "drain" not in proc.stdout + proc.stderr and farm.upstream() == upstream
    assert farm.ssh(DB, "ls /var/backups/dropship/names") == dumps
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1} and farm.through_lb() == {v1}


def test_a_rolling_resize_of_the_web_tier_under_load_fails_no_request(farm):
    cpus = {w: farm.cpus(w) for w in WEB}
    farm.web_size = BIGGER
    farm.write(WEB)

    def resize():
        proc = farm.box.invoke("droplet.resize", "--env", farm.box.env, "--no-snapshot", "--json", timeout=1800)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
        return proc

    proc, _ = under_load(farm, resize, "resize of the web tier")
    report, out = last_json(proc), proc.stdout + proc.stderr
    assert set(report["plan"]) == set(WEB), report["plan"]          # only the web hosts changed size
    for w in WEB:
        assert load_droplets(farm.box.environment())[w].size == BIGGER
        assert report["downtime"][w]["requests"] > 0, report["downtime"]     # its prober asked the lb
        assert farm.cpus(w) > cpus[w], (w, cpus)                      # a real resize: the CPU limit grew
    # one host at a time: each drained from the lb, resized, gated from the lb, put back
    order = [out.index(f"drain {w} from {LB}") for w in WEB] + [out.index(f"put back {w} in {LB}") for w in WEB]
    assert order[0] < order[2] < order[1] < order[3], out
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1} and farm.through_lb(8) == {v1}
    upstream = farm.upstream()
    assert " down" not in upstream and upstream.count("max_fails=1") == 2, upstream


def test_a_third_web_host_joins_after_its_gate_and_is_drained_when_removed(farm):
    farm.write(WEB + ["web-3"])
    farm.box.invoke("droplet.create", "--env", farm.box.env, check=True)
    report, proc = farm.box.provision_json()
    assert report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "web-3" not in farm.upstream()
    proc, _ = under_load(farm, lambda: farm.deploy("v3", "--only", "names"), "deploy v3 with web-3")
    out = proc.stdout + proc.stderr
    assert out.index("gate web-3") < out.index("put back web-3"), out
    v3 = farm.releases["v3"]
    assert {farm.live(w) for w in WEB + ["web-3"]} == {v3}
    assert "# web-3" in farm.upstream() and farm.through_lb(9) == {v3}
    assert farm.tcp("web-3", farm.address(DB), 5432) == "open"
    # web-3 joined with v3: it has no previous release to go back to, so a rollback changes no host
    proc = farm.box.invoke("rollback", "--env", farm.box.env, "--app", "names", "--json")
    assert proc.returncode != 0
    report = last_json(proc)
    error = report["hosts"]["web-3"]["error"]
    assert error.startswith("web-3: rollback: no previous release is kept warm; rollback changed nothing"), error
    assert "leave web-3 out with --hosts" in error and "\n" not in error, error
    assert all(report["hosts"][w]["skipped"] == 1 for w in WEB), report
    assert {farm.live(w) for w in WEB + ["web-3"]} == {v3} and "drain" not in proc.stdout + proc.stderr
    farm.gone = farm.address("web-3")

    farm.write(WEB)
    proc, _ = under_load(farm, lambda: farm.deploy("v4", "--only", "names"), "deploy v4 without web-3")
    assert "# web-3" not in farm.upstream(), farm.upstream()
    assert farm.through_lb(9) == {farm.releases["v4"]}
    assert "upstream: web-1, web-2 (" in proc.stderr + proc.stdout      # web-3 drained first

    # web-3's droplet is left over: listed as such, and destroyed by name; a web host the lb still
    # sends requests to is not destroyed
    listed = json.loads(farm.box.invoke("droplet.list", "--env", farm.box.env, "--json", check=True).stdout)
    assert {d["name"]: d["in_inventory"] for d in listed}["web-3"] is False
    proc = farm.box.invoke("droplet.destroy", "--env", farm.box.env, "--hosts", "web-2", "--yes")
    assert proc.returncode != 0 and one_error_line(proc).startswith(
        "error: web-2 still in lb-1's upstream: destroying would fail the requests sent there; destroyed nothing"), \
        proc.stdout + proc.stderr
    proc = farm.box.invoke("droplet.destroy", "--env", farm.box.env, "--hosts", "web-3", "--yes", check=True)
    listed = json.loads(farm.box.invoke("droplet.list", "--env", farm.box.env, "--json", check=True).stdout)
    assert "web-3" not in {d["name"] for d in listed} and {"web-2", LB} <= {d["name"] for d in listed}
    assert farm.through_lb(9) == {farm.releases["v4"]}


def test_provision_drains_a_server_no_longer_in_the_inventory(farm):
    gone = "server 10.254.254.254:80 down;   # web-9\n"
    farm.ssh(LB, f"printf '%s' '{gone}' >> /etc/nginx/dropship/lb-upstream.conf && nginx -t -q")
    report, proc = farm.box.provision_json()
    assert report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
    assert report["hosts"][LB]["changed"] >= 1
    upstream = farm.upstream()
    assert "10.254.254.254" not in upstream and upstream.count("max_fails=1") == 2, upstream
    assert farm.through_lb() == {farm.releases["v4"]}
    # web-3 left the inventory: db-1 no longer lets it in
    assert farm.gone and farm.gone not in farm.ssh(DB, "ufw status")


def test_a_rollout_killed_while_a_host_is_drained_is_finished_by_the_next_deploy(farm):
    farm.repo.version("v5-killed")
    env = dict(os.environ, DROPSHIP_INVENTORY=str(farm.box.inventory))
    proc = subprocess.Popen(INVOKE + ["deploy", "--env", farm.box.env, "--only", "names"], cwd=farm.box.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "drain web-1" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert any("drain web-1" in line for line in seen), "".join(seen)
    status = farm.box.invoke("status", "--env", farm.box.env, "--hosts", LB, check=True).stdout
    assert ("upstream: web-1 DRAINED, web-2 serving (left drained by a deploy, rollback or resize that did not "
            "finish: run it again to put it back)") in status, status
    assert farm.through_lb() == {farm.releases["v4"]}                  # web-2 serves meanwhile
    under_load(farm, lambda: farm.deploy("v5", "--only", "names"), "deploy v5 after a killed one")
    status = farm.box.invoke("status", "--env", farm.box.env, "--hosts", LB, check=True).stdout
    assert "upstream: web-1 serving, web-2 serving\n" in status, status
    assert {farm.live(w) for w in WEB} == {farm.releases["v5"]} and farm.through_lb(8) == {farm.releases["v5"]}
    logs = farm.box.invoke("logs", "--env", farm.box.env, "--hosts", LB, "--since", "10m", check=True).stdout
    assert any(line.startswith(f"[{LB}] nginx-access: ") and "GET /healthz" in line for line in logs.splitlines()), \
        logs[-3000:]


def test_secrets_never_show(farm):
    for name in ("app_db_password", "airflow_db_password", "airflow_redis_password", "airflow_flower_password"):
        assert sandbox_secret(farm.box, name) not in farm.output


def test_a_second_provision_changes_nothing(farm):
    again, proc = farm.box.provision_json()
    assert again["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    changed = {h: r["changed"] for h, r in again["hosts"].items()}
    assert changed == {h: 0 for h in (LB, *WEB, DB, AIRFLOW, WORKER, OUT)}, json.dumps(again["changes"], indent=1)


def test_postgres_moves_to_db_2_under_load_and_loses_nothing(farm):
    """The postgres role moves from db-1 to a new db-2, every step under load through the lb. The first
    provision sets db-2 up and refuses to start Airflow on its empty database, while db-1 still lets in
    web-1 and web-2 (their live releases read it); `db.copy --from db-1` copies the app's and Airflow's
    databases with Airflow stopped; provision starts Airflow on db-2; the rolling deploy switches the web
    hosts. No request fails, the posted name and Airflow's runs are read from db-2, and once the next
    deploy has replaced the warm slots (which read db-1), `provision --purge` closes db-1."""
    env = farm.box.env
    runs = farm.api.get(f"/api/v2/dags/{DAG}/dagRuns")["total_entries"]
    assert runs > 0
    farm.db = "db-2"
    farm.write(WEB)
    farm.box.invoke("droplet.create", "--env", env, check=True)
    old, new = farm.address(DB), farm.address("db-2")
    done: dict[str, subprocess.CompletedProcess] = {}

    def move() -> None:
        done["provision"] = farm.box.invoke("provision", "--env", env, timeout=1800)
        done["copy"] = farm.box.invoke("db.copy", "--env", env, "--from", DB, "--yes", timeout=1800)
        done["again"] = farm.box.invoke("provision", "--env", env, timeout=1800)
        done["deploy"] = farm.deploy("v6", "--only", "names", check=False)

    under_load(farm, move, "postgres moves to db-2")
    for proc in done.values():
        farm.output += proc.stdout + proc.stderr
    first = done["provision"].stdout + done["provision"].stderr
    assert done["provision"].returncode == 1 and "Traceback" not in first, first[-4000:]
    assert (f"error: {AIRFLOW}: airflow database move: Airflow's database airflow moves from PostgreSQL on {DB} "
            f"({old}) (where Airflow reads it now) to PostgreSQL on db-2 ({new}), where it has no tables") in first, \
        first[-4000:]
    assert f"`invoke db.copy --env {env} --from {DB}`" in first
    copied = done["copy"].stdout
    assert done["copy"].returncode == 0 and f"recap: 2 database(s) copied from {DB} to db-2 in " in copied, \
        copied + done["copy"].stderr
    assert done["again"].returncode == 0, done["again"].stdout[-4000:] + done["again"].stderr[-4000:]
    assert done["deploy"].returncode == 0, done["deploy"].stdout[-4000:] + done["deploy"].stderr[-4000:]

    ufw = farm.ssh(DB, "ufw status | grep 5432 || true")          # kept for the move, closed by --purge
    assert sorted(line.split()[2] for line in ufw.splitlines()) == \
        sorted(farm.address(h) for h in (*WEB, AIRFLOW, WORKER)), ufw
    farm.deploy("v7", "--only", "names")       # the warm slots, which read db-1, now hold a db-2 release
    purged, proc = farm.box.provision_json("--purge", "--hosts", DB)
    assert purged["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert farm.ssh(DB, "ufw status | grep 5432 || true").strip() == ""
    docker_exec(farm.container(DB), "systemctl stop postgresql")
    assert NAME in [html.unescape(n) for n in Browser(farm.url).page()[1]]         # read from db-2
    assert farm.api.get(f"/api/v2/dags/{DAG}/dagRuns")["total_entries"] == runs
    for w in WEB:
        url = farm.ssh(w, f"grep -h '^DATABASE_URL=' /srv/names/releases/{farm.live(w)}/.env")
        assert f"@{new}:5432/names" in url, w
    for name in ("app_db_password", "airflow_db_password"):
        assert sandbox_secret(farm.box, name) not in farm.output
