"""Celery workers on a host of their own: airflow-1 [base, postgres, docker, nginx, airflow] runs the
scheduler, Redis and PostgreSQL; worker-1 [base, docker, airflow_worker] runs the only Celery worker,
reaching them over the private network; out-1 [base] is a host that is let in nowhere.

One environment of three warm local droplets (CeleryExecutor) is created, provisioned and deployed
once for the module, and destroyed at the end.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse

import pytest

from provision.providers.local import reap
from provision.state import load_droplets
from tests.support import (DEFAULTS, AirflowAPI, DagRepo, Sandbox, airflow_settings, docker_exec, droplet_spec,
                           last_json, run_name, sandbox_secret, ssh_script)

pytestmark = pytest.mark.integration

AIRFLOW, WORKER, OUT = "airflow-1", "worker-1", "out-1"
DAG = "Helloworld"
COMPOSE = "docker compose --project-directory /srv/airflow -p airflow"


class Workers:
    def __init__(self, box: Sandbox, dags: DagRepo, output: str):
        self.box, self.dags, self.output = box, dags, output
        self.api = AirflowAPI.of(box, AIRFLOW)

    def address(self, host: str) -> str:
        return load_droplets(self.box.environment())[host].private_address

    def container(self, host: str) -> str:
        return f"dropship-{self.box.env}-{host}"

    def ssh(self, host: str, script: str) -> str:
        return ssh_script(self.box, script, host=host)


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow-workers")
    dags = DagRepo.create(root / "dags")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"},
                "airflow": {**airflow_settings(dags.root), "executor": "celery"}}
    box.write({box.env: {"provider": "local", "droplets": [
        droplet_spec(AIRFLOW, ["base", "postgres", "docker", "nginx", "airflow"], "s-2vcpu-4gb", warm=True),
        droplet_spec(WORKER, ["base", "docker", "airflow_worker"], "s-2vcpu-4gb", warm=True),
        droplet_spec(OUT, ["base"], "s-1vcpu-1gb", warm=True)]}}, defaults)
    try:
        box.invoke("droplet.create", "--env", box.env, check=True)
        provision, proc = box.provision_json()
        output = proc.stdout + proc.stderr
        assert provision["ok"], output[-6000:]
        done = box.invoke("deploy", "--env", box.env, "--json", timeout=1800)
        output += done.stdout + done.stderr
        assert done.returncode == 0 and last_json(done)["ok"], output[-6000:]
        yield Workers(box, dags, output)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        reap({"dropship.env": box.env})


def poll(what: str, probe, within: float, every: float = 2.0):
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:.0f} s (last: {value!r})")
        time.sleep(every)


def tcp(workers: Workers, host: str, address: str, port: int) -> str:
    return workers.ssh(host, f"timeout 5 bash -c '</dev/tcp/{address}/{port}' 2>/dev/null && echo open || echo refused"
                       ).strip()


def test_status_lists_the_worker_host_healthy(workers):
    proc = workers.box.invoke("airflow.status", "--env", workers.box.env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = last_json(proc)
    assert [(r["host"], r["service"], r["health"]) for r in rows if r["service"] == "airflow-worker"] == \
        [(WORKER, "airflow-worker", "healthy")], rows
    assert all(r["state"] == "running" for r in rows) and "recap:" in proc.stdout, rows


def test_a_run_runs_on_worker_1_and_its_log_reads_back(workers):
    status, run = workers.api.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None})
    assert status == 200, (status, run)
    path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"

    def finished():
        state = workers.api.get(path)["state"]
        return state if state in ("success", "failed") else None

    assert poll(f"run {run['dag_run_id']} finished", finished, 400) == "success"
    tis = workers.api.get(path + "/taskInstances")["task_instances"]
    assert sorted((t["task_id"], t["state"]) for t in tis) == [(f"task_{n}", "success") for n in range(1, 5)], tis
    hostname = docker_exec(workers.container(WORKER), f"{COMPOSE} exec -T airflow-worker hostname").strip()
    assert hostname == WORKER and {t["hostname"] for t in tis} == {hostname}, [t["hostname"] for t in tis]
    log = workers.api.get(path + "/taskInstances/task_1/logs/1")
    assert "Hello World from Task 1" in json.dumps(log), str(log)[:2000]


def test_redis_answers_worker_1_with_the_password_only_and_refuses_out_1(workers):
    address = workers.address(AIRFLOW)
    assert tcp(workers, OUT, address, 6379) == "refused"          # ufw drops it
    password = sandbox_secret(workers.box, "airflow_redis_password")
    talk = ("import os, socket, time\n"
            f"s = socket.create_connection(({address!r}, 6379), timeout=5)\n"
            "s.sendall(os.environ['SAY'].encode()); time.sleep(1); print(s.recv(200).decode())\n")

    def ask(say: str) -> str:       # the password travels in the environment, never on a command line
        proc = subprocess.run(["docker", "exec", "-i", "-e", "SAY", workers.container(WORKER), "python3", "-"],
                              input=talk, env={"SAY": say, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                              timeout=60)
        return proc.stdout + proc.stderr

    assert "NOAUTH" in ask("PING\r\n"), ask("PING\r\n")
    assert ask(f"AUTH {password}\r\nPING\r\n").split() == ["+OK", "+PONG"]
    rules = workers.ssh(AIRFLOW, "sudo ufw status | grep 6379 || true")
    assert [line.split() for line in rules.splitlines() if "172.16.0.0/12" not in line] == \
        [["6379/tcp", "ALLOW", workers.address(WORKER)]], rules


def test_postgres_lets_in_worker_1_and_refuses_out_1(workers):
    address = workers.address(AIRFLOW)
    assert tcp(workers, WORKER, address, 5432) == "open"
    assert tcp(workers, OUT, address, 5432) == "refused"
    rules = workers.ssh(AIRFLOW, "sudo runuser -u postgres -- psql -Atc \"select database, user_name, address "
                                 "from pg_hba_file_rules where address = '" + workers.address(WORKER) + "'\"")
    assert rules.split() == [f"{{airflow}}|{{airflow}}|{workers.address(WORKER)}"], rules


def test_a_dag_change_reaches_worker_1_and_airflow_1_together(workers):
    workers.dags.edit("helloworld.py", "Hello World from Task {n}", "Hello again from Task {n}", "DAGs v2")
    done = workers.box.invoke("deploy", "--env", workers.box.env, "--only", "airflow", "--json", timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    release = last_json(done)["releases"]["airflow"]
    for host in (AIRFLOW, WORKER):
        assert workers.ssh(host, "readlink /srv/airflow/dags/current").strip() == f"releases/{release}", host
        assert "Hello again" in workers.ssh(host, "cat /srv/airflow/dags/current/helloworld.py"), host


def test_secrets_never_show(workers):
    for name in ("airflow_redis_password", "airflow_db_password"):
        assert sandbox_secret(workers.box, name) not in workers.output


def test_a_second_provision_changes_nothing(workers):
    again, proc = workers.box.provision_json()
    assert again["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    changed = {h: r["changed"] for h, r in again["hosts"].items()}
    assert changed == {AIRFLOW: 0, WORKER: 0, OUT: 0}, json.dumps(again["changes"], indent=1)
