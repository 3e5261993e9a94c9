"""Roles: for one host, given its facts, the packages and resources that make up its state."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..engine.model import PHASE_PACKAGES, Resource
from ..engine.system import Packages
from ..facts import SystemFacts
from ..inventory import Environment, HostSpec


@dataclass(frozen=True)
class RoleContext:
    env: Environment
    host: HostSpec
    facts: SystemFacts
    public_key: str                  # authorized for the deploy user
    secrets: dict[str, str]          # resolved secret values by name (never printed)
    airflow_image: str = ""          # the image tag the airflow role runs (built or pulled by the workflow)
    addresses: dict[str, str] = field(default_factory=dict, hash=False)   # hosts' private addresses
    live_web: tuple[str, ...] = ()   # web hosts serving a live release (the lb's first upstream)
    purge: bool = False              # `provision --purge`: also what was kept for a move goes

    @property
    def settings(self):
        return self.env.settings

    @property
    def deploy_user(self) -> str:
        return self.env.ssh.user

    def has(self, role: str) -> bool:
        return role in self.host.roles


@dataclass(frozen=True)
class Role:
    name: str
    packages: Callable[[RoleContext], list[str]]
    resources: Callable[[RoleContext], list[Resource]]


def registry() -> dict[str, Role]:
    from . import airflow, airflow_worker, app, base, docker, lb, nginx, postgres

    return {r.name: r for r in (base.ROLE, docker.ROLE, postgres.ROLE, nginx.ROLE, app.ROLE, airflow.ROLE,
                                airflow_worker.ROLE, lb.ROLE)}


ORDER = ("base", "docker", "postgres", "nginx", "app", "airflow", "airflow_worker", "lb")
PROVISIONED = frozenset(ORDER)   # app/airflow lay out the host; `deploy` ships releases into them


RECORDED = ("nginx", "app", "airflow", "airflow_worker", "lb")    # roles whose files, units, data the record lists
RECORD_ALL = ("postgres",) + RECORDED      # ...and the databases the postgres role makes for the apps


def host_resources(ctx: RoleContext, only: tuple[str, ...] | None = None, record: tuple[str, ...] = (),
                   purge: bool = False) -> list[Resource]:
    """Every resource of the host's roles (or of ``only``), with one package transaction first.

    With ``record`` (roles), the host's record of what Dropship manages comes first in its phase:
    what it lists for those roles and they no longer want is removed (data only with ``purge``);
    a role the host lost is still in a full run's ``record`` (``RECORD_ALL``)."""
    roles = registry()
    chosen = [roles[n] for n in ORDER if ctx.has(n) and (not only or n in only)]
    packages: list[str] = []
    resources: list[Resource] = []
    for role in chosen:
        packages += [p for p in role.packages(ctx) if p not in packages]
        resources += role.resources(ctx)
    # Earlier phases' resources and phase-1 ones (apt sources) go before the one apt transaction.
    first = [r for r in resources if r.phase <= PHASE_PACKAGES]
    rest = [r for r in resources if r.phase > PHASE_PACKAGES]
    if record:
        from ..engine.managed import ManagedRecord, managed_items
        from .handlers import DAEMON_RELOAD, RELOAD_NGINX

        rest.insert(0, ManagedRecord(managed_items(resources, RECORDED), record, purge, RELOAD_NGINX, DAEMON_RELOAD))
    return first + ([Packages(tuple(packages), role="packages")] if packages else []) + rest
