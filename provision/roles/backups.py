"""Backups on a Postgres host (with ``backups:`` in the inventory): age, rclone, the backup script,
its 0600 rclone config, and a systemd service run by a timer on ``backups.schedule``. Each set holds
the databases and, where the host runs the apps, their shared folders (``shared_dirs``).

The host gets only the age recipient; the identity stays in the controller's secrets.
"""
from __future__ import annotations

from pathlib import Path

from .. import placement
from ..agekey import recipient_of
from ..engine.files import Directory, File
from ..engine.model import Resource, q, restart
from ..engine.system import Service
from ..errors import DropshipError
from ..inventory import Environment
from ..templates import render
from . import RoleContext
from .app import AppLayout
from .handlers import DAEMON_RELOAD, retire_timer

NAME = "postgres"                   # the postgres role brings them: dumps are taken where the data is
CONF = "/etc/dropship/backup"
STATE = "/var/lib/dropship/backup"
FOLDER = "/var/backups/dropship/scheduled"
SCRIPT = "/usr/local/sbin/dropship-backup"
RETENTION = "/usr/local/lib/dropship/retention.py"
FILES_ARCHIVE = "/usr/local/lib/dropship/files_archive.py"
DUMP, FILES = ".dump.age", ".files.tar.age"       # a set's files: <database>.dump.age, <app>.files.tar.age
SERVICE, TIMER = "dropship-backup.service", "dropship-backup.timer"
RCLONE = f"rclone --config {CONF}/rclone.conf"
REMOTE_NAME = "offsite"


def databases(env: Environment, has_airflow: bool) -> list[str]:
    """The databases a host's backup dumps: every app's, then Airflow's metadata (where it is)."""
    out = [a.database.name for a in env.settings.apps if a.database]
    if has_airflow and env.settings.airflow:
        out.append(env.settings.airflow.database.name)
    return list(dict.fromkeys(out))


def shared_folders(ctx: RoleContext) -> dict[str, str]:
    """The apps whose shared folders this host's backup keeps: app -> its data folder (where it runs them)."""
    if not ctx.has("app"):
        return {}
    return {a.name: AppLayout(a.name).data for a in ctx.settings.apps if a.shared_dirs}


def remote(env: Environment) -> str:
    """rclone's path of the environment's backups in the bucket ("" without ``offsite``)."""
    site = env.settings.backups.offsite if env.settings.backups else None
    return f"{REMOTE_NAME}:{site.bucket}/{site.prefix}" if site else ""


def _one_line(value: str, what: str) -> str:
    if not value or any(ch in value for ch in "\r\n\0"):
        raise DropshipError(f"backups.offsite.{what}: the secret is empty or spans lines",
                            f"set {what} to the one-line key the storage provider gave")
    return value


def packages(ctx: RoleContext) -> list[str]:
    return ["age", "rclone", "python3"] if ctx.settings.backups else []


def resources(ctx: RoleContext) -> list[Resource]:
    bk = ctx.settings.backups
    if bk is None:
        return retired()
    try:
        recipient = recipient_of(ctx.secrets[bk.identity.name])
    except ValueError:
        raise DropshipError(f"{bk.identity.where or 'backups.identity'}: secret '{bk.identity.name}' is not an "
                            "age identity (AGE-SECRET-KEY-1…)",
                            f"remove it from .secrets/{ctx.env.name}.yaml to have one generated, or paste "
                            "`age-keygen` output") from None
    dbs = databases(ctx.env, ctx.has("airflow") or placement.airflow_elsewhere(ctx.env))
    folders = shared_folders(ctx)
    site = bk.offsite
    env_file = render("backups/backup.env.j2", databases=q(" ".join(dbs)), keep_daily=bk.keep_daily,
                      keep_weekly=bk.keep_weekly, remote=q(remote(ctx.env)),
                      files=q(" ".join(f"{app}={folder}" for app, folder in folders.items())))
    timer = render("backups/dropship-backup.timer.j2", schedule=bk.schedule)
    out: list[Resource] = [
        Directory(CONF, mode=0o755, role=NAME),
        Directory("/usr/local/lib/dropship", mode=0o755, role=NAME),
        File(f"{CONF}/recipient", (recipient + "\n").encode(), role=NAME),
        File(f"{CONF}/backup.env", env_file, role=NAME),
        File(RETENTION, (Path(__file__).resolve().parent.parent / "retention.py").read_bytes(), role=NAME),
        File(FILES_ARCHIVE, (Path(__file__).resolve().parent.parent / "files_archive.py").read_bytes(), role=NAME),
        File(SCRIPT, render("backups/dropship-backup.sh.j2", conf_dir=CONF, state_dir=STATE, folder=FOLDER,
                            retention=RETENTION, files_archive=FILES_ARCHIVE, dump=DUMP, files=FILES),
             mode=0o755, role=NAME),
        File(f"/etc/systemd/system/{SERVICE}",
             render("backups/dropship-backup.service.j2", databases=dbs, apps=list(folders), offsite=bool(site),
                    script=SCRIPT),
             role=NAME, notify=(DAEMON_RELOAD,)),
        File(f"/etc/systemd/system/{TIMER}", timer, role=NAME, notify=(DAEMON_RELOAD, restart(TIMER)),
             check=f"systemd-analyze calendar {q(bk.schedule)} >/dev/null"),
        Service(TIMER, role=NAME),
    ]
    if site:
        conf = render("backups/rclone.conf.j2", endpoint=site.endpoint, region=site.region,
                      access_key_id=_one_line(ctx.secrets[site.access_key_id.name], "access_key_id"),
                      secret_access_key=_one_line(ctx.secrets[site.secret_access_key.name], "secret_access_key"))
        out.insert(3, File(f"{CONF}/rclone.conf", conf, mode=0o600, role=NAME, secret=True))
    else:
        from ..engine.files import Absent

        out.insert(3, Absent(f"{CONF}/rclone.conf", role=NAME))
    return out


STOP_TIMER = retire_timer(TIMER)


def retired() -> list[Resource]:
    """Without ``backups:``: the timer stopped, the unit, script and credentials gone (kept dumps stay)."""
    from ..engine.files import Absent

    return [Absent(f"/etc/systemd/system/{TIMER}", role=NAME, notify=(STOP_TIMER,)),
            Absent(f"/etc/systemd/system/{SERVICE}", role=NAME, notify=(DAEMON_RELOAD,)),
            Absent(f"{CONF}/rclone.conf", role=NAME), Absent(SCRIPT, role=NAME)]
