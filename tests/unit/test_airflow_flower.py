"""Flower (pure): the inventory's ``airflow.flower``, its compose service, its env lines (path and
login) and its nginx location, on the airflow host only."""
import textwrap
from pathlib import Path

import pytest
import yaml

from provision.errors import DropshipError, InventoryError
from provision.facts import SystemFacts
from provision.inventory import load_inventory
from provision.roles import RoleContext, airflow, airflow_worker
from tests.unit.test_inventory import assert_located
from tests.unit.test_templates import AIRFLOW_SECRETS

SCHEDULER_AND_WORKERS = """\
environments:
  ops:
    provider: local
    droplets:
      - name: sched
        size: s-2vcpu-4gb
        roles: [base, postgres, docker, nginx, airflow]
      - name: crunch-a
        size: s-4vcpu-8gb
        roles: [base, docker, airflow_worker]
    apps:
      - name: portal
        path: /portal
    airflow:
      version: 3.3.2
      image: apache/airflow:3.3.2
      url_path: /pipelines
      executor: celery
      flower:
        url_path: /celery-watch
        user: on_call
        password: {secret: flower_login}
"""
ADDRESSES = {"sched": "10.20.0.2", "crunch-a": "10.20.0.3"}
SECRETS = {**AIRFLOW_SECRETS, "flower_login": "Fl0wer-pw_x"}


def load(tmp_path: Path, text: str = SCHEDULER_AND_WORKERS):
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)["ops"]


def refused(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    return info.value


def files(env, host: str, secrets=SECRETS) -> dict[str, str]:
    """The files the host's Airflow role (airflow, or airflow_worker) writes."""
    ctx = RoleContext(env, env.host(host), SystemFacts("debian", "13", "trixie", "none", 4096, 2), "", secrets,
                      "img:1", dict(ADDRESSES))
    role = airflow if "airflow" in env.host(host).roles else airflow_worker
    return {r.path: r.content.decode() for r in role.ROLE.resources(ctx) if getattr(r, "content", None) is not None}


def test_flower_loads_with_its_path_user_and_secret(tmp_path):
    af = load(tmp_path).settings.airflow
    assert (af.flower.url_path, af.flower.user, af.flower.password.name) == ("/celery-watch", "on_call", "flower_login")
    assert af.flower.password in load(tmp_path).secret_refs()
    short = load(tmp_path, SCHEDULER_AND_WORKERS.split("      flower:")[0] + "      flower: true\n")
    assert (short.settings.airflow.flower.url_path, short.settings.airflow.flower.password.name) == \
        ("/flower", "airflow_flower_password")
    off = load(tmp_path, SCHEDULER_AND_WORKERS.split("      flower:")[0] + "      flower: false\n")
    assert off.settings.airflow.flower is None and airflow.FLOWER not in airflow.services(off)


def test_flower_needs_celery_and_a_path_of_its_own(tmp_path):
    err = refused(tmp_path, SCHEDULER_AND_WORKERS.replace("executor: celery", "executor: local")
                  .replace("roles: [base, docker, airflow_worker]", "roles: [base, docker]"))
    assert_located(err, tmp_path, 19, "environments.ops.airflow.flower", "Flower watches Celery workers",
                   "airflow.executor: celery")
    err = refused(tmp_path, SCHEDULER_AND_WORKERS.replace("url_path: /celery-watch", "url_path: /pipelines"))
    assert_located(err, tmp_path, 20, "environments.ops.airflow.flower.url_path", "/pipelines is Airflow's url_path")
    err = refused(tmp_path, SCHEDULER_AND_WORKERS.replace("path: /portal", "path: /celery-watch"))
    assert_located(err, tmp_path, 13, "environments.ops.apps[0].path", "Flower's url_path")
    err = refused(tmp_path, SCHEDULER_AND_WORKERS.replace("user: on_call", "user: 'ops:root'"))
    assert_located(err, tmp_path, 21, "environments.ops.airflow.flower.user")
    err = refused(tmp_path, SCHEDULER_AND_WORKERS.replace("user: on_call", "port: 5555"))
    assert_located(err, tmp_path, 21, "environments.ops.airflow.flower.port")


def test_the_airflow_host_runs_flower_on_loopback_behind_nginx(tmp_path):
    env = load(tmp_path)
    assert airflow.services(env)[-1] == "airflow-flower"
    out = files(env, "sched")
    compose = yaml.safe_load(out["/srv/airflow/compose.yaml"])
    flower = compose["services"]["airflow-flower"]
    assert flower["command"] == ["airflow", "celery", "flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["healthcheck"]["test"] == ["CMD", "curl", "-fsS", "http://localhost:5555/celery-watch/healthcheck"]
    lines = out["/srv/airflow/airflow.env"].splitlines()
    assert "AIRFLOW__CELERY__FLOWER_URL_PREFIX=\"/celery-watch\"" in lines
    assert "AIRFLOW__CELERY__FLOWER_BASIC_AUTH=\"on_call:Fl0wer-pw_x\"" in lines
    location = out[airflow.NGINX_LOCATION]
    assert "location /pipelines/ {" in location
    assert "location /celery-watch/ {\n    proxy_pass http://127.0.0.1:5555;\n" in location
    worker = files(env, "crunch-a")          # a worker host runs no Flower and holds no Flower login
    assert not any("FLOWER" in text or "flower" in text for text in worker.values())


def test_without_flower_nothing_of_it_is_written(tmp_path):
    env = load(tmp_path, SCHEDULER_AND_WORKERS.split("      flower:")[0])
    out = files(env, "sched")
    assert "airflow-flower" not in out["/srv/airflow/compose.yaml"]
    assert "FLOWER" not in out["/srv/airflow/airflow.env"] and "5555" not in out[airflow.NGINX_LOCATION]


def test_a_password_flower_cannot_take_is_refused_naming_the_secret(tmp_path):
    env = load(tmp_path)
    with pytest.raises(DropshipError, match="secret flower_login: Flower's basic auth cannot hold ','"):
        files(env, "sched", {**SECRETS, "flower_login": "a,b"})
    assert airflow.flower_env(env.settings.airflow, SECRETS) == [
        ("AIRFLOW__CELERY__FLOWER_URL_PREFIX", "/celery-watch"),
        ("AIRFLOW__CELERY__FLOWER_BASIC_AUTH", "on_call:Fl0wer-pw_x")]
