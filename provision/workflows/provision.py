"""``provision``: bring every host of an environment to the state its roles describe."""
from __future__ import annotations

import secrets as _random
import threading
import time
from dataclasses import dataclass

from .. import balancer, placement
from .. import hosts as host_selection
from ..engine.model import PHASE_CONFIG, PHASE_SERVICES
from ..engine.runner import Converge, HostOutcome, Progress
from ..errors import DropshipError, RemoteError
from ..inventory import ROLES, Environment, HostSpec
from ..keys import public_key
from ..redact import Redactor
from ..report import Report
from ..roles import PROVISIONED, RECORD_ALL, RoleContext, host_resources
from ..agekey import new_identity
from ..secrets import SecretStore
from ..state import contacted
from ..transport.hostkeys import KnownHosts
from ..transport.pool import PARALLEL, fan_out
from ..transport.ssh import Session, Target, connect
from .airflow import ImagePlan, ensure_image, prepare_image
from .airflow_database import move_check
from .rolling import drain_departed, serving_web_hosts

AIRFLOW_ROLES = ("airflow", "airflow_worker")     # the hosts that run the Airflow image


@dataclass(frozen=True)
class ProvisionOptions:
    dry_run: bool = False
    roles: tuple[str, ...] | None = None
    hosts: tuple[str, ...] | None = None
    accept_new_host_keys: bool = False
    parallel: int = PARALLEL
    purge: bool = False           # also remove the data (databases, releases) of what is no longer wanted
    empty_database: bool = False  # Airflow's database moved to a host where it has no tables: go on


def check_roles(roles: tuple[str, ...] | None) -> None:
    for r in roles or ():
        if r not in ROLES:
            raise DropshipError(f"unknown role '{r}'", f"use roles from: {', '.join(ROLES)}")


def resolve_secrets(env: Environment, store: SecretStore, dry_run: bool) -> dict[str, str]:
    """Secret values by name; a dry run never creates one (a throwaway stands in)."""
    values = {}
    for ref in env.secret_refs():
        if ref is env.token:
            continue
        value = store.peek(ref) if dry_run else store.resolve(ref, generate=ref.generate != "never")
        values[ref.name] = value or (new_identity() if ref.generate == "age" else _random.token_urlsafe(24))
    if not dry_run:
        check_certificates(env, values)
    return values


def check_certificates(env: Environment, values: dict[str, str]) -> None:
    """Certificates given as secrets must be PEM, match their key and cover their server's names."""
    s = env.settings
    servers = [(s.nginx.server_name, s.nginx.tls)] + [(a.server_name, a.tls) for a in s.apps] + \
        ([(s.airflow.server_name, s.airflow.tls)] if s.airflow else [])
    for names, tls in servers:
        if tls.mode == "custom":
            from ..tls_check import custom_problem     # (cryptography's x509: only where it is needed)

            problem = custom_problem(values[tls.certificate.name], values[tls.key.name], tuple(names.split()))
            if problem:
                raise DropshipError(f"{tls.certificate.where}: {problem}",
                                    f"store the PEM chain in {tls.certificate.describe()} and its key in "
                                    f"{tls.key.describe()}")


def provision(env: Environment, options: ProvisionOptions, progress: Progress) -> Report:
    started = time.monotonic()
    check_roles(options.roles)
    chosen = host_selection.select(env, options.hosts)
    redactor = Redactor()
    values = resolve_secrets(env, SecretStore(env, redactor), options.dry_run)
    pub = public_key(env)
    addresses = host_selection.private_addresses(env)
    placement.require_addresses(env, addresses)
    balancer.require_addresses(env, addresses)
    targets = host_selection.targets(env, chosen, options.accept_new_host_keys)
    lb = balancer.lb_host(env)
    live_web = serving_web_hosts(env) if lb in chosen and not options.dry_run else ()
    known = KnownHosts(env.workspace.known_hosts_path)
    specs = {h.name: h for h in chosen}

    def work(target: Target) -> HostOutcome:
        failed = True
        try:
            outcome = converge_host(env, specs[target.name], target, known, redactor, options, progress, values, pub,
                                    image, addresses, live_web, lambda phase: gate.wait(target.name, phase))
            failed = bool(outcome.failed)
            return outcome
        finally:
            gate.finished(target.name, failed)

    image = None
    if any(set(h.roles) & set(AIRFLOW_ROLES) for h in chosen) and \
            (not options.roles or set(options.roles) & set(AIRFLOW_ROLES)):
        image = prepare_image(env, options.dry_run)

    report = Report("provision", env.name, dry_run=options.dry_run)
    order = waves(env, targets)
    gate = WaveGate(order)
    for target, outcome, exc in fan_out([t for wave in order for t in wave], work, options.parallel):
        if exc is not None and not isinstance(exc, (DropshipError, OSError)):
            raise exc
        if exc is not None:
            outcome = HostOutcome(target.name, failed=1, error=redactor(str(exc)))
            progress.step(target.name, "failed", redactor(str(exc)))
        report.hosts[target.name] = outcome
    done = report.hosts.get(lb.name) if lb else None
    if done and not done.failed and not options.dry_run:
        target = next(t for t in targets if t.name == lb.name)
        drained = drain_departed(env, target, addresses, redactor, progress)
        done.ok, done.changed, done.failed, done.error = (done.ok + drained.ok, done.changed + drained.changed,
                                                          drained.failed, drained.error)
    contacted(env, {n for n, h in report.hosts.items() if not h.failed})
    report.seconds = time.monotonic() - started
    return report


def waves(env: Environment, targets: list[Target]) -> list[list[Target]]:
    """The postgres host first (its databases and roles exist before their clients need them), then
    the others, then the airflow_worker hosts (Redis, the execution API and Airflow's database
    migrated before their workers start); empty waves left out."""
    pg = placement.postgres_host(env)
    workers = {h.name for h in env.hosts if "airflow_worker" in h.roles}
    first = [t for t in targets if pg and t.name == pg.name]
    last = [t for t in targets if t.name in workers and t not in first]
    return [w for w in (first, [t for t in targets if t not in first and t not in last], last) if w]


class WaveGate:
    """Every host converges at once, in wave order (a bounded pool starts the earlier waves first).
    Trust and packages need no other host; a host of a later wave changes its configuration and
    services only once every host of the earlier waves has finished, and not at all when one of
    them failed. A run that changes nothing never waits."""

    def __init__(self, order: list[list[Target]]):
        self._before = {t.name: [u.name for w in order[:i] for u in w] for i, w in enumerate(order) for t in w}
        self._done = {name: threading.Event() for name in self._before}
        self._failed: set[str] = set()

    def finished(self, name: str, failed: bool) -> None:
        if failed:
            self._failed.add(name)
        self._done[name].set()

    def wait(self, name: str, phase: int) -> None:
        """Before ``name`` changes something in ``phase``: return at once for trust and packages, else
        once the hosts it depends on have finished; RemoteError when one of them failed."""
        if phase < PHASE_CONFIG:
            return
        for other in self._before[name]:
            self._done[other].wait()
        failed = [other for other in self._before[name] if other in self._failed]
        if failed:      # it would find no database (or no broker): leave it as it is
            raise RemoteError(name, f"wait for {failed[0]}", f"{failed[0]}, which it depends on, failed: stopped "
                              "before its configuration", f"fix {failed[0]} and run provision again")


def converge_host(env: Environment, host: HostSpec, target: Target, known: KnownHosts, redactor: Redactor,
                  options: ProvisionOptions, progress: Progress, values: dict[str, str], pub: str,
                  image: ImagePlan | None = None, addresses: dict[str, str] | None = None,
                  live_web: tuple[str, ...] = (), before_changes=None) -> HostOutcome:
    session = connect(target, known, redactor)
    only = tuple(r for r in (options.roles or host.roles) if r in PROVISIONED)
    shipped = []

    def get_image(phase: int) -> None:
        """Before the services (compose up), once Docker runs as configured, the host needs the image."""
        if image and set(only) & set(AIRFLOW_ROLES) and phase == PHASE_SERVICES and not shipped and _has_docker(session):
            ensure_image(session, image, progress)
            shipped.append(image)

    tag = image.tag if image else ""
    airflow_moves = move_check(env, host, only, session, addresses or {}, options.empty_database)

    def before(phase: int) -> None:
        """The hosts it needs first, then that Airflow's database does not move to where it has no tables."""
        if before_changes:
            before_changes(phase)
        airflow_moves(phase)

    try:
        return Converge(
            session=session,
            build=lambda facts: host_resources(RoleContext(env, host, facts, pub, values, tag, addresses or {},
                                                           live_web, options.purge), only,
                                               record=record_scope(options.roles), purge=options.purge),
            progress=progress, dry_run=options.dry_run,
            verify_login=lambda: verify_deploy_login(session, target, known, redactor),
            before_phase=get_image, before_changes=before,
        ).run()
    finally:
        session.close()


def record_scope(roles: tuple[str, ...] | None) -> tuple[str, ...]:
    """Whose leftovers a provision removes: every role's (also of roles a host lost), or those of --roles."""
    return RECORD_ALL if roles is None else tuple(r for r in RECORD_ALL if r in roles)


def _has_docker(session: Session) -> bool:
    """The image can be loaded once Docker runs there (the docker role installs it on first run)."""
    return session.script("command -v docker >/dev/null && docker info >/dev/null 2>&1", timeout=60).rc == 0


def verify_deploy_login(session: Session, target: Target, known: KnownHosts, redactor: Redactor) -> None:
    """Before sshd refuses root and passwords, prove the deploy user logs in and can sudo."""
    deploy = target.users[0]
    if session.user == deploy:
        return
    try:
        probe = connect(target, known, redactor, users=(deploy,))
    except RemoteError as exc:
        raise RemoteError(target.name, "verify deploy login", f"{deploy} cannot log in ({exc.detail})",
                          "root login stays on; fix the deploy user's key and re-run") from None
    try:
        result = probe.run("sudo -n true")
    finally:
        probe.close()
    if result.rc != 0:
        raise RemoteError(target.name, "verify deploy login", f"{deploy} cannot sudo without a password",
                          "root login stays on; check /etc/sudoers.d and re-run")
