"""``db.backup``, ``db.backups``, ``db.restore``: the app databases' dumps on their Postgres host."""
from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Callable

from .. import hosts as host_selection
from ..engine.model import q
from ..errors import DropshipError, RemoteError
from ..inventory import DatabaseSettings, Environment, HostSpec
from ..secrets import redactor_for
from ..transport.hostkeys import KnownHosts
from ..transport.ssh import Session, connect

BACKUPS = "/var/backups/dropship"
BACKUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.dump")    # what backup_command and uploads name
DUMP_MAGIC = b"PGDMP"                                                  # pg_dump's custom format starts so


def backup_dir(database: str) -> str:
    return f"{BACKUPS}/{database}"


def backup_command(database: str, name: str) -> str:
    """pg_dump (custom format) to ``<dir>/<name>.dump`` atomically; prints the path."""
    folder = backup_dir(database)
    path = f"{folder}/{name}.dump"
    return (f"install -d -m 0700 {q(BACKUPS)} {q(folder)} && "
            f"runuser -u postgres -- pg_dump -Fc {q(database)} > {q(path)}.partial && "
            f"mv -f {q(path)}.partial {q(path)} && echo {q(path)}")


def table_count_command(database: str) -> str:
    """The number of tables of ``database`` outside PostgreSQL's own schemas (0: nothing in it yet)."""
    return (f"runuser -u postgres -- psql -Atq -d {q(database)} -c \"select count(*) from pg_catalog.pg_tables "
            "where schemaname not in ('pg_catalog', 'information_schema')\"")


def prune_dumps_command(database: str, keep: int) -> str:
    """Keep the newest ``keep`` pre-deploy dumps of ``database`` (their names sort by release time):
    the ones the retained releases roll back with, on a postgres host of its own."""
    return (f"cd {q(backup_dir(database))} 2>/dev/null || exit 0\n"
            f"ls -1 | grep '^pre-.*\\.dump$' | sort -r | tail -n +{int(keep) + 1} | "
            f"while read -r d; do rm -f -- \"$d\" && echo \"pruned $d\"; done\ntrue\n")


def backups_command(database: str) -> str:
    """``<name> <bytes> <mtime>`` per dump of ``database``, sorted by name."""
    return (f"cd {q(backup_dir(database))} 2>/dev/null && "
            f"find . -maxdepth 1 -name '*.dump' -printf '%f %s %TY-%Tm-%TdT%TH:%TM:%TSZ\\n' | sort")


def upload_command(database: str, path: str, data: bytes) -> str:
    """Write ``data`` (a local dump) to ``path`` in the backup folder of ``database``."""
    return (f"install -d -m 0700 {q(BACKUPS)} {q(backup_dir(database))} && "
            f"base64 -d > {q(path)} <<'DROPSHIP_EOF'\n{base64.encodebytes(data).decode()}DROPSHIP_EOF")


def restore_command(database: str, owner: str, path: str) -> str:
    return (f"test -s {q(path)} || {{ echo {q('no such backup: ' + path)}; exit 1; }}\n"
            f"runuser -u postgres -- pg_restore --clean --if-exists --no-owner --role={q(owner)} "
            f"--single-transaction -d {q(database)} < {q(path)}")   # root opens it: the folder is 0700 root


def backup_path(database: str, name: str) -> str:
    """Where backup ``name`` of ``database`` is on its host; only names ``db.backups`` lists are accepted."""
    if not BACKUP_NAME.fullmatch(name):
        raise DropshipError(f"db.restore: backup name {name!r} is not one listed by db.backups",
                            "pass a name `invoke db.backups` prints, or the path of a local pg_dump -Fc file")
    return f"{backup_dir(database)}/{name}"


def _is_local_file(file: str) -> bool:
    try:
        return Path(file).is_file()
    except OSError:                 # e.g. too long for a path: then it is no file here
        return False


def read_dump(path: Path) -> bytes:
    """The content of the local dump file ``path``, refused unless in pg_dump's custom format."""
    try:
        with path.open("rb") as fh:
            if fh.read(len(DUMP_MAGIC)) != DUMP_MAGIC:
                raise DropshipError(f"db.restore: {path} is not a pg_dump custom-format file (no PGDMP header)",
                                    "make it with `pg_dump -Fc` or `invoke db.backup`")
            return DUMP_MAGIC + fh.read()
    except OSError as exc:
        raise DropshipError(f"db.restore: cannot read {path}: {exc.strerror}", "check the file and its permissions") \
            from None


def app_databases(env: Environment, app: str | None = None) -> list[DatabaseSettings]:
    """The apps' databases, each once (apps may share one), or ``app``'s; refused where there is none (pure)."""
    found = list({a.database.name: a.database for a in host_selection.apps(env, app) if a.database}.values())
    if not found:
        raise DropshipError(f"{'app ' + app if app else 'environment ' + env.name} has no database",
                            "add a database: to the app in the inventory")
    return found


def _one_database(env: Environment, app: str | None) -> DatabaseSettings:
    """The database a command on one database acts on: the only one, or ``app``'s (pure)."""
    found = app_databases(env, app)
    if len(found) > 1:
        raise DropshipError(f"environment {env.name} has several app databases: {', '.join(d.name for d in found)}",
                            "pass --app NAME")
    return found[0]


def _session(env: Environment) -> Session:
    """A session to the environment's Postgres host; it masks the environment's secrets."""
    hosts = [h for h in env.hosts if "postgres" in h.roles]
    if not hosts:
        raise DropshipError(f"no host of {env.name} has the postgres role", "add 'postgres' to a host's roles")
    return host_session(env, hosts[0])


def host_session(env: Environment, host: HostSpec) -> Session:
    """A session to ``host`` (pinned key); it masks the environment's secrets."""
    target = host_selection.targets(env, [host])[0]
    return connect(target, KnownHosts(env.workspace.known_hosts_path), redactor_for(env))


def _failed(session: Session, step: str, output: str, fix: str) -> RemoteError:
    return RemoteError(session.name, step, session.redact(output.strip()[-300:]), fix)


def backup(env: Environment, app: str | None = None, on_line: Callable[[str], None] = print) -> list[str]:
    """pg_dump every app database (or ``app``'s) now, one after the other; the dumps' paths."""
    dbs = app_databases(env, app)
    stamp, started = time.strftime("manual-%Y%m%dT%H%M%SZ", time.gmtime()), time.monotonic()
    session = _session(env)
    try:
        paths = []
        for db in dbs:
            on_line(f"[{session.name}] pg_dump {db.name} …")
            result = session.script(backup_command(db.name, stamp), timeout=3600)
            if result.rc != 0:
                raise _failed(session, f"pg_dump {db.name}", result.stdout,
                              "check the database is up" + (f"; dumped before it: {', '.join(paths)}" if paths else ""))
            paths.append(session.redact(result.stdout.strip().splitlines()[-1]))
            on_line(paths[-1])
        on_line(f"recap: {len(paths)} database(s) dumped on {session.name} in {time.monotonic() - started:.1f}s")
        return paths
    finally:
        session.close()


def backups(env: Environment, app: str | None = None) -> list[dict]:
    """The dumps on the host that ``db.restore`` accepts by name, of every app database (or ``app``'s)."""
    dbs = app_databases(env, app)
    session = _session(env)
    try:
        out = {db.name: session.redact(session.script(backups_command(db.name), timeout=60).stdout) for db in dbs}
    finally:
        session.close()
    rows = []
    for database, text in out.items():
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and BACKUP_NAME.fullmatch(parts[0]):
                rows.append({"name": parts[0], "bytes": int(parts[1]), "at": parts[2].split(".")[0] + "Z",
                             "host": session.name, "database": database})
    return rows


def restore(env: Environment, file: str, confirm: Callable[[str], None] | None = None,
            app: str | None = None) -> str:
    """Restore a backup listed by ``db.backups`` (by name), or a local dump file (uploaded first),
    into the only app database or ``app``'s.

    The name or the file is checked, and ``confirm(database)`` asked, before the host is contacted.
    """
    db = _one_database(env, app)
    data = read_dump(Path(file)) if _is_local_file(file) else None
    remote = backup_path(db.name, file) if data is None else \
        f"{backup_dir(db.name)}/uploaded-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.dump"
    if confirm:
        confirm(db.name)
    session = _session(env)
    try:
        if data is not None:
            up = session.script(upload_command(db.name, remote, data), timeout=3600)
            if up.rc != 0:
                raise _failed(session, "upload backup", up.stdout, "check disk space")
        result = session.script(restore_command(db.name, db.user, remote), timeout=3600)
        if result.rc != 0:
            raise _failed(session, "pg_restore", result.stdout,
                          "list backups with `invoke db.backups`; the database was left as it was")
        return remote
    finally:
        session.close()
