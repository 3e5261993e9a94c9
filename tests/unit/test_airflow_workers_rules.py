"""Celery workers on hosts of their own (pure): the inventory's rules for airflow_worker hosts, the
airflow host's Redis bind line and ufw rules, pg_hba lines for worker hosts, the worker-only compose
file, and the worker host's env file pointing at private addresses."""
import textwrap
from pathlib import Path

import pytest

from provision import placement
from provision.errors import InventoryError
from provision.facts import SystemFacts
from provision.inventory import load_inventory
from provision.roles import RoleContext, airflow, airflow_celery, airflow_worker, base, host_resources, postgres
from provision.transport.ssh import Target
from provision.workflows.provision import waves
from tests.unit.test_inventory import assert_located
from tests.unit.test_templates import AIRFLOW_SECRETS

WORKERS = """\
environments:
  e:
    provider: local
    droplets:
      - name: airflow-1
        size: s-2vcpu-4gb
        roles: [base, postgres, docker, nginx, airflow]
      - name: worker-1
        size: s-2vcpu-4gb
        roles: [base, docker, airflow_worker]
      - name: out-1
        size: s-1vcpu-1gb
        roles: [base]
    airflow:
      version: 3.3.2
      image: apache/airflow:3.3.2
      executor: celery
"""
ADDRESSES = {"airflow-1": "10.110.0.2", "worker-1": "10.110.0.3", "out-1": "10.110.0.4"}
FACTS = SystemFacts("debian", "13", "trixie", "none", 4096, 2)


def load(tmp_path: Path, text: str = WORKERS):
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)["e"]


def refused(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    return info.value


def ctx(env, host: str) -> RoleContext:
    return RoleContext(env, env.host(host), FACTS, "ssh-ed25519 AAAA", AIRFLOW_SECRETS, "img", dict(ADDRESSES))


def content(resources, path: str) -> str:
    return next(r.content.decode() for r in resources if getattr(r, "path", "") == path)


# --- the inventory -----------------------------------------------------------------------------------

def test_worker_hosts_load(tmp_path):
    env = load(tmp_path)
    assert [h.name for h in airflow_celery.worker_hosts(env)] == ["worker-1"]
    assert airflow_celery.airflow_host(env).name == "airflow-1"
    assert placement.clients(env) == [placement.Client("worker-1", "airflow", "airflow")]
    assert placement.needed(env) == ["airflow-1", "worker-1"]


def test_workers_need_the_celery_executor(tmp_path):
    err = refused(tmp_path, WORKERS.replace("      executor: celery\n", ""))
    assert_located(err, tmp_path, 10, "environments.e.droplets[1].roles",
                   "airflow_worker on host 'worker-1' needs the CeleryExecutor", "airflow.executor: celery")


def test_workers_need_exactly_one_airflow_host(tmp_path):
    err = refused(tmp_path, WORKERS.replace("roles: [base, postgres, docker, nginx, airflow]",
                                            "roles: [base, postgres, docker, nginx]"))
    assert_located(err, tmp_path, 10, "environments.e.droplets[1].roles",
                   "needs exactly one host with the airflow role, found 0")
    err = refused(tmp_path, WORKERS.replace("roles: [base]", "roles: [base, docker, airflow]"))
    assert_located(err, tmp_path, 10, "environments.e.droplets[1].roles", "found 2 (airflow-1, out-1)")


def test_a_host_is_not_airflow_and_worker_both(tmp_path):
    err = refused(tmp_path, WORKERS.replace("roles: [base, docker, airflow_worker]",
                                            "roles: [base, docker, airflow, airflow_worker]"))
    assert_located(err, tmp_path, 10, "environments.e.droplets[1].roles",
                   "host 'worker-1' has both airflow and airflow_worker", "remove airflow_worker")


def test_workers_need_docker(tmp_path):
    err = refused(tmp_path, WORKERS.replace("roles: [base, docker, airflow_worker]", "roles: [base, airflow_worker]"))
    assert_located(err, tmp_path, 10, "environments.e.droplets[1].roles", "needs Docker", "add docker to its roles")


# --- the airflow host: Redis, ufw, nginx, compose ----------------------------------------------------------

def test_redis_binds_the_private_address_too(tmp_path):
    assert airflow_celery.redis_addresses("172.17.0.1", "10.110.0.2") == ["127.0.0.1", "-::1", "172.17.0.1",
                                                                          "10.110.0.2"]
    conf = content(airflow.resources(ctx(load(tmp_path), "airflow-1")), airflow_celery.REDIS_CONFIG)
    assert "\nbind 127.0.0.1 -::1 172.17.0.1 10.110.0.2\n" in conf and '\nrequirepass "redis-pw-123456"\n' in conf


def test_redis_without_workers_stays_off_the_private_network(tmp_path):
    env = load(tmp_path, WORKERS.replace("roles: [base, docker, airflow_worker]", "roles: [base]"))
    conf = content(airflow.resources(ctx(env, "airflow-1")), airflow_celery.REDIS_CONFIG)
    assert "\nbind 127.0.0.1 -::1 172.17.0.1\n" in conf
    assert all(not getattr(r, "path", "") == airflow.NGINX_EXECUTION or r.__class__.__name__ == "Absent"
               for r in airflow.resources(ctx(env, "airflow-1")))


def test_firewall_rules_exact(tmp_path):
    assert airflow_celery.firewall_rules(["worker-1"], ADDRESSES) == ("6379/tcp from 10.110.0.3",
                                                                     "8080/tcp from 10.110.0.3")
    assert airflow_celery.worker_firewall_rules("airflow-1", ADDRESSES) == ("8793/tcp from 10.110.0.2",)
    env = load(tmp_path)
    rules = base.firewall_rules(ctx(env, "airflow-1"))
    assert rules[-5:] == ("5432/tcp from 172.16.0.0/12 to 172.17.0.1", "6379/tcp from 172.16.0.0/12 to 172.17.0.1", "5432/tcp from 10.110.0.3",
                          "6379/tcp from 10.110.0.3", "8080/tcp from 10.110.0.3")
    assert base.firewall_rules(ctx(env, "worker-1"))[-1] == "8793/tcp from 10.110.0.2"
    assert not any("10.110.0.4" in r for r in rules)


def test_pg_hba_and_listen_addresses_for_worker_hosts(tmp_path):
    env = load(tmp_path)
    assert placement.hba_lines(placement.clients(env), ADDRESSES) == [
        'host    "airflow" "airflow" 10.110.0.3/32    scram-sha-256']
    conf = content(postgres.resources(ctx(env, "airflow-1")), "/etc/postgresql/17/main/conf.d/dropship.conf")
    assert "listen_addresses = 'localhost,172.17.0.1,10.110.0.2'" in conf


def test_the_execution_api_on_the_private_address(tmp_path):
    text = content(airflow.resources(ctx(load(tmp_path), "airflow-1")), airflow.NGINX_EXECUTION)
    assert "    listen 10.110.0.2:8080;\n" in text
    assert "    location /airflow/execution/ {\n        proxy_pass http://127.0.0.1:8080;\n" in text
    assert "    location / {\n        return 404;\n    }\n" in text


def test_the_airflow_hosts_services_resolve_worker_hosts_and_run_no_worker(tmp_path):
    env = load(tmp_path)
    resources = airflow.resources(ctx(env, "airflow-1"))
    compose = content(resources, "/srv/airflow/compose.yaml")
    assert '  extra_hosts: ["host.docker.internal:host-gateway", "worker-1:10.110.0.3"]\n' in compose
    assert "airflow-worker" not in compose and airflow.services(env) == airflow.SERVICES
    assert next(r for r in resources if r.key == "compose airflow").services == airflow.SERVICES


# --- the worker host -------------------------------------------------------------------------------------

def test_worker_compose_exact():
    assert airflow_worker.worker_compose("3.3.2", "dropship/airflow:3.3.2-abc", "/srv/airflow").decode() == (
        "# Managed by Dropship (airflow_worker role). Airflow 3.3.2: a Celery worker only; the scheduler,\n"
        "# Redis and the database are on other hosts, reached over the private network.\n"
        "name: airflow\n"
        "# Host networking: the worker reaches Redis, PostgreSQL and the execution API at private addresses,\n"
        "# its log server (port 8793) sits behind the host's ufw, and its hostname is the host's, which\n"
        "# the airflow host's api-server resolves when it reads task logs. Its health check pings it through Redis.\n"
        "\n"
        "services:\n"
        "  airflow-worker:\n"
        "    image: dropship/airflow:3.3.2-abc\n"
        "    env_file: [/srv/airflow/airflow.env]\n"
        '    user: "50000:0"\n'
        "    network_mode: host\n"
        "    volumes:\n"
        "      - /srv/airflow/dags:/opt/airflow/dags\n"
        "      - /srv/airflow/logs:/opt/airflow/logs\n"
        "      - /srv/airflow/config:/opt/airflow/config\n"
        "    restart: unless-stopped\n"
        '    command: ["airflow", "celery", "worker"]\n'
        "    healthcheck:\n"
        '      test: ["CMD-SHELL", "celery --app airflow.providers.celery.executors.celery_executor.app inspect '
        'ping --timeout 10 -d \\"celery@$${HOSTNAME}\\""]\n'
        "      interval: 60s\n"
        "      timeout: 60s\n"
        "      retries: 3\n"
        "      start_period: 180s\n"
        "      start_interval: 10s\n")


def test_worker_env_points_at_private_addresses(tmp_path):
    env = load(tmp_path)
    lines = airflow.airflow_env(ctx(env, "worker-1")).decode().splitlines()
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=\"postgresql+psycopg2://airflow:af-db-pw-123456@10.110.0.2:5432/airflow\"" \
        in lines
    assert "AIRFLOW__CELERY__BROKER_URL=\"redis://:redis-pw-123456@10.110.0.2:6379/0\"" in lines
    assert "AIRFLOW__CELERY__RESULT_BACKEND=\"db+postgresql://airflow:af-db-pw-123456@10.110.0.2:5432/airflow\"" in lines
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=\"http://10.110.0.2:8080/airflow/execution/\"" in lines
    assert "AIRFLOW__CORE__HOSTNAME_CALLABLE=\"socket.gethostname\"" in lines
    assert "AIRFLOW__CELERY__WORKER_CONCURRENCY=\"4\"" in lines
    home = airflow.airflow_env(ctx(env, "airflow-1")).decode().splitlines()
    assert "AIRFLOW__CELERY__BROKER_URL=\"redis://:redis-pw-123456@host.docker.internal:6379/0\"" in home
    assert not any(line.startswith("AIRFLOW__CORE__HOSTNAME_CALLABLE") for line in home)


def test_worker_host_resources(tmp_path):
    c = ctx(load(tmp_path), "worker-1")
    resources = host_resources(c)
    keys = [r.key for r in resources]
    assert "compose airflow" in keys and "file /srv/airflow/airflow.env" in keys
    assert "link /srv/airflow/dags/current" in keys and "directory /srv/airflow/dags/releases" in keys
    compose = next(r for r in resources if r.key == "compose airflow")
    assert compose.services == ("airflow-worker",) and compose.role == "airflow_worker"
    assert not any("redis" in k or "nginx" in k for k in keys)
    env_file = next(r for r in resources if r.key == "file /srv/airflow/airflow.env")
    assert env_file.mode == 0o600 and env_file.secret


def test_provision_runs_worker_hosts_last(tmp_path):
    targets = [Target(n, "127.0.0.1", 22, ("deploy",), Path("k")) for n in ("worker-1", "out-1", "airflow-1")]
    assert [[t.name for t in w] for w in waves(load(tmp_path), targets)] == [["airflow-1"], ["out-1"], ["worker-1"]]
    assert [[t.name for t in w] for w in waves(load(tmp_path), targets[:1])] == [["worker-1"]]


def test_resize_derives_a_worker_hosts_concurrency(tmp_path):
    from provision.workflows.resize import size_settings

    env = load(tmp_path)
    assert size_settings(env, env.host("worker-1"), 1, 8192) == {"airflow worker concurrency": "2"}
    assert "airflow worker concurrency" not in size_settings(env, env.host("out-1"), 4, 8192)
