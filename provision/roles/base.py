"""Base hardening: deploy user, sshd lockdown, ufw, fail2ban, unattended upgrades, swap, timezone."""
from __future__ import annotations

from pathlib import Path

from ..engine.files import Directory, File
from ..engine.model import PHASE_LOCKDOWN, PHASE_TRUST, Handler, Resource, reload, restart
from .. import balancer, placement
from ..engine.system import Firewall, Service, Swapfile, Timezone, User
from ..templates import render
from . import Role, RoleContext
from . import airflow_celery
from .airflow_celery import REDIS_PORT

NAME = "base"
CA_DIR = "/usr/local/share/ca-certificates/dropship"
UPDATE_CAS = Handler("update-ca-certificates", "update-ca-certificates >/dev/null")


def ca_certificate_path(source: Path) -> str:
    """Where a listed CA certificate lands on hosts (update-ca-certificates reads *.crt)."""
    return f"{CA_DIR}/{source.stem}.crt"


def swap_size_mb(memory_mb: int) -> int:
    """Swap equal to RAM, at least 1 GiB and at most 4 GiB."""
    return min(max(memory_mb, 1024), 4096)


def firewall_rules(ctx: RoleContext) -> tuple[str, ...]:
    """The inventory's ports, plus from Docker's networks only what Airflow's containers reach on the
    host (PostgreSQL, and Redis: the CeleryExecutor's broker), PostgreSQL from each of its client
    hosts (over the private network) on the postgres host, port 80 from the lb on web hosts, Redis and
    the execution API from the airflow_worker hosts on the airflow host, and a worker host's log
    server from the airflow host."""
    pg, af = ctx.settings.postgres, ctx.settings.airflow
    rules, docker = ctx.settings.firewall_allow, f"from {pg.docker_subnet} to {pg.docker_bridge_address}"
    # only to the bridge's address: a private network inside Docker's ranges (local droplets) stays out
    if ctx.has("airflow") and ctx.has("postgres"):
        rules += (f"5432/tcp {docker}",)
    if ctx.has("airflow") and af and af.celery:
        rules += (f"{REDIS_PORT}/tcp {docker}",)
    if ctx.has("postgres"):
        rules += placement.firewall_rules(placement.clients(ctx.env), ctx.addresses)
    workers = [h.name for h in airflow_celery.worker_hosts(ctx.env)]
    if ctx.has("airflow") and af and af.celery and workers:
        rules += airflow_celery.firewall_rules(workers, ctx.addresses)
    if ctx.has("airflow_worker"):
        rules += airflow_celery.worker_firewall_rules(airflow_celery.airflow_host(ctx.env).name, ctx.addresses)
    return rules + balancer.firewall_rules(ctx.env, ctx.host, ctx.addresses)


def former_postgres_rules(ctx: RoleContext) -> tuple[str, ...]:
    """On a host without the postgres role, the rules letting the environment's other database client
    hosts reach PostgreSQL, kept where the firewall has them (the role moved away: their live releases
    read the database here until a deploy switches them) until `provision --purge`."""
    if ctx.has("postgres") or ctx.purge:
        return ()
    others = [c for c in placement.clients(ctx.env) if c.host != ctx.host.name]
    return placement.firewall_rules(others, ctx.addresses)


def packages(ctx: RoleContext) -> list[str]:
    return ["sudo", "openssh-server", "ca-certificates", "ufw", "fail2ban", "python3-systemd",
            "unattended-upgrades", "rsync", "curl"]


def resources(ctx: RoleContext) -> list[Resource]:
    s, user = ctx.settings, ctx.deploy_user
    home = f"/home/{user}"
    out: list[Resource] = []
    # Trust first (phase 0, one update-ca-certificates): HTTPS apt sources and downloads need it.
    if ctx.env.ca_certificates:
        out.append(Directory(CA_DIR, role=NAME, phase=PHASE_TRUST))
    out += [File(ca_certificate_path(p), p.read_bytes(), role=NAME, phase=PHASE_TRUST, notify=(UPDATE_CAS,))
            for p in ctx.env.ca_certificates]
    out += [
        Timezone(s.timezone, role=NAME),
        User(user, role=NAME),
        Directory(f"{home}/.ssh", user, user, 0o700, role=NAME),
        File(f"{home}/.ssh/authorized_keys", (ctx.public_key.strip() + "\n").encode(), user, user, 0o600,
             role=NAME),
        File(f"/etc/sudoers.d/90-dropship-{user}", render("base/sudoers.j2", user=user), mode=0o440,
             role=NAME, validate="visudo -cqf %s"),
        Firewall(firewall_rules(ctx), role=NAME, keep=former_postgres_rules(ctx)),
        File("/etc/fail2ban/jail.d/dropship.local", render("base/fail2ban-jail.local.j2", bantime="1h", maxretry=5),
             role=NAME, notify=(restart("fail2ban"),)),
        Service("fail2ban", role=NAME),
        File("/etc/apt/apt.conf.d/20auto-upgrades", render("base/20auto-upgrades.j2"), role=NAME),
        Swapfile(swap_size_mb(ctx.facts.memory_mb) if s.swap_mb is None else s.swap_mb, role=NAME),
        File("/etc/ssh/sshd_config.d/00-dropship.conf", render("base/sshd.conf.j2"), role=NAME,
             phase=PHASE_LOCKDOWN, check="sshd -t", notify=(reload("ssh"),)),
    ]
    return out


ROLE = Role(NAME, packages, resources)
