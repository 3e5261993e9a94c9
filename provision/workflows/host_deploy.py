"""Deploy and rollback of one app on one host: lock → upload what changed → virtualenv →
.env → pg_dump → release command → start the idle slot → health gate → nginx switch → prune →
audit → unlock. A failure before the switch leaves the old release serving."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass

from .. import db_release
from .. import release as rel
from ..engine.runner import HostOutcome, Progress
from ..build_failures import CERTIFICATE, build_failure_cause
from ..errors import RemoteError
from ..inventory import AppSettings
from ..redact import Redactor
from ..roles.app import SLOTS, AppLayout, layout
from ..templates import render
from ..transport.ssh import Session
from .database import backup_command, backup_dir, prune_dumps_command, table_count_command
from .migration_gate import MigrationGate
from .shipment import Shipment, app_environment, now, who


class Steps:
    """The steps of one deployable (an app, or the DAGs) on one host: each timed and reported,
    a failure as one line naming host and step; run under that deployable's lock and audited."""

    def __init__(self, session: Session, progress: Progress, redactor: Redactor, lock_dir: str, audit_log: str,
                 prefix: str = "", lock_wait: float = 0):
        self.session, self.progress, self.redact = session, progress, redactor
        self.lock_dir, self.audit_log, self.prefix, self.lock_wait = lock_dir, audit_log, prefix, lock_wait
        self.outcome = HostOutcome(session.name)
        self._audit: list[str] = []

    def step(self, name: str, script: str, timeout: float = 600, fix: str | None = None) -> str:
        name = self.prefix + name
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

    @contextmanager
    def locked(self, action: str, what: str, env_name: str):
        holder = {"by": who(), "since": now(), "action": action, "what": what}
        def waiting(line: str) -> None:       # WAIT / ENDING <seconds left> <holder>: a visible countdown
            kind, _, rest = line.partition(" ")
            if kind in ("WAIT", "ENDING"):
                left = rest.split(" ", 1)[0]
                what = "waiting for the lock's holder" if kind == "WAIT" else \
                    "waiting for a lost client's last step to end"
                self.progress.step(self.session.name, "ok", f"{self.prefix}{what}: {left}s left")

        result = self.session.script(rel.lock_command(self.lock_dir, holder, int(self.lock_wait)), on_line=waiting,
                                     timeout=max(self.lock_wait, 20) + 30)
        lines = result.stdout.splitlines()
        if result.rc == 3 or "LOCKED_BY_ME" not in lines:
            held = next((ln[7:] for ln in reversed(lines) if ln.startswith("LOCKED ")), "unknown holder").strip()
            try:
                h = json.loads(held)
                held = f"{h['by']} since {h['since']} ({h['action']} {h['what']})"
            except (ValueError, KeyError, TypeError):
                pass
            raise RemoteError(self.session.name, self.prefix + "lock", f"another deploy holds the lock: {held}",
                              f"wait for it (or pass --lock-wait SECONDS); if its deploy was killed, "
                              f"`invoke unlock --env {env_name}` frees it once its last step has ended")
        if any(ln.startswith("STALE") for ln in lines):
            self.progress.step(self.session.name, "ok", f"{self.prefix}took over a stale lock (its SSH session is gone)")
        try:
            yield
        finally:
            audit = "\n".join(rel.audit_command(self.audit_log, line) for line in self._audit)
            self._audit.clear()
            self.session.script(f"{audit}\n{rel.unlock_command(self.lock_dir)}", timeout=30)

    def audit(self, action: str, release: str, result: str) -> None:
        """An audit line, written with the unlock (one round trip less)."""
        self._audit.append(f"{now()} {who()} {action} {release} {result}")

    def attempt(self, action: str, what: str, env_name: str, body) -> HostOutcome:
        """Run ``body`` under the lock and audit it; a failure ends as this host's one-line error."""
        started = time.monotonic()
        try:
            with self.locked(action, what, env_name):
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


@dataclass
class AppState:
    """What a host has of an app now: the live slot and the release in each slot."""

    live: str | None
    slots: dict[str, str | None]
    releases: list[str]
    manifest: dict | None = None
    python: str = ""

    @classmethod
    def of(cls, store: rel.StoreState) -> "AppState":
        slots = {s: store.links.get(f"slots/{s}") for s in SLOTS}
        live = store.live if store.live in SLOTS else None
        return cls(live, slots, store.releases, store.manifests.get(f"slots/{live}") if live else None, store.python)

    @property
    def live_release(self) -> str | None:
        return self.slots.get(self.live) if self.live else None

    @property
    def idle(self) -> str:
        return SLOTS[1] if self.live == SLOTS[0] else SLOTS[0]


def rollback_target(state: AppState, to: str | None) -> tuple[str, str, str]:
    """The release a rollback of ``state`` goes to: ``to`` (default: the warm one), unless it is not
    retained or already live; else "", what stops it, and the fix (pure)."""
    target = to or state.slots.get(state.idle)
    if not target:
        return "", "no previous release is kept warm", "pass --to with one of the releases listed by `invoke releases`"
    if target not in state.releases:
        return "", f"unknown release {target}", f"use one of: {', '.join(reversed(state.releases)) or 'none retained'}"
    if target == state.live_release:
        return "", f"{target} is already live", "nothing to do"
    return target, "", ""


def app_state_command(lay: AppLayout) -> str:
    return rel.state_command(lay.root, tuple(f"slots/{s}" for s in SLOTS), "live", python=True,
                             marks=(db_release.REVISION, db_release.LEFT))


class AppDeploy:
    """Deploy and rollback of ``app`` on the host of ``steps``; its database commands (pg_dump, psql,
    pg_restore) run through ``db`` on the postgres host when that is another host, which the app
    reaches at ``db_address``."""

    def __init__(self, app: AppSettings, steps: Steps, db: Steps | None = None, db_address: str = "127.0.0.1"):
        self.app, self.steps, self.lay = app, steps, layout(app)
        self.session, self.step = steps.session, steps.step
        self.remote_db, self.db_step, self.db_address = db is not None, (db or steps).step, db_address

    def state(self) -> AppState:
        store = rel.parse_state(self.step("read state", app_state_command(self.lay)))
        if not store.present:
            raise RemoteError(self.session.name, self.steps.prefix + "read state", f"{self.lay.root} does not exist",
                              "provision the host with the app role first: `invoke provision --env ENV`")
        return AppState.of(store)

    def virtualenv(self, digest: str, release_dir: str) -> None:
        """The release's virtualenv (built once per requirements hash); a certificate failure says so."""
        try:
            self.step(f"virtualenv {digest}", rel.venv_command(self.lay.venvs, digest, release_dir,
                                                                self.app.requirements), timeout=1800)
        except RemoteError as exc:
            cause = build_failure_cause(exc.detail)
            if cause is None or cause.kind != CERTIFICATE:
                raise
            raise RemoteError(exc.host, exc.step, f"{CERTIFICATE} installing {self.app.requirements} (a TLS-inspecting "
                              f"proxy?): {cause.evidence}",
                              "list the proxy's CA certificate under ca_certificates: in the inventory, run "
                              "`invoke provision`, then deploy again; the old release is still serving") from None

    def deploy(self, ship: Shipment, values: dict[str, str], release_command: bool = True,
               gate: MigrationGate | None = None, empty_database: bool = False) -> str:
        """Ship and switch to ``ship``; without ``release_command`` its release command is not run
        (a rolling deploy runs it once, on the first host). With ``gate``, the host that runs it opens
        the gate after it, the others wait there before starting the release. Unless ``empty_database``,
        a database that moved to another address and has no tables there is refused first."""
        state = self.state()
        if self.app.database and state.live_release in state.releases and not empty_database:
            self.refuse_a_moved_empty_database(state.live_release)
        in_slots = [r for r in state.slots.values() if r]
        if ship.id in in_slots:
            raise RemoteError(self.session.name, self.steps.prefix + "release id",
                              f"release {ship.id} is already in a slot (this commit was deployed within the same "
                              "second)", "re-run in a second")
        cleaned = self.step("clean up unfinished releases", rel.cleanup_command(self.lay.releases, in_slots))
        if "removed" in cleaned:
            state = self.state()
        previous = state.live_release if state.live_release in state.releases else None
        upload = rel.diff(state.manifest if previous else None, ship.manifest)
        tar = rel.tarball(ship.source, upload.changed)
        release_dir = self.lay.release(ship.id)
        app = self.app
        migrates = bool(app.release_command and release_command)
        warm, unit = state.slots.get(state.idle), self.lay.unit(state.idle)
        if warm:
            # Its gunicorn stops while the release is made, not on the way to the switch.
            self.step(f"stop slot {state.idle} ({warm}) for the new release", rel.stop_slot_command(unit))
        try:
            links = rel.shared_dirs_command(release_dir, self.lay.data, app.shared_dirs, self.lay.user)
            self.step(f"upload {len(upload.changed)} changed, {len(upload.removed)} removed file(s)",
                      rel.upload_command(self.lay.releases, ship.id, previous, upload, tar,
                                         json.dumps(ship.manifest).encode(), json.dumps(ship.info).encode(),
                                         data=self.lay.data) + ("\n" + links if links else ""))
            digest = ship.venv_digest(state.python)
            self.virtualenv(digest, release_dir)
            dotenv = rel.env_file(app_environment(app, values, ship.id, self.db_address))
            self.step("write .env", rel.unfinished_command(release_dir) + "\n" + rel.write_file_command(
                f"{release_dir}/.env", dotenv, self.lay.user, 0o600))
            if migrates:
                if app.database:
                    self.dump_before_migrations(f"pre-{ship.id}", previous)
                self.step(f"release command: {app.release_command}",
                          rel.release_command(release_dir, self.lay.user, app.release_command),
                          fix="fix the release command (the database was left as it was); the old release "
                              "is still serving")
                if app.database:
                    self.record_revision(release_dir)
                if gate:
                    gate.open(app.name)
            elif app.release_command and gate:
                label = f"{self.steps.prefix}wait for {gate.lead}'s release command"
                self.steps.progress.step(self.session.name, "ok", label)
                gate.wait(app.name, self.session.name, label)
            self.step("release ready", rel.unfinished_command(release_dir, done=True))
        except RemoteError:
            restart = f"\nsystemctl start --no-block {rel.q(unit)}" if warm else ""
            self.session.script(f"rm -rf {rel.q(release_dir)}{restart}", timeout=60)
            raise
        self.start_and_switch(state, ship.id, discard_on_failure=True)
        dumps = backup_dir(app.database.name) if app.database and not self.remote_db else ""
        in_slots = [r for r in {**state.slots, state.idle: ship.id}.values() if r]   # (this deploy holds the lock)
        self.step("prune old releases", rel.prune_command(self.lay.releases, in_slots, app.keep_releases, dumps) +
                  rel.prune_venvs_command(self.lay.releases, self.lay.venvs))
        if app.database and self.remote_db and migrates:      # (it made a dump there)
            self.db_step("prune old pre-deploy dumps", prune_dumps_command(app.database.name, app.keep_releases))
        return ship.id

    def database_host(self, release: str, label: str) -> str:
        """Where ``release`` reads its database (the host of its DATABASE_URL), "" without one."""
        return self.step(f"where {label} reads its database",
                         rel.database_host_command(f"{self.lay.release(release)}/.env")).strip()

    def refuse_a_moved_empty_database(self, live: str) -> None:
        """The live release reads the database at another address than this deploy's (the postgres role
        moved to another host) and there it has no tables: the new release would serve an empty
        database while the data stays where the live release reads it. Nothing has changed yet."""
        before = self.database_host(live, "the live release")
        db = self.app.database.name
        if not before or before == self.db_address or \
                self.db_step(f"tables of database {db}", table_count_command(db)).strip() != "0":
            return
        local = before in ("127.0.0.1", "localhost")
        raise RemoteError(self.session.name, self.steps.prefix + "database move",
                          f"database {db} moves from {before}{' on ' + self.session.name if local else ''} (where "
                          f"the live release reads it) to {self.db_address}, where it has no tables: the new "
                          "release would serve an empty database; nothing changed",
                          f"copy the data first with `invoke db.copy --env ENV --from "
                          f"{self.session.name if local else 'HOST'}` (the host it is on now), or deploy with "
                          "--empty-database to start with an empty one")

    def dump_before_migrations(self, name: str, previous: str | None) -> None:
        """pg_dump where the database is; the release being left records it (`rollback --with-db`
        restores that release from it)."""
        dump = backup_command(self.app.database.name, name)
        left = db_release.record_left_command(self.lay.release(previous), f"{name}.dump") if previous else ""
        if not self.remote_db:
            self.step("pg_dump before migrations", dump + ("\n" + left if left else ""))
            return
        self.db_step("pg_dump before migrations", dump)
        if left:
            self.step(f"record {name}.dump in {previous}", left)

    def record_revision(self, release_dir: str) -> None:
        """The database's Alembic revision after the release command, written into the release."""
        db = self.app.database.name
        if not self.remote_db:
            self.step("record database revision", db_release.record_revision_command(db, release_dir))
            return
        revision = self.db_step("read database revision", db_release.revision_probe(db)).strip()
        self.step("record database revision", db_release.write_revision_command(
            release_dir, revision if db_release.REVISION_RE.fullmatch(revision) else ""))

    def health(self, slot: str, seconds: int | None = None) -> str:
        h = self.app.health
        url = f"http://127.0.0.1:{self.lay.port(slot)}{self.app.path}{h.path}"
        return rel.health_command(url, h.expect_status, h.expect_text, seconds or h.timeout, unit=self.lay.unit(slot))

    def start_and_switch(self, state: AppState, release: str, discard_on_failure: bool = False) -> None:
        idle = state.idle
        unit = self.lay.unit(idle)
        slots = f"{self.lay.root}/slots"
        self.step(f"start {release} in slot {idle}", rel.start_slot_command(slots, idle, release, unit))
        try:
            self.step("health check", self.health(idle),
                      fix=f"read the app's log: `journalctl -u {unit}` on the host; the old release is still serving")
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
                 f"( {self.health(slot, 10)} ) || "
                 f"{{ echo 'slot {slot} ({release}) does not answer its health check'; exit 1; }}\n") if check_warm else ""
        self.step(f"switch nginx to slot {slot} ({release})",
                  check + rel.switch_command(self.lay.upstream_file, upstream, self.lay.live_file, slot))
        self.steps.outcome.changed += 1

    def undo(self, release: str) -> str:
        """Back to the previous release when ``release`` is live (a rolling deploy's failed batch)."""
        state = self.state()
        if state.live_release != release:
            return state.live_release or "nothing"
        target = self.rollback_target(state, None)
        self.go_back(state, target)
        return target

    def rollback(self, to: str | None) -> str:
        state = self.state()
        target = self.rollback_target(state, to)
        if self.app.database:
            self.refuse_another_database(target)
        self.go_back(state, target)
        return target

    def refuse_another_database(self, target: str) -> None:
        """``target`` reads its database elsewhere than the inventory's postgres host now (the role
        moved since): going back would serve that old database. Nothing has changed yet."""
        there = self.database_host(target, target)
        if there and there != self.db_address:
            raise RemoteError(self.session.name, self.steps.prefix + "rollback",
                              f"release {target} reads database {self.app.database.name} at {there}, and it is "
                              f"at {self.db_address} now (PostgreSQL moved since): going back would serve the "
                              "old one; nothing changed",
                              "deploy that release's commit instead (`invoke deploy --env ENV --ref COMMIT`; "
                              "`invoke releases` shows it)")

    def rollback_target(self, state: AppState, to: str | None) -> str:
        """The release ``to`` (default: the warm one), refused unless retained and not live."""
        target, problem, fix = rollback_target(state, to)
        if problem:
            raise RemoteError(self.session.name, self.steps.prefix + "rollback", problem, fix)
        return target

    def go_back(self, state: AppState, target: str, restart: bool = False) -> None:
        """Serve ``target``: the warm slot if it holds it (``restart``: afresh), else the idle slot."""
        if target == state.slots.get(state.idle):
            if restart:
                self.step(f"restart slot {state.idle} ({target})",
                          f"systemctl restart {rel.q(self.lay.unit(state.idle))}")
            self.switch(state.idle, target, check_warm=True)
        else:
            self.start_and_switch(state, target)
