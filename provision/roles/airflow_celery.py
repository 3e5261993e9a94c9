"""The CeleryExecutor's parts of the airflow role: Debian's Redis on the host as the broker (on
localhost and the Docker bridge only, with a password), and Airflow's Celery settings.

The worker itself is a service of the compose project (templates/airflow/compose.yaml.j2).
"""
from __future__ import annotations

from urllib.parse import quote

from ..engine.files import Directory, File
from ..engine.model import Resource, restart
from ..engine.system import Service
from ..inventory import AirflowSettings
from ..release import database_url
from ..templates import render
from . import RoleContext
from .handlers import DAEMON_RELOAD

NAME = "airflow"
REDIS_PORT = 6379
REDIS_SERVICE = "redis-server"
REDIS_CONFIG = "/etc/redis/dropship.conf"
REDIS_DROPIN = f"/etc/systemd/system/{REDIS_SERVICE}.service.d/dropship.conf"
CONTAINER_HOST = "host.docker.internal"       # the host, as Airflow's containers reach it
WORKER = "airflow-worker"


def redis_quote(value: str) -> str:
    """``value`` as one double-quoted argument of a Redis configuration line (pure)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ch.isascii():
            out.append(ch)
        else:
            out += [f"\\x{b:02x}" for b in ch.encode()]
    return '"' + "".join(out) + '"'


def redis_conf(password: str, addresses: list[str], port: int = REDIS_PORT) -> bytes:
    """Dropship's Redis configuration: Debian's, then where it listens and its password (pure)."""
    return render("airflow/redis.conf.j2", password=redis_quote(password), addresses=addresses, port=port)


def celery_env(af: AirflowSettings, secrets: dict[str, str], concurrency: int) -> list[tuple[str, str]]:
    """Airflow's Celery settings (env file lines): the broker (Redis on the host, password URL-quoted)
    and the result backend (Airflow's own database) (pure)."""
    broker = f"redis://:{quote(secrets[af.redis_password.name], safe='')}@{CONTAINER_HOST}:{REDIS_PORT}/0"
    backend = database_url(af.database.user, secrets[af.database.password.name], af.database.name,
                           host=CONTAINER_HOST)
    return [("AIRFLOW__CELERY__BROKER_URL", broker),
            ("AIRFLOW__CELERY__RESULT_BACKEND", "db+" + backend),
            ("AIRFLOW__CELERY__WORKER_CONCURRENCY", str(concurrency))]


def packages(ctx: RoleContext) -> list[str]:
    af = ctx.settings.airflow
    return ["redis-server"] if af and af.celery else []


def resources(ctx: RoleContext) -> list[Resource]:
    """Redis for a CeleryExecutor; nothing otherwise (the drop-in first: its daemon-reload runs
    before the restart)."""
    af = ctx.settings.airflow
    if not (af and af.celery):
        return []
    again = restart(REDIS_SERVICE)
    addresses = ["127.0.0.1", "-::1", ctx.settings.postgres.docker_bridge_address]
    return [
        Directory(f"/etc/systemd/system/{REDIS_SERVICE}.service.d", role=NAME),
        File(REDIS_DROPIN, render("airflow/redis-server.service.conf.j2", config=REDIS_CONFIG), role=NAME,
             notify=(DAEMON_RELOAD, again)),
        File(REDIS_CONFIG, redis_conf(ctx.secrets[af.redis_password.name], addresses), "root", "redis", 0o640,
             role=NAME, secret=True, notify=(again,)),
        Service(REDIS_SERVICE, role=NAME),
    ]
