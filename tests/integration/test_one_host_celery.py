"""Airflow with the CeleryExecutor on one real local droplet: Redis (Debian's) as the broker on the
host, a Celery worker beside the scheduler that runs the tasks, nothing of it reachable without the
password or from outside, a second provision that changes nothing, and no secret in any output.

The droplet is the session's app stack (two apps and Airflow with ``executor: celery``, brought up
by `invoke up`); these tests leave it as they found it.
"""
from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
from dataclasses import dataclass, field

import pytest
import yaml

from tests.support import AirflowAPI, Sandbox, docker_exec, last_json, poll, sandbox_secret

pytestmark = pytest.mark.integration

DAG = "Helloworld"
SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
BRIDGE = "172.17.0.1"
COMPOSE = "docker compose --project-directory /srv/airflow -p airflow"


@dataclass
class Celery:
    box: Sandbox
    api: AirflowAPI
    container: str
    outputs: list[tuple[str, str]] = field(default_factory=list)     # (command, stdout + stderr) of every run

    def invoke(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        proc = self.box.invoke(*args, timeout=timeout)
        self.outputs.append((" ".join(args[:1]), proc.stdout + proc.stderr))
        return proc


@pytest.fixture(scope="module")
def celery(app_stack):
    """The session's app stack (two apps and Airflow with the CeleryExecutor on one droplet)."""
    box = app_stack.box
    return Celery(box, AirflowAPI.of(box), f"dropship-{box.env}-web-1")


def worker_hostname(stack: Celery) -> str:
    """The worker container's hostname (asked through Docker on the droplet, not SSH)."""
    out = docker_exec(stack.container, f"docker inspect --format '{{{{.Config.Hostname}}}}' "
                                       f"$({COMPOSE} ps -q airflow-worker)")
    return out.strip()


def test_status_lists_the_worker_healthy(celery):
    proc = celery.invoke("airflow.status", "--env", celery.box.env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = last_json(proc)
    assert {r["service"] for r in rows} == SERVICES, rows
    assert all(r["state"] == "running" and r["health"] == "healthy" for r in rows), rows
    env = docker_exec(celery.container, f"{COMPOSE} exec -T airflow-worker printenv AIRFLOW__CORE__EXECUTOR")
    assert env.strip() == "CeleryExecutor"


def test_a_run_succeeds_and_its_tasks_ran_on_the_worker(celery):
    status, run = celery.api.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None})
    assert status == 200, (status, run)
    path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"

    def finished():
        state = celery.api.get(path)["state"]
        return state if state in ("success", "failed") else None

    assert poll(f"run {run['dag_run_id']} finished", finished, 300, every=2) == "success"
    tis = celery.api.get(path + "/taskInstances")["task_instances"]
    assert sorted((t["task_id"], t["state"]) for t in tis) == [(f"task_{n}", "success") for n in range(1, 5)], tis
    worker = worker_hostname(celery)
    assert worker and {t["hostname"] for t in tis} == {worker}, (worker, [t["hostname"] for t in tis])
    log = celery.api.get(path + "/taskInstances/task_1/logs/1")
    assert "Hello World from Task 1" in json.dumps(log), str(log)[:2000]


def test_redis_wants_the_password_and_listens_on_the_bridge_and_loopback_only(celery):
    for address in (BRIDGE, "127.0.0.1"):
        answer = docker_exec(celery.container, f"redis-cli -h {address} ping 2>&1; true")
        assert "NOAUTH" in answer, (address, answer)
    # With the password (given in the environment, not on the command line) it answers.
    password = sandbox_secret(celery.box, "airflow_redis_password")
    proc = subprocess.run(["docker", "exec", "-i", "-e", "REDISCLI_AUTH", celery.container, "redis-cli", "-h", BRIDGE,
                           "ping"], env={"REDISCLI_AUTH": password, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "PONG", proc.stdout + proc.stderr
    listening = set()
    for line in docker_exec(celery.container, "ss -ltnH").splitlines():
        address, _, port = line.split()[3].rpartition(":")
        if port == "6379":
            listening.add(address.strip("[]"))
    assert {"127.0.0.1", BRIDGE} <= listening <= {"127.0.0.1", "::1", BRIDGE}, listening    # ::1 where IPv6 is on
    info = json.loads(subprocess.run(["docker", "inspect", celery.container], capture_output=True, text=True,
                                     check=True).stdout)[0]
    addresses = [n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
    assert addresses and not any(connects(a, 6379) for a in addresses), addresses
    rules = docker_exec(celery.container, "ufw status")
    assert "6379/tcp" in rules and "172.16.0.0/12" in rules.split("6379/tcp", 1)[1].splitlines()[0], rules


def connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def test_a_second_provision_changes_nothing(celery):
    proc = celery.invoke("provision", "--env", celery.box.env, "--json")
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["hosts"]["web-1"]["changed"] == 0 and report["changes"] == [], report


def test_no_secret_appears_in_any_output_or_command_line(celery):
    for args in (("airflow.dags",), ("airflow.logs", "--service", "worker"), ("airflow.logs", "--service", "scheduler")):
        proc = celery.invoke(args[0], "--env", celery.box.env, *args[1:], timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = celery.box.environment().workspace.secrets_path(celery.box.env)
    names = sorted(yaml.safe_load(path.read_text()))
    assert "airflow_redis_password" in names, names
    forms = {n: {v, urllib.parse.quote(v, safe="")} for n in names for v in [sandbox_secret(celery.box, n)]}
    for command, output in celery.outputs:
        leaked = sorted(n for n, values in forms.items() if any(v in output for v in values))
        assert not leaked, f"invoke {command} printed the value of {', '.join(leaked)}"
    processes = docker_exec(celery.container, "ps -eo args")
    assert not [n for n, values in forms.items() if any(v in processes for v in values)], "a secret on a command line"
    env_file = docker_exec(celery.container, "stat -c '%a %U' /srv/airflow/airflow.env /etc/redis/dropship.conf")
    assert env_file.split("\n")[:2] == ["600 root", "640 root"], env_file
