"""``deploy``, ``rollback``, ``releases``, ``unlock``: the apps and the Airflow DAGs as releases.

Cheap checks come first (hosts known, host keys pinned, token set, sources and requirements
present), then the Airflow image, then every host at once: its layout, then each app under
its own lock (host_deploy.py) and the DAGs under theirs.
"""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from .. import balancer, db_release
from .. import hosts as host_selection
from .. import placement
from .. import release as rel
from ..engine.runner import Converge, HostOutcome, Progress
from ..errors import DropshipError, RemoteError, changed_nothing
from ..inventory import AppSettings, Environment, HostSpec
from ..keys import key_path, public_key
from ..redact import Redactor
from ..report import Report
from ..roles import RoleContext, host_resources
from ..roles.app import SLOTS, layout
from ..secrets import SecretStore, redactor_for
from ..transport.hostkeys import KnownHosts
from ..transport.pool import PARALLEL
from ..transport.ssh import LazySession, Session, Target
from .host_deploy import AppDeploy, AppState, Steps, app_state_command, rollback_target
from .airflow_database import move_check
from .dag_release import DAG_LOCK, dag_hosts, deploy_dags, rollback_dags
from .migration_gate import MigrationGate
from .on_hosts import run_on_hosts
from .provision import resolve_secrets
from .rolling import Rollout
from .shipment import app_shipment, checked_out, dag_shipment



@dataclass(frozen=True)
class DeployOptions:
    ref: str | None = None
    hosts: tuple[str, ...] | None = None
    parallel: int = PARALLEL
    only: str | None = None          # "app" (every app), an app's name, or "airflow" (the DAGs); default all
    lock_wait: float = 0             # seconds to wait for a live lock holder
    empty_database: bool = False     # an app's or Airflow's database moved to a host where it is empty: go on


# --- what ships where -------------------------------------------------------------------------------

def chosen_apps(env: Environment, only: str | None = None, flag: str = "--only") -> tuple[AppSettings, ...]:
    """The apps a deploy ships (those with a source), narrowed by ``only`` (given as ``flag``)."""
    names = [a.name for a in env.settings.apps]
    if only not in (None, "app", "airflow", *names):
        raise DropshipError(f"unknown {flag} {only!r}",
                            f"use {flag} app, {flag} airflow or an app's name: {', '.join(names) or 'none'}")
    if only == "airflow":
        return ()
    return tuple(a for a in env.settings.apps if a.source is not None and only in (None, "app", a.name))


def ships_dags(env: Environment, only: str | None = None) -> bool:
    af = env.settings.airflow
    return af is not None and af.dags is not None and only in (None, "airflow")


def deployed_roles(env: Environment, host: HostSpec, only: str | None = None) -> tuple[str, ...]:
    """What a deploy ships to ``host``: apps, DAGs (to the airflow and airflow_worker hosts), or both."""
    dags = ships_dags(env, only)
    wanted = {"app": bool(chosen_apps(env, only)), "airflow": dags, "airflow_worker": dags}
    return tuple(r for r in ("app", "airflow", "airflow_worker") if r in host.roles and wanted[r])


def reads_dags(roles: tuple[str, ...]) -> bool:
    return "airflow" in roles or "airflow_worker" in roles


def check_dag_hosts(env: Environment, chosen: list[HostSpec], only: str | None = None) -> list[HostSpec]:
    """The chosen hosts a DAG release switches together; refused when --hosts leaves one out."""
    if not ships_dags(env, only):
        return []
    every = [h.name for h in env.hosts if reads_dags(deployed_roles(env, h, only))]
    picked = [h.name for h in chosen if h.name in every]
    if picked and len(picked) != len(every):
        missing = [n for n in every if n not in picked]
        raise DropshipError(f"DAG releases switch on every Airflow host together, and --hosts leaves out "
                            f"{', '.join(missing)}", f"add {', '.join(missing)} to --hosts, or pass --only app")
    return dag_hosts(env, [h for h in chosen if h.name in every])


def app_hosts(env: Environment, names: tuple[str, ...] | None, only: str | None = None) -> list[HostSpec]:
    chosen = [h for h in host_selection.select(env, names) if deployed_roles(env, h, only)]
    if not chosen:
        what = only or "app or airflow"
        raise DropshipError(f"nothing to deploy: no host of {env.name} has the {what} role with its settings "
                            "(app.source / airflow.dags)", "add the role to a host and the section to the inventory")
    return chosen


def preflight(env: Environment, hosts: list[HostSpec], redactor: Redactor):
    """Checks that cost no build and no connection: token set, droplets known, host keys pinned,
    the SSH key there. Returns the hosts' targets."""
    if env.token is not None:
        SecretStore(env, redactor).resolve(env.token)
    targets = host_selection.targets(env, hosts)
    known = KnownHosts(env.workspace.known_hosts_path)
    for t in targets:
        if not t.accept_new_key and not known.lookup(t.address, t.port):
            raise DropshipError(f"{t.name}: no pinned host key for {t.address}:{t.port}",
                                f"run `invoke provision --env {env.name}` first (it pins keys of hosts the provider "
                                "created), or pass --accept-new-host-keys to provision once you trust the host")
    if not key_path(env).exists():
        raise DropshipError(f"no SSH key for {env.name} at {key_path(env)}",
                            f"run `invoke droplet.create --env {env.name}`, or set ssh.key in the inventory")
    return targets


def rolling_lb(env: Environment, hosts: list[HostSpec], apps: tuple[AppSettings, ...],
               redactor: Redactor) -> Target | None:
    """The lb host's target when the apps roll through web hosts behind it (checked like the hosts')."""
    lb = balancer.lb_host(env)
    if lb is None or not apps or not any("app" in h.roles for h in hosts):
        return None
    balancer.require_addresses(env, host_selection.private_addresses(env))
    return preflight(env, [lb], redactor)[0]


# --- per host -----------------------------------------------------------------------------------------

def _merge(into: HostOutcome, part: HostOutcome) -> None:
    into.ok += part.ok
    into.changed += part.changed
    into.failed += part.failed
    into.error = "; ".join(e for e in (into.error, part.error) if e)


def _prefix(env: Environment, app: AppSettings) -> str:
    """Step labels name the app when the environment has several."""
    return f"{app.name}: " if len(env.settings.apps) > 1 else ""


def _app_steps(env, session, progress, redactor, app: AppSettings, lock_wait: float = 0) -> Steps:
    lay = layout(app)
    return Steps(session, progress, redactor, lay.lock_dir, lay.audit_log, _prefix(env, app), lock_wait)


def database_target(env: Environment, hosts: list[HostSpec], apps: tuple[AppSettings, ...],
                    redactor: Redactor) -> Target | None:
    """The postgres host's target when an app database of ``hosts`` is on another host (checked like
    the hosts': known, key pinned), else None."""
    pg = placement.postgres_host(env)
    remote = pg and any(h.name != pg.name and "app" in h.roles for h in hosts) and any(a.database for a in apps)
    return preflight(env, [pg], redactor)[0] if remote else None


@contextmanager
def app_deploys(env: Environment, host: HostSpec, session: Session, db: Target | None, addresses: dict[str, str],
                progress: Progress, redactor: Redactor, lock_wait: float = 0):
    """``make(app) -> AppDeploy`` on ``host``: its database commands on the postgres host (one SSH
    session, logged in on the first of them) when that is another host."""
    remote = db is not None and db.name != host.name and "app" in host.roles
    db_session = LazySession(db, KnownHosts(env.workspace.known_hosts_path), redactor) if remote else None
    # (also where no database command runs there: a rollback checks the release it goes back to reads it)
    address = placement.database_address(env, host.name, addresses) if "app" in host.roles else placement.LOCAL

    def make(app: AppSettings) -> AppDeploy:
        steps = _app_steps(env, session, progress, redactor, app, lock_wait)
        db_steps = Steps(db_session, progress, redactor, "", "", steps.prefix) if db_session else None
        return AppDeploy(app, steps, db_steps, address)

    try:
        yield make
    finally:
        if db_session:
            db_session.close()


# --- the workflows ------------------------------------------------------------------------------------

def deploy(env: Environment, options: DeployOptions, progress: Progress) -> Report:
    from .airflow import ensure_image, prepare_image

    apps, dags_too = chosen_apps(env, options.only), ships_dags(env, options.only)
    chosen = app_hosts(env, options.hosts, options.only)
    together = check_dag_hosts(env, chosen, options.only)
    redactor = redactor_for(env)
    targets = preflight(env, chosen, redactor)
    addresses = host_selection.private_addresses(env)
    placement.require_addresses(env, addresses)
    balancer.require_addresses(env, addresses)
    db = database_target(env, chosen, apps, redactor)
    lb = rolling_lb(env, chosen, apps, redactor)
    web = [h.name for h in chosen if "app" in h.roles]
    first = web[0] if lb or len(web) > 1 else None      # several app hosts share the database: one migrates
    gate = MigrationGate(first) if first and not lb else None   # without an lb, the others wait for its migrations
    values = resolve_secrets(env, SecretStore(env, redactor), dry_run=False)
    pub = public_key(env)
    with ExitStack() as stack:
        ships = {}
        for app in apps:
            source, sha = stack.enter_context(checked_out(app.source, options.ref))
            ships[app.name] = app_shipment(app, source, sha)
        release_id = next(iter(ships.values())).id if ships else rel.release_id(rel.git_sha(env.settings.airflow.dags))
        dags = dag_shipment(env.settings.airflow, rel.git_sha(env.settings.airflow.dags), release_id) \
            if dags_too else None
        image = prepare_image(env) if together else None

        def work(host: HostSpec, session: Session) -> HostOutcome:
            if gate is None or host.name != gate.lead:
                return deploy_host(host, session)
            try:
                return deploy_host(host, session)
            finally:      # whatever the lead did not open stays closed: the others keep their old release
                gate.settle([a.name for a in apps], f"{host.name} failed before it")

        def deploy_host(host: HostSpec, session: Session) -> HostOutcome:
            started = time.monotonic()
            roles = deployed_roles(env, host, options.only)
            outcome = HostOutcome(host.name)
            try:
                if reads_dags(roles):
                    ensure_image(session, image, progress)
                laid_out = Converge(session=session, progress=progress, build=lambda facts: host_resources(
                    RoleContext(env, host, facts, pub, values, image.tag if image else "", addresses), roles,
                    record=roles), before_changes=move_check(env, host, roles, session, addresses,
                                                             options.empty_database)).run()
            except RemoteError as exc:
                return HostOutcome(host.name, failed=1, error=redactor(str(exc)), seconds=time.monotonic() - started)
            outcome.changed += laid_out.changed
            if laid_out.failed:
                outcome.failed, outcome.error = 1, laid_out.error
                return outcome
            with app_deploys(env, host, session, db, addresses, progress, redactor, options.lock_wait) as make:
                for app in apps if "app" in roles else ():
                    deploy_app = make(app)
                    ship = ships[app.name]
                    migrate = first is None or host.name == first   # the release command runs once
                    _merge(outcome, deploy_app.steps.attempt("deploy", ship.id, env.name,
                                                             lambda: deploy_app.deploy(ship, values, migrate, gate,
                                                                                       options.empty_database)))
            outcome.seconds = time.monotonic() - started
            return outcome

        def undo(host: HostSpec, session: Session) -> HostOutcome:
            """A host of a failed batch back on its previous release (where the new one went live)."""
            outcome = HostOutcome(host.name)
            with app_deploys(env, host, session, None, addresses, progress, redactor) as make:
                for app in apps:
                    back, rid = make(app), ships[app.name].id
                    _merge(outcome, back.steps.attempt("rollback", rid, env.name, lambda: back.undo(rid)))
            return outcome

        releases = {name: s.id for name, s in ships.items()} | ({"airflow": dags.id} if dags else {})
        extra = {"release": release_id, "releases": releases}
        if lb:
            report = Rollout(env, chosen, targets, lb, addresses, apps, redactor, progress, options.parallel,
                             "deploy", work, undo, first_alone=True).run(extra)
        elif gate:        # every host at once, the lead first in line (a bounded pool starts it first)
            lead_first = sorted(targets, key=lambda t: t.name != gate.lead)
            report = run_on_hosts(env, chosen, lead_first, redactor, options.parallel, work, "deploy", extra)
            report.hosts = {h.name: report.hosts[h.name] for h in chosen}
        else:
            report = run_on_hosts(env, chosen, targets, redactor, options.parallel, work, "deploy", extra)
        if together:
            merge_dags(report, together, lambda: deploy_dags(env, together, dags, progress, redactor,
                                                            options.lock_wait), progress)
        return report


def merge_dags(report: Report, hosts: list[HostSpec], run, progress: Progress) -> None:
    """The DAG release's outcomes into ``report``; not attempted when one of its hosts failed already."""
    failed = next((h.name for h in hosts if report.hosts[h.name].failed), None)
    if failed:
        for h in hosts:
            if h.name != failed:
                error = f"DAG release not switched: {failed} failed"
                _merge(report.hosts[h.name], HostOutcome(h.name, failed=1, error=error))
                progress.step(h.name, "failed", error)
        return
    for name, outcome in run().items():
        _merge(report.hosts[name], outcome)


def rollback(env: Environment, to: str | None, hosts, progress: Progress, parallel: int = PARALLEL,
             app_name: str | None = None, with_db: bool = False, db_method: str | None = None,
             confirm=None) -> Report:
    """Switch back; ``with_db``: the app database too (see db_rollback), ``confirm(message)`` asked first."""
    from .db_rollback import rollback_with_db

    if to is not None and not rel.RELEASE_ID.fullmatch(to):
        raise DropshipError(f"--to {to!r} is not a release id like 20261125T010203Z-1a2b3c4d",
                            f"use one listed by `invoke releases --env {env.name}`")
    apps = chosen_apps(env, app_name, "--app")
    if app_name == "airflow":
        apps = ()
    if to and len(apps) > 1:
        raise DropshipError("--to names one app's release, and this environment has several apps",
                            f"add --app with one of: {', '.join(a.name for a in apps)}")
    if with_db:
        if db_method not in (None, "dump", "downgrade"):
            raise DropshipError(f"--db-method {db_method!r} is not dump or downgrade", "pass dump or downgrade")
        missing = [a.name for a in apps if a.database is None]
        if not apps or missing:
            raise DropshipError(f"--with-db: app {', '.join(missing) or 'airflow'} has no database",
                                "roll back without --with-db, or pick an app with a database with --app")
    redactor = redactor_for(env)
    chosen = app_hosts(env, hosts, app_name)
    together = [] if with_db else check_dag_hosts(env, chosen, app_name)
    targets = preflight(env, chosen, redactor)
    addresses = host_selection.private_addresses(env)
    db = database_target(env, chosen, apps, redactor) if with_db else None
    said: list[str] = []

    def work(host: HostSpec, session: Session) -> HostOutcome:
        started = time.monotonic()
        roles = deployed_roles(env, host, app_name)
        outcome = HostOutcome(host.name)
        with app_deploys(env, host, session, db, addresses, progress, redactor) as make:
            for app in apps if "app" in roles else ():
                back = make(app)
                if with_db:
                    def back_with_db() -> str:
                        lines: list[str] = []
                        target = rollback_with_db(back, env.name, to, db_method, confirm, lines)
                        for line in lines:
                            progress.step(host.name, "ok", redactor(line))
                        said.extend(redactor(line) for line in lines)
                        return target

                    _merge(outcome, back.steps.attempt("rollback --with-db", to or "previous", env.name,
                                                       back_with_db))
                    continue
                _merge(outcome, back.steps.attempt("rollback", to or "previous", env.name, lambda: back.rollback(to)))
        outcome.seconds = time.monotonic() - started
        return outcome

    extra = {"release": to} | ({"database": said} if with_db else {})
    refused = rollback_refusals(env, [h for h in chosen if "app" in deployed_roles(env, h, app_name)], targets,
                                apps, to, redactor)
    if refused:
        return Report("rollback", env.name, hosts={h.name: refused.get(h.name) or HostOutcome(h.name, skipped=1)
                                                   for h in chosen}, extra=extra)
    lb = rolling_lb(env, chosen, apps, redactor) if not with_db else None
    if lb:
        report = Rollout(env, chosen, targets, lb, addresses, apps, redactor, progress, parallel, "rollback",
                         work).run(extra)
    else:
        report = run_on_hosts(env, chosen, targets, redactor, parallel, work, "rollback", extra)
    if together:
        merge_dags(report, together, lambda: rollback_dags(env, together, to, progress, redactor), progress)
    return report


def rollback_refusals(env: Environment, hosts: list[HostSpec], targets: list[Target], apps: tuple[AppSettings, ...],
                      to: str | None, redactor: Redactor) -> dict[str, HostOutcome]:
    """Where a rollback of several app hosts could not go back (the release unknown there, no warm
    one, an unreachable host), read before any of them changes: the outcomes then, else {}. A host
    that joined after the release, or a host that is down, would otherwise stop a rollout half done."""
    if len(hosts) < 2 or not apps:
        return {}
    names = {h.name for h in hosts}

    def work(host: HostSpec, session: Session) -> HostOutcome:
        for app in apps:
            store = rel.parse_state(session.script(app_state_command(layout(app)), timeout=60).stdout)
            state = AppState.of(store) if store.present else None
            _, problem, fix = rollback_target(state, to) if state else ("", f"{app.name} is not deployed here",
                                                                          f"deploy {app.name} there first")
            if problem and not (state and to and to == state.live_release):    # (it serves it already)
                raise RemoteError(host.name, f"{_prefix(env, app)}rollback", problem,
                                  f"{fix}, or leave {host.name} out with --hosts")
        return HostOutcome(host.name)

    report = run_on_hosts(env, hosts, [t for t in targets if t.name in names], redactor, PARALLEL, work,
                          "rollback")
    return {h: HostOutcome(h, failed=1, error=changed_nothing(o.error, "rollback"))
            for h, o in report.hosts.items() if o.failed}


def releases(env: Environment, hosts, app_name: str | None = None) -> dict[str, list[dict]]:
    """Per host: each app's retained releases (newest first) with live/warm flags, who and when."""
    apps = chosen_apps(env, app_name, "--app")
    redactor = redactor_for(env)
    chosen = [h for h in host_selection.select(env, hosts) if "app" in h.roles]
    found: dict[str, list[dict]] = {}

    def work(host: HostSpec, session: Session) -> HostOutcome:
        rows = []
        for app in apps:
            store = rel.parse_state(session.script(app_state_command(layout(app)), timeout=60).stdout)
            slots = {s: store.links.get(f"slots/{s}") for s in SLOTS}
            live = slots.get(store.live) if store.live else None
            for rid in sorted(store.releases, reverse=True):
                meta = store.info.get(rid, {})
                rows.append({"app": app.name, "id": rid, "live": rid == live,
                             "warm": rid in slots.values() and rid != live,
                             "by": meta.get("by", ""), "at": meta.get("at", ""), "git": meta.get("git", ""),
                             "db_revision": store.marks.get(rid, {}).get(db_release.REVISION, ""),
                             "db_dump": store.marks.get(rid, {}).get(db_release.LEFT, "")})
        found[host.name] = rows
        return HostOutcome(host.name)

    report = run_on_hosts(env, chosen, host_selection.targets(env, chosen), redactor, PARALLEL, work, "releases")
    failed = [h.error for h in report.hosts.values() if h.failed]
    if failed:
        raise DropshipError(failed[0])
    return found


def unlock(env: Environment, hosts, force: bool = False, app_name: str | None = None) -> Report:
    """Remove stale deploy locks (every app's and the DAGs'); refuse while a holder still runs a step."""
    redactor = redactor_for(env)
    locks = [layout(a).lock_dir for a in chosen_apps(env, app_name, "--app")]
    locks += [DAG_LOCK] if ships_dags(env, app_name) else []
    chosen = app_hosts(env, hosts, app_name)

    def work(host: HostSpec, session: Session) -> HostOutcome:
        freed = 0
        for lock in locks:
            if session.script(f"test -d {rel.q(lock)}", timeout=30).rc != 0:
                continue
            if not force and session.script(rel.lock_holder_alive_command(lock), timeout=30).rc == 0:
                raise RemoteError(host.name, "unlock", f"the holder of {lock} is still running a step (its "
                                  "connection may be gone, but the step finishes first)",
                                  "wait for it, or pass --force if you are sure")
            session.script(rel.unlock_command(lock), timeout=30)
            freed += 1
        return HostOutcome(host.name, changed=freed)

    return run_on_hosts(env, chosen, host_selection.targets(env, chosen), redactor, PARALLEL, work, "unlock")
