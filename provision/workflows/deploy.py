"""``deploy``, ``rollback``, ``releases``, ``unlock``: ship the app as releases behind blue/green slots.

Per host: lock → upload what changed → virtualenv (reused by requirements hash) → .env →
pg_dump → release command → start the idle slot → health gate → nginx switch (graceful reload)
→ previous slot kept warm → prune → audit → unlock. A failure before the switch leaves the old
release serving; the lock is always released (and a lock whose SSH session died is stale).
"""
from __future__ import annotations

import getpass
import json
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import hosts as host_selection
from .. import release as rel
from ..engine.runner import Converge, HostOutcome, Progress
from ..errors import DropshipError, RemoteError
from ..inventory import Environment, SecretRef
from ..keys import public_key
from ..redact import Redactor
from ..report import Report
from ..roles import RoleContext, host_resources
from ..roles.airflow import LAYOUT as AIRFLOW
from ..roles.app import SLOTS, AppLayout, layout
from ..secrets import SecretStore
from ..templates import render
from ..transport.hostkeys import KnownHosts
from ..transport.pool import fan_out
from ..transport.ssh import Session, connect
from .database import backup_command
from .provision import resolve_secrets


@dataclass(frozen=True)
class DeployOptions:
    ref: str | None = None
    hosts: tuple[str, ...] | None = None
    parallel: int = 10
    only: str | None = None          # "app" or "airflow" (DAGs): default both, where hosts have the role


@dataclass
class HostState:
    """What a host has now: the live slot and the release in each slot."""

    live: str | None
    slots: dict[str, str | None]
    releases: list[str]
    manifest: dict | None = None
    python: str = ""

    @property
    def live_release(self) -> str | None:
        return self.slots.get(self.live) if self.live else None

    @property
    def idle(self) -> str:
        return SLOTS[1] if self.live == SLOTS[0] else SLOTS[0]


@dataclass
class Shipment:
    """A release ready to ship: id, files, manifest (controller side)."""

    id: str
    source: Path
    manifest: dict
    requirements: bytes
    info: dict = field(default_factory=dict)


DEPLOYED = ("app", "airflow")


def deployed_roles(env: Environment, host, only: str | None = None) -> tuple[str, ...]:
    """What a deploy ships to ``host``: the app, the DAGs, or both."""
    wanted = {"app": env.settings.app is not None and env.settings.app.source is not None,
              "airflow": env.settings.airflow is not None and env.settings.airflow.dags is not None}
    return tuple(r for r in DEPLOYED if r in host.roles and wanted[r] and only in (None, r))


def app_hosts(env: Environment, names: tuple[str, ...] | None, only: str | None = None):
    if only not in (None, *DEPLOYED):
        raise DropshipError(f"unknown --only {only!r}", "use --only app or --only airflow")
    chosen = [h for h in host_selection.select(env, names) if deployed_roles(env, h, only)]
    if not chosen:
        what = only or "app or airflow"
        raise DropshipError(f"nothing to deploy: no host of {env.name} has the {what} role with its settings "
                            "(app.source / airflow.dags)", "add the role to a host and the section to the inventory")
    return chosen


# --- the controller side ------------------------------------------------------------------------

@contextmanager
def checked_out(source: Path, ref: str | None):
    """The source folder as it is, or as it is at git ``ref`` (exported to a temp folder)."""
    if not ref:
        yield source, rel.git_sha(source)
        return
    top = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True).stdout.strip()
    sha = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=8", f"{ref}^{{commit}}"],
                         capture_output=True, text=True).stdout.strip()
    if not top or not sha:
        raise DropshipError(f"unknown git ref {ref!r} for {source}", "pass a branch, tag or commit of that repository")
    inner = source.resolve().relative_to(Path(top).resolve())
    with tempfile.TemporaryDirectory(prefix="dropship-ref-") as tmp:
        archive = subprocess.run(["git", "-C", top, "archive", "--format=tar", f"{sha}:{inner}"], capture_output=True)
        if archive.returncode != 0:
            raise DropshipError(f"git archive of {ref} failed: {archive.stderr.decode().strip()}",
                                "check that app.source exists at that ref")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp), sha


def shipment(env: Environment, source: Path, sha: str) -> Shipment:
    app = env.settings.app
    req = source / app.requirements
    if not req.is_file():
        raise DropshipError(f"{req} does not exist", "set app.requirements to the requirements file in app.source")
    rid = rel.release_id(sha)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    return Shipment(rid, source, rel.manifest(source, app.exclude), req.read_bytes(),
                    {"id": rid, "git": sha, "by": who, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def app_environment(env: Environment, values: dict[str, str], release_id: str) -> list[tuple[str, str]]:
    """The release's .env: database URL, secret key, inventory variables, release id."""
    app = env.settings.app
    out: list[tuple[str, str]] = []
    if app.database:
        out.append(("DATABASE_URL", rel.database_url(app.database.user, values[app.database.password.name],
                                                     app.database.name)))
    if app.secret_key:
        out.append(("SECRET_KEY", values[app.secret_key.name]))
    for key, value in app.env:
        out.append((key, values[value.name] if isinstance(value, SecretRef) else value))
    out.append(("RELEASE_ID", release_id))
    return out


# --- one host -------------------------------------------------------------------------------------

class HostDeploy:
    """The steps of deploy/rollback on one host, each reported with its time."""

    def __init__(self, env: Environment, session: Session, progress: Progress, redactor: Redactor):
        self.env, self.session, self.progress, self.redact = env, session, progress, redactor
        self.app = env.settings.app
        self.lay: AppLayout | None = layout(self.app) if self.app else None
        self.lock_dir = self.lay.lock_dir if self.lay else f"{AIRFLOW.root}/deploy.lock"
        self.audit_log = self.lay.audit_log if self.lay else f"{AIRFLOW.root}/audit.log"
        self.outcome = HostOutcome(session.name)
        self.who = f"{getpass.getuser()}@{socket.gethostname()}"
        self._audit: list[str] = []

    def step(self, name: str, script: str, timeout: float = 600, fix: str | None = None) -> str:
        started = time.monotonic()
        result = self.session.script(script, timeout=timeout)
        seconds = time.monotonic() - started
        if result.rc != 0:
            lines = [ln.strip() for ln in self.redact(result.stdout).splitlines() if ln.strip()]
            detail = " | ".join(lines[-6:])[-700:] or f"exit {result.rc}"
            self.progress.step(self.session.name, "failed", f"{name}: {detail}", seconds)
            raise RemoteError(self.session.name, name, detail, fix or "fix the cause and re-run; the old release "
                              "is still serving")
        self.progress.step(self.session.name, "ok", name, seconds)
        self.outcome.ok += 1
        return result.stdout

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> HostState:
        root = self.lay.root
        out = self.step("read state", f"""
cd {root} || exit 1
echo "live=$(cat live 2>/dev/null)"
for s in {' '.join(SLOTS)}; do echo "slot $s=$(basename "$(readlink slots/$s 2>/dev/null)" 2>/dev/null)"; done
echo "python=$(python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)"
ls -1 releases | grep -v '\\.partial$' | sed 's/^/release /'
l=$(readlink slots/$(cat live 2>/dev/null) 2>/dev/null) && [ -n "$l" ] && echo "manifest $(cat slots/$(cat live)/{rel.MANIFEST} 2>/dev/null)"
true
""", fix="provision the host with the app role first: `invoke provision --env ENV`")
        live, slots, releases, manifest, python = None, {s: None for s in SLOTS}, [], None, ""
        for line in out.splitlines():
            if line.startswith("live="):
                live = line[5:] or None
            elif line.startswith("slot "):
                s, _, r = line[5:].partition("=")
                slots[s] = r or None
            elif line.startswith("python="):
                python = line[7:]
            elif line.startswith("release "):
                releases.append(line[8:])
            elif line.startswith("manifest "):
                try:
                    manifest = json.loads(line[9:])
                except ValueError:
                    manifest = None
        return HostState(live if live in SLOTS else None, slots, sorted(releases), manifest, python)

    @contextmanager
    def locked(self, action: str, what: str):
        holder = {"by": self.who, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": action,
                  "what": what}
        result = self.session.script(rel.lock_command(self.lock_dir, holder), timeout=30)
        lines = result.stdout.splitlines()
        if result.rc == 3 or "LOCKED_BY_ME" not in lines:
            held = next((ln[7:] for ln in reversed(lines) if ln.startswith("LOCKED ")), "unknown holder").strip()
            try:
                h = json.loads(held)
                held = f"{h['by']} since {h['since']} ({h['action']} {h['what']})"
            except (ValueError, KeyError, TypeError):
                pass
            raise RemoteError(self.session.name, "lock", f"another deploy holds the lock: {held}",
                              f"wait for it; if its deploy was killed, `invoke unlock --env {self.env.name}` "
                              "frees it once its last step has ended")
        if any(ln.startswith("STALE") for ln in lines):
            self.progress.step(self.session.name, "ok", "took over a stale lock (its SSH session is gone)")
        try:
            yield
        finally:
            audit = "\n".join(rel.audit_command(self.audit_log, line) for line in self._audit)
            self._audit.clear()
            self.session.script(f"{audit}\n{rel.unlock_command(self.lock_dir)}", timeout=30)

    def audit(self, action: str, release: str, result: str) -> None:
        """An audit line, written with the unlock (one round trip less)."""
        self._audit.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {self.who} {action} {release} "
                           f"{result}")

    def attempt(self, action: str, what: str, body) -> HostOutcome:
        """Run ``body`` under the lock and audit it; a failure ends as this host's one-line error."""
        started = time.monotonic()
        try:
            with self.locked(action, what):
                try:
                    done = body()
                    self.audit(action, done or what, "ok")
                except RemoteError as exc:
                    self.audit(action, what, f"failed at {exc.step}")
                    raise
        except RemoteError as exc:
            self.outcome.failed += 1
            self.outcome.error = self.redact(str(exc))
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    # -- deploy -----------------------------------------------------------------------------------
    def deploy(self, ship: Shipment, values: dict[str, str]) -> None:
        state = self.state()
        in_slots = [r for r in state.slots.values() if r]
        cleaned = self.step("clean up unfinished releases", rel.cleanup_command(f"{self.lay.root}/releases", in_slots))
        if "removed" in cleaned:
            state = self.state()
        previous = state.live_release if state.live_release in state.releases else None
        upload = rel.diff(state.manifest if previous else None, ship.manifest)
        tar = rel.tarball(ship.source, upload.changed)
        release_dir = self.lay.release(ship.id)
        try:
            self.step(f"upload {len(upload.changed)} changed, {len(upload.removed)} removed file(s)",
                      rel.upload_command(f"{self.lay.root}/releases", ship.id, previous, upload, tar,
                                         json.dumps(ship.manifest).encode(), json.dumps(ship.info).encode()))
            digest = rel.requirements_hash(ship.requirements, state.python)
            self.step(f"virtualenv {digest}", rel.venv_command(self.lay.venvs, digest, release_dir,
                                                               self.app.requirements), timeout=1800)
            env_values = app_environment(self.env, values, ship.id)
            self.step("write .env", rel.write_file_command(f"{release_dir}/.env", rel.env_file(env_values),
                                                           self.lay.user, 0o600))
            if self.app.release_command:
                if self.app.database:
                    self.step("pg_dump before migrations", backup_command(self.app.database.name, f"pre-{ship.id}"))
                self.step(f"release command: {self.app.release_command}",
                          rel.release_command(release_dir, self.lay.user, self.app.release_command),
                          fix="fix the release command (the database was left as it was); the old release "
                              "is still serving")
        except RemoteError:
            self.session.script(f"rm -rf {rel.q(release_dir)}", timeout=60)
            raise
        self.start_and_switch(state, ship.id, discard_on_failure=True)
        self.step("prune old releases", rel.prune_command(f"{self.lay.root}/releases",
                                                          [r for r in self.state().slots.values() if r],
                                                          self.app.keep_releases))

    def start_and_switch(self, state: HostState, release: str, discard_on_failure: bool = False) -> None:
        idle = state.idle
        unit = self.lay.unit(idle)
        slots = f"{self.lay.root}/slots"
        self.step(f"start {release} in slot {idle}", rel.start_slot_command(slots, idle, release, unit))
        try:
            self.step("health check", rel.health_command(self.lay.port(idle), self.app.health_path, release),
                      fix="see `journalctl -u " + unit + "` on the host; the old release is still serving")
        except RemoteError:
            # Put the idle slot back as it was: the release it held stays warm for rollbacks.
            warm = state.slots.get(idle)
            restore = (rel.start_slot_command(slots, idle, warm, unit) if warm
                       else f"systemctl stop {rel.q(unit)}; rm -f {rel.q(slots + '/' + idle)}")
            discard = f"\nrm -rf {rel.q(self.lay.release(release))}" if discard_on_failure else ""
            self.session.script(f"systemctl stop {rel.q(unit)}\n{restore}{discard}", timeout=120)
            raise
        self.switch(idle, release)

    def switch(self, slot: str, release: str, check_warm: bool = False) -> None:
        """Point nginx at ``slot``; with ``check_warm``, first make sure it still answers (rollbacks)."""
        upstream = render("app/upstream.conf.j2", slot=slot, port=self.lay.port(slot))
        unit = rel.q(self.lay.unit(slot))
        check = (f"systemctl is-active -q {unit} || systemctl start {unit}\n"
                 f"( {rel.health_command(self.lay.port(slot), self.app.health_path, release)} ) >/dev/null || "
                 f"{{ echo 'slot {slot} does not answer with {release}'; exit 1; }}\n") if check_warm else ""
        self.step(f"switch nginx to slot {slot} ({release})",
                  check + rel.switch_command(self.lay.upstream_file, upstream, self.lay.live_file, slot))
        self.outcome.changed += 1

    # -- rollback ---------------------------------------------------------------------------------
    def rollback(self, to: str | None) -> str:
        state = self.state()
        warm = state.slots.get(state.idle)
        target = to or warm
        if not target:
            raise RemoteError(self.session.name, "rollback", "no previous release is kept warm",
                              "pass --to with one of the releases listed by `invoke releases`")
        if target not in state.releases:
            raise RemoteError(self.session.name, "rollback", f"unknown release {target}",
                              f"use one of: {', '.join(reversed(state.releases)) or 'none retained'}")
        if target == state.live_release:
            raise RemoteError(self.session.name, "rollback", f"{target} is already live", "nothing to do")
        if target == warm:
            self.switch(state.idle, target, check_warm=True)
        else:
            self.start_and_switch(state, target)
        return target


# --- workflows -------------------------------------------------------------------------------------

def _sessions(env: Environment, names, redactor: Redactor, parallel: int, work, command: str,
              extra: dict | None = None) -> Report:
    started = time.monotonic()
    chosen = app_hosts(env, names)
    targets = host_selection.targets(env, chosen)
    known = KnownHosts(env.workspace.known_hosts_path)
    specs = {h.name: h for h in chosen}
    report = Report(command, env.name, extra=extra or {})

    def one(target):
        session = connect(target, known, redactor)
        try:
            return work(specs[target.name], session)
        finally:
            session.close()

    for target, outcome, exc in fan_out(targets, one, parallel):
        if exc is not None and not isinstance(exc, DropshipError):
            raise exc
        if exc is not None:
            outcome = HostOutcome(target.name, failed=1, error=redactor(str(exc)))
        report.hosts[target.name] = outcome
    report.seconds = time.monotonic() - started
    return report


def dag_shipment(env: Environment, sha: str, release_id: str) -> Shipment:
    af = env.settings.airflow
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    return Shipment(release_id, af.dags, rel.manifest(af.dags, (".git", "__pycache__", "*.pyc")), b"",
                    {"id": release_id, "git": sha, "by": who, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def deploy(env: Environment, options: DeployOptions, progress: Progress) -> Report:
    from .airflow import HostDags, ensure_image, prepare_image

    chosen = app_hosts(env, options.hosts, options.only)
    kinds = {r for h in chosen for r in deployed_roles(env, h, options.only)}
    redactor = Redactor()
    values = resolve_secrets(env, SecretStore(env, redactor), dry_run=False)
    pub = public_key(env)
    image = prepare_image(env) if "airflow" in kinds else None
    app_source = env.settings.app.source if "app" in kinds else env.settings.airflow.dags
    with checked_out(app_source, options.ref if "app" in kinds else None) as (source, sha):
        ship = shipment(env, source, sha) if "app" in kinds else None
        release_id = ship.id if ship else rel.release_id(sha)
        dags = dag_shipment(env, rel.git_sha(env.settings.airflow.dags), release_id) if "airflow" in kinds else None

        def work(host, session: Session) -> HostOutcome:
            roles = deployed_roles(env, host, options.only)
            hd = HostDeploy(env, session, progress, redactor)

            def body() -> str:
                if "airflow" in roles:
                    ensure_image(session, image, progress)
                laid_out = Converge(session=session, progress=progress, build=lambda facts: host_resources(
                    RoleContext(env, host, facts, pub, values, image.tag if image else ""), roles)).run()
                hd.outcome.changed += laid_out.changed
                if laid_out.failed:
                    raise RemoteError(host.name, "lay out", laid_out.error, "fix it and re-run")
                if "app" in roles:
                    hd.deploy(ship, values)
                if "airflow" in roles:
                    HostDags(env, session, progress, redactor, hd.step).deploy(dags)
                    hd.outcome.changed += 1
                return release_id

            return hd.attempt("deploy", release_id, body)

        return _sessions(env, tuple(h.name for h in chosen), redactor, options.parallel, work, "deploy",
                         {"release": release_id})


def rollback(env: Environment, to: str | None, hosts, progress: Progress, parallel: int = 10) -> Report:
    from .airflow import HostDags

    redactor = Redactor()
    chosen = app_hosts(env, hosts)

    def work(host, session: Session) -> HostOutcome:
        hd = HostDeploy(env, session, progress, redactor)
        roles = deployed_roles(env, host)

        def body() -> str:
            target = hd.rollback(to) if "app" in roles else None
            if "airflow" in roles:
                target = HostDags(env, session, progress, redactor, hd.step).rollback(to) or target
                hd.outcome.changed += 1
            return target or ""

        return hd.attempt("rollback", to or "previous", body)

    return _sessions(env, tuple(h.name for h in chosen), redactor, parallel, work, "rollback", {"release": to})


def releases(env: Environment, hosts) -> dict[str, list[dict]]:
    """Per host: retained releases (newest first) with live/warm flags, who deployed them and when."""
    redactor = Redactor()
    found: dict[str, list[dict]] = {}

    def work(host, session: Session) -> HostOutcome:
        if env.settings.app is None:
            return HostOutcome(host.name)
        lay = layout(env.settings.app)
        out = session.script(f"""
cd {lay.root} 2>/dev/null || exit 0
echo "live=$(cat live 2>/dev/null)"
for s in {' '.join(SLOTS)}; do echo "slot $s=$(basename "$(readlink slots/$s 2>/dev/null)" 2>/dev/null)"; done
for r in $(ls -1 releases | grep -v '\\.partial$'); do echo "release $r $(cat releases/$r/{rel.INFO} 2>/dev/null)"; done
""", timeout=60).stdout
        live, slots, rows = None, {}, []
        for line in out.splitlines():
            if line.startswith("live="):
                live = line[5:]
            elif line.startswith("slot "):
                s, _, r = line[5:].partition("=")
                slots[s] = r
            elif line.startswith("release "):
                rid, _, info = line[8:].partition(" ")
                try:
                    meta = json.loads(info) if info else {}
                except ValueError:
                    meta = {}
                rows.append({"id": rid, "live": slots.get(live) == rid if live else False,
                             "warm": rid in slots.values() and slots.get(live) != rid,
                             "by": meta.get("by", ""), "at": meta.get("at", ""), "git": meta.get("git", "")})
        found[host.name] = sorted(rows, key=lambda r: r["id"], reverse=True)
        return HostOutcome(host.name)

    _sessions(env, hosts, redactor, 10, work, "releases")
    return found


def unlock(env: Environment, hosts, force: bool = False) -> Report:
    """Remove a stale lock; refuse while its holder still runs a step (unless ``force``)."""
    redactor = Redactor()

    def work(host, session: Session) -> HostOutcome:
        lock_dir = HostDeploy(env, session, Progress(), redactor).lock_dir
        if not force and session.script(rel.lock_holder_alive_command(lock_dir), timeout=30).rc == 0:
            raise RemoteError(host.name, "unlock", "the lock's holder is still running a step (its connection may be "
                              "gone, but the step finishes first)", "wait for it, or pass --force if you are sure")
        session.script(rel.unlock_command(lock_dir), timeout=30)
        return HostOutcome(host.name, changed=1)

    return _sessions(env, hosts, redactor, 10, work, "unlock")
