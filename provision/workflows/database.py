"""``db.backup``, ``db.backups``, ``db.restore``: the app database's dumps on its Postgres host."""
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


def _database(env: Environment) -> DatabaseSettings:
    app = env.settings.app
    if app is None or app.database is None:
        raise DropshipError(f"environment {env.name} has no app database", "add app.database to the inventory")
    return app.database


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


def backup(env: Environment) -> str:
    db = _database(env)
    session = _session(env)
    try:
        result = session.script(backup_command(db.name, time.strftime("manual-%Y%m%dT%H%M%SZ", time.gmtime())),
                                timeout=3600)
        if result.rc != 0:
            raise _failed(session, "pg_dump", result.stdout, "check the database is up")
        return session.redact(result.stdout.strip().splitlines()[-1])
    finally:
        session.close()


def backups(env: Environment) -> list[dict]:
    """The dumps on the host that ``db.restore`` accepts by name."""
    db = _database(env)
    session = _session(env)
    try:
        out = session.redact(session.script(backups_command(db.name), timeout=60).stdout)
    finally:
        session.close()
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and BACKUP_NAME.fullmatch(parts[0]):
            rows.append({"name": parts[0], "bytes": int(parts[1]), "at": parts[2].split(".")[0] + "Z",
                         "host": session.name})
    return rows


def restore(env: Environment, file: str, confirm: Callable[[], None] | None = None) -> str:
    """Restore a backup listed by ``db.backups`` (by name), or a local dump file (uploaded first).

    The name or the file is checked, and ``confirm()`` asked, before the host is contacted.
    """
    db = _database(env)
    data = read_dump(Path(file)) if _is_local_file(file) else None
    remote = backup_path(db.name, file) if data is None else \
        f"{backup_dir(db.name)}/uploaded-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.dump"
    if confirm:
        confirm()
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
