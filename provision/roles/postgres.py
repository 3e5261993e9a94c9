"""PostgreSQL: server on localhost (and the Docker bridge when asked, and the host's private address,
open to the other hosts that connect), the apps' roles and databases (and Airflow's when it runs elsewhere)."""
from __future__ import annotations

from ..engine.files import File
from ..engine.model import Resource, restart
from ..engine.postgres import PgDatabase, PgRole
from ..engine.system import Service
from .. import placement
from ..sizing import memory_settings
from ..templates import render
from . import Role, RoleContext, backups
from .handlers import RELOAD_POSTGRES

NAME = "postgres"
# The version the distribution's `postgresql` package installs, until the host says otherwise.
DISTRO_VERSIONS = {("debian", "12"): "15", ("debian", "13"): "17", ("ubuntu", "22.04"): "14",
                   ("ubuntu", "24.04"): "16"}


def version(ctx: RoleContext) -> str:
    return ctx.facts.pg_version or DISTRO_VERSIONS.get((ctx.facts.os, ctx.facts.os_version), "17")


def packages(ctx: RoleContext) -> list[str]:
    return ["postgresql"] + backups.packages(ctx)


def resources(ctx: RoleContext) -> list[Resource]:
    pg = ctx.settings.postgres
    conf_dir = f"/etc/postgresql/{version(ctx)}/main"
    bridge = pg.listen_docker_bridge or ctx.has("airflow")     # Airflow's containers reach it there
    remote = placement.clients(ctx.env)                        # app/airflow hosts, over the private network
    # On its private address from the first provision (pg_hba and ufw let no one in until a client host
    # exists): a web or Airflow host added later then reloads PostgreSQL, not a restart that fails requests.
    address = ctx.addresses.get(ctx.host.name, "")
    private = placement.checked_ipv4(address, ctx.host.name) if remote or address else None
    listen = placement.listen_addresses(pg.docker_bridge_address if bridge else None, private)
    conf = render("postgres/dropship.conf.j2", memory_mb=ctx.facts.memory_mb, cpus=ctx.facts.cpus,
                  listen_addresses=listen, **vars(memory_settings(ctx.facts.memory_mb)))
    hba = render("postgres/pg_hba.conf.j2", docker_subnets=[pg.docker_subnet] if bridge else [],
                 clients=placement.hba_lines(remote, ctx.addresses))
    out: list[Resource] = [
        File(f"{conf_dir}/conf.d/dropship.conf", conf, "postgres", "postgres", 0o644, role=NAME,
             notify=(restart("postgresql"),)),
        File(f"{conf_dir}/pg_hba.conf", hba, "postgres", "postgres", 0o640, role=NAME,
             notify=(RELOAD_POSTGRES,)),
        Service("postgresql", role=NAME),
    ]
    users: set[str] = set()
    names: set[str] = set()
    dbs = [a.database for a in ctx.settings.apps if a.database]        # an app without one gets none
    dbs += [ctx.settings.airflow.database] if placement.airflow_elsewhere(ctx.env) else []
    for db in dbs:
        if db.user not in users:
            out.append(PgRole(db.user, ctx.secrets[db.password.name], role=NAME))
        if db.name not in names:
            out.append(PgDatabase(db.name, db.user, role=NAME))
        users.add(db.user)
        names.add(db.name)
    return out + backups.resources(ctx)


ROLE = Role(NAME, packages, resources)
