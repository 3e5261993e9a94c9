"""``db.backup``, ``db.backups``, ``db.restore``: the app database's dumps on its Postgres host."""
from __future__ import annotations

import base64
import time
from pathlib import Path

from .. import hosts as host_selection
from ..engine.model import q
from ..errors import DropshipError, RemoteError
from ..inventory import Environment
from ..redact import Redactor
from ..transport.hostkeys import KnownHosts
from ..transport.ssh import connect

BACKUPS = "/var/backups/dropship"


def backup_dir(database: str) -> str:
    return f"{BACKUPS}/{database}"


def backup_command(database: str, name: str) -> str:
    """pg_dump (custom format) to ``<dir>/<name>.dump`` atomically; prints the path."""
    folder = backup_dir(database)
    path = f"{folder}/{name}.dump"
    return (f"install -d -m 0700 {q(BACKUPS)} {q(folder)} && "
            f"runuser -u postgres -- pg_dump -Fc {q(database)} > {q(path)}.partial && "
            f"mv -f {q(path)}.partial {q(path)} && echo {q(path)}")


def restore_command(database: str, owner: str, path: str) -> str:
    return (f"test -s {q(path)} || {{ echo 'no such backup: {path}'; exit 1; }}\n"
            f"runuser -u postgres -- pg_restore --clean --if-exists --no-owner --role={q(owner)} "
            f"--single-transaction -d {q(database)} < {q(path)}")   # root opens it: the folder is 0700 root


def _db_session(env: Environment):
    app = env.settings.app
    if app is None or app.database is None:
        raise DropshipError(f"environment {env.name} has no app database", "add app.database to the inventory")
    hosts = [h for h in env.hosts if "postgres" in h.roles]
    if not hosts:
        raise DropshipError(f"no host of {env.name} has the postgres role", "add 'postgres' to a host's roles")
    target = host_selection.targets(env, hosts[:1])[0]
    return app.database, connect(target, KnownHosts(env.workspace.known_hosts_path), Redactor())


def backup(env: Environment) -> str:
    db, session = _db_session(env)
    try:
        result = session.script(backup_command(db.name, time.strftime("manual-%Y%m%dT%H%M%SZ", time.gmtime())),
                                timeout=3600)
        if result.rc != 0:
            raise RemoteError(session.name, "pg_dump", result.stdout.strip()[-300:], "check the database is up")
        return result.stdout.strip().splitlines()[-1]
    finally:
        session.close()


def backups(env: Environment) -> list[dict]:
    db, session = _db_session(env)
    try:
        out = session.script(f"cd {q(backup_dir(db.name))} 2>/dev/null && "
                             f"find . -maxdepth 1 -name '*.dump' -printf '%f %s %TY-%Tm-%TdT%TH:%TM:%TSZ\\n' | sort",
                             timeout=60).stdout
    finally:
        session.close()
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append({"name": parts[0], "bytes": int(parts[1]), "at": parts[2].split(".")[0] + "Z",
                         "host": session.name})
    return rows


def restore(env: Environment, file: str) -> str:
    """Restore a backup listed by ``db.backups`` (by name), or a local dump file (uploaded first)."""
    db, session = _db_session(env)
    try:
        local = Path(file)
        if local.is_file():
            remote = f"{backup_dir(db.name)}/uploaded-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.dump"
            data = base64.encodebytes(local.read_bytes()).decode()
            up = session.script(f"install -d -m 0700 {q(BACKUPS)} {q(backup_dir(db.name))} && "
                                f"base64 -d > {q(remote)} <<'DROPSHIP_EOF'\n{data}DROPSHIP_EOF", timeout=3600)
            if up.rc != 0:
                raise RemoteError(session.name, "upload backup", up.stdout.strip()[-300:], "check disk space")
        else:
            remote = f"{backup_dir(db.name)}/{Path(file).name}"
        result = session.script(restore_command(db.name, db.user, remote), timeout=3600)
        if result.rc != 0:
            raise RemoteError(session.name, "pg_restore", result.stdout.strip()[-300:],
                              "list backups with `invoke db.backups`; the database was left as it was")
        return remote
    finally:
        session.close()
