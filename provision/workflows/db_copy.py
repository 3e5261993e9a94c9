"""`db.copy`: the apps' databases and Airflow's from another host's PostgreSQL (where they were before
the postgres role moved to a host of its own) into the postgres host's, each streamed through here:
``pg_dump -Fc`` there, a safety dump of what it replaces, then ``pg_restore`` in one transaction.
Airflow's services are stopped while its database is copied."""
from __future__ import annotations

import os
import tempfile
import time
from typing import Callable

from .. import hosts as host_selection
from .. import placement
from ..engine.model import q
from ..errors import DropshipError
from ..inventory import DatabaseSettings, Environment
from ..transport.ssh import Session
from . import airflow_database
from .backups import pg_restore_command
from .database import _failed, backup_command, host_session


def dump_command(database: str) -> str:
    """``database`` in pg_dump's custom format on stdout."""
    return f"runuser -u postgres -- pg_dump -Fc {q(database)}"


def databases(env: Environment) -> list[DatabaseSettings]:
    """The apps' databases, each once, then Airflow's."""
    found: dict[str, DatabaseSettings] = {}
    for app in env.settings.apps:
        if app.database:
            found.setdefault(app.database.name, app.database)
    if env.settings.airflow:
        found.setdefault(env.settings.airflow.database.name, env.settings.airflow.database)
    return list(found.values())


def plan(env: Environment, source: str) -> tuple[str, str, list[DatabaseSettings]]:
    """(source host, postgres host, databases), refused before any host is contacted (pure)."""
    [src] = host_selection.select(env, (source,))
    target = placement.postgres_host(env)
    if target is None:
        raise DropshipError(f"no host of {env.name} has the postgres role", "add 'postgres' to a host's roles")
    if src.name == target.name:
        raise DropshipError(f"db.copy: {source} is the postgres host, the databases' destination",
                            "pass --from the host the data is on now (the postgres role's previous host)")
    dbs = databases(env)
    if not dbs:
        raise DropshipError(f"environment {env.name} has no app or Airflow database",
                            "add app.database or airflow to the inventory")
    return src.name, target.name, dbs


def copy(env: Environment, source: str, confirm: Callable[[str], None] | None = None,
         on_line: Callable[[str], None] = print) -> None:
    """Copy every app database, and Airflow's while Airflow still reads it on ``source``, from
    ``source`` into the postgres host; ``confirm(what)`` is asked before any host is contacted. A
    failure leaves the destination as it was (one transaction each)."""
    src_name, target_name, dbs = plan(env, source)
    if confirm:
        confirm(f"databases {', '.join(d.name for d in dbs)} on {target_name} with those on {src_name}")
    stamp, started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), time.monotonic()
    airflow = env.settings.airflow.database.name if env.settings.airflow else ""
    src = host_session(env, env.host(src_name))
    try:
        dst = host_session(env, env.host(target_name))
        try:
            with tempfile.TemporaryDirectory(prefix="dropship-db-copy-") as tmp:
                copied = []
                for db in (d for d in dbs if d.name != airflow):
                    _copy_one(src, dst, db, os.path.join(tmp, f"{db.name}.dump"), stamp, on_line)
                    copied.append(db.name)
                if airflow:
                    one = next(db for db in dbs if db.name == airflow)
                    if airflow_database.stopped_while(
                            env, src_name, host_selection.private_addresses(env),
                            lambda: _copy_one(src, dst, one, os.path.join(tmp, f"{airflow}.dump"), stamp, on_line),
                            on_line):
                        copied.append(airflow)
                        on_line(f"{airflow}: Airflow's services stay stopped, so that nothing is written where "
                                f"the copy came from; `invoke provision --env {env.name}` starts them on "
                                f"{target_name}")
                    else:
                        on_line(f"{airflow}: not copied: Airflow no longer reads its database on {src_name}")
            on_line(f"recap: {len(copied)} database(s) copied from {src_name} to {target_name} in "
                    f"{time.monotonic() - started:.1f}s")
        finally:
            dst.close()
    finally:
        src.close()


def _copy_one(src: Session, dst: Session, db: DatabaseSettings, path: str, stamp: str,
              on_line: Callable[[str], None]) -> None:
    """``db`` from ``src`` through ``path`` into ``dst``, after a safety dump there."""
    on_line(f"{db.name}: pg_dump on {src.name} …")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        got = src.receive(dump_command(db.name), fh.write, timeout=6 * 3600)
    if got.rc != 0:
        raise _failed(src, f"pg_dump {db.name}", got.stderr,
                      f"check that {src.name}'s PostgreSQL still runs and holds {db.name}; nothing was changed")
    safety = dst.script(backup_command(db.name, f"pre-copy-{stamp}"), timeout=6 * 3600)
    if safety.rc != 0:
        raise _failed(dst, f"safety dump of {db.name}", safety.stdout,
                      "check the database and disk space there; it was left as it was")
    on_line(f"{db.name}: pg_restore on {dst.name} ({os.path.getsize(path)} bytes) …")
    with open(path, "rb") as fh:
        put = dst.send_stream(pg_restore_command(db.name, db.user), iter(lambda: fh.read(1 << 20), b""),
                              timeout=6 * 3600)
    if put.rc != 0:
        raise _failed(dst, f"pg_restore {db.name}", put.stdout + put.stderr,
                      "it was left as it was (one transaction); fix the cause and run db.copy again")
    on_line(f"{db.name}: copied from {src.name} to {dst.name} (what it replaced is pre-copy-{stamp}.dump in "
            "`invoke db.backups`)")
