"""The CeleryExecutor's parts of the airflow role: Debian's Redis on the host as the broker (on
localhost and the Docker bridge, and the private address when ``airflow_worker`` hosts exist, with a
password), Airflow's Celery settings, and what the worker hosts reach on the airflow host.

The worker itself is a service of the compose project (templates/airflow/compose.yaml.j2); worker
hosts run it alone (roles/airflow_worker.py).
"""
from __future__ import annotations

from urllib.parse import quote

from ..engine.files import Directory, File
from ..engine.model import Resource, restart
from ..engine.system import Service
from ..errors import DropshipError
from ..inventory import AirflowSettings, Environment, HostSpec
from .. import placement
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
EXECUTION_PORT = 8080         # nginx on the airflow host's private address: the execution API, for worker hosts
LOG_PORT = 8793               # a worker's log server (Airflow's default), read by the api-server


def worker_hosts(env: Environment) -> list[HostSpec]:
    """The hosts with the airflow_worker role, in inventory order."""
    return [h for h in env.hosts if "airflow_worker" in h.roles]


def airflow_host(env: Environment) -> HostSpec | None:
    """The host with the airflow role (with worker hosts, the inventory allows exactly one)."""
    return next((h for h in env.hosts if "airflow" in h.roles), None)


def private_of(env: Environment, host: str, addresses: dict[str, str]) -> str:
    """``host``'s private address, checked (it reaches config files)."""
    if not addresses.get(host):
        raise DropshipError(f"{host}: its private address is not known (airflow_worker hosts reach the "
                            "airflow host over the private network)",
                            f"run `invoke droplet.list --env {env.name}` to record the droplets' addresses")
    return placement.checked_ipv4(addresses[host], host)


def redis_addresses(bridge: str, private: str | None) -> list[str]:
    """Where Redis listens: localhost, the Docker bridge, and the private address for worker hosts (pure)."""
    return ["127.0.0.1", "-::1", bridge] + ([private] if private else [])


def firewall_rules(workers: list[str], addresses: dict[str, str]) -> tuple[str, ...]:
    """On the airflow host: Redis and the execution API from each worker host's private address (pure)."""
    return tuple(f"{port}/tcp from {placement.checked_ipv4(addresses[w], w)}"
                 for w in workers for port in (REDIS_PORT, EXECUTION_PORT))


def worker_firewall_rules(airflow: str, addresses: dict[str, str]) -> tuple[str, ...]:
    """On a worker host: its log server from the airflow host (the api-server reads task logs there) (pure)."""
    return (f"{LOG_PORT}/tcp from {placement.checked_ipv4(addresses[airflow], airflow)}",)


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


def celery_env(af: AirflowSettings, secrets: dict[str, str], concurrency: int, broker_host: str = CONTAINER_HOST,
               db_host: str = CONTAINER_HOST) -> list[tuple[str, str]]:
    """Airflow's Celery settings (env file lines): the broker (Redis at ``broker_host``, password
    URL-quoted) and the result backend (Airflow's own database at ``db_host``) (pure)."""
    broker = f"redis://:{quote(secrets[af.redis_password.name], safe='')}@{broker_host}:{REDIS_PORT}/0"
    backend = database_url(af.database.user, secrets[af.database.password.name], af.database.name,
                           host=db_host)
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
    private = private_of(ctx.env, ctx.host.name, ctx.addresses) if worker_hosts(ctx.env) else None
    addresses = redis_addresses(ctx.settings.postgres.docker_bridge_address, private)
    return [
        Directory(f"/etc/systemd/system/{REDIS_SERVICE}.service.d", role=NAME),
        File(REDIS_DROPIN, render("airflow/redis-server.service.conf.j2", config=REDIS_CONFIG), role=NAME,
             notify=(DAEMON_RELOAD, again)),
        File(REDIS_CONFIG, redis_conf(ctx.secrets[af.redis_password.name], addresses), "root", "redis", 0o640,
             role=NAME, secret=True, notify=(again,)),
        Service(REDIS_SERVICE, role=NAME),
    ]
