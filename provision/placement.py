"""Where the database is (pure): the environment's postgres host, the hosts that connect to it over
the private network (each app host for the apps' databases, the airflow and airflow_worker hosts for
Airflow's), and
what the postgres host's listen_addresses, pg_hba.conf and ufw let in.

On one host holding every role there are no remote clients: everything stays on localhost.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import DropshipError
from .inventory import Environment, HostSpec

PORT = 5432
LOCAL = "127.0.0.1"


@dataclass(frozen=True)
class Client:
    """A host other than the postgres host that connects to ``database`` as ``user``."""

    host: str
    database: str
    user: str


def postgres_host(env: Environment) -> HostSpec | None:
    """The host with the postgres role (the inventory allows at most one)."""
    return next((h for h in env.hosts if "postgres" in h.roles), None)


def clients(env: Environment) -> list[Client]:
    """Remote clients of the postgres host, in host order: the apps' databases on app hosts, Airflow's
    on the airflow and airflow_worker hosts (a database listed once per host)."""
    pg = postgres_host(env)
    if pg is None:
        return []
    s, out = env.settings, []
    for h in env.hosts:
        if h.name == pg.name:
            continue
        dbs = [a.database for a in s.apps if a.database] if "app" in h.roles else []
        dbs += [s.airflow.database] if s.airflow and {"airflow", "airflow_worker"} & set(h.roles) else []
        for db in dbs:
            client = Client(h.name, db.name, db.user)
            if client not in out:
                out.append(client)
    return out


def airflow_elsewhere(env: Environment) -> bool:
    """Airflow runs on another host than PostgreSQL: the postgres role makes (and backs up) its database."""
    pg = postgres_host(env)
    return bool(pg and env.settings.airflow) and any("airflow" in h.roles and h.name != pg.name for h in env.hosts)


def checked_ipv4(address: str, host: str) -> str:
    """``address`` when it is a plain IPv4 address, else a one-line error (it reaches config files)."""
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        raise DropshipError(f"{host}: private address {address!r} is not an IPv4 address",
                            "refresh the droplets' addresses with `invoke droplet.list`, or fix the host's "
                            "private_address in the inventory") from None


def database_address(env: Environment, host: str, addresses: dict[str, str]) -> str:
    """Where ``host``'s apps reach PostgreSQL: localhost on the postgres host, else its private address."""
    pg = postgres_host(env)
    if pg is None or pg.name == host:
        return LOCAL
    if not addresses.get(pg.name):
        _missing(env, pg.name)
    return checked_ipv4(addresses[pg.name], pg.name)


def needed(env: Environment) -> list[str]:
    """Hosts whose private address the placement uses: the postgres host and its clients, and with
    airflow_worker hosts, those and the airflow host (Redis and the execution API are there)."""
    found = clients(env)
    workers = [h.name for h in env.hosts if "airflow_worker" in h.roles]
    airflow = [h.name for h in env.hosts if "airflow" in h.roles] if workers else []
    return list(dict.fromkeys(([postgres_host(env).name] if found else []) + [c.host for c in found]
                              + airflow + workers))


def require_addresses(env: Environment, addresses: dict[str, str]) -> None:
    """Refuse, before any host is touched, when a needed private address is unknown or malformed."""
    for host in needed(env):
        if not addresses.get(host):
            _missing(env, host)
        checked_ipv4(addresses[host], host)


def _missing(env: Environment, host: str):
    raise DropshipError(f"{host}: its private address is not known (the database is on another host than its "
                        "clients)", f"run `invoke droplet.list --env {env.name}` to record the droplets' addresses, "
                        "or set private_address on a fixed host")


# --- the postgres host's configuration ---------------------------------------------------------------

def listen_addresses(bridge: str | None, private: str | None) -> list[str]:
    """PostgreSQL's listen_addresses: localhost, the Docker bridge (Airflow on the same host), the
    private address (remote clients)."""
    return ["localhost"] + [a for a in (bridge, private) if a]


def hba_lines(found: list[Client], addresses: dict[str, str]) -> list[str]:
    """One pg_hba.conf line per client: its database, its user (quoted: never a keyword like ``all``), its
    host's address /32, scram-sha-256."""
    return [f"host    {q(c.database):<9} {q(c.user):<9} {checked_ipv4(addresses[c.host], c.host) + '/32':<16} "
            "scram-sha-256" for c in found]


def q(name: str) -> str:
    """A pg_hba.conf name, double-quoted (the inventory allows only identifiers)."""
    if not name or '"' in name or any(ch.isspace() for ch in name):
        raise ValueError(f"not a PostgreSQL name for pg_hba.conf: {name!r}")
    return f'"{name}"'



def firewall_rules(found: list[Client], addresses: dict[str, str]) -> tuple[str, ...]:
    """ufw rules letting each client host (once) reach PostgreSQL."""
    hosts = dict.fromkeys(c.host for c in found)
    return tuple(f"{PORT}/tcp from {checked_ipv4(addresses[h], h)}" for h in hosts)
