"""A release's database state, and how ``rollback --with-db`` puts it back (pure).

Each release records, in its folder, the Alembic revision its release command left
(``REVISION``) and the name of the pre-deploy dump the next deploy took when leaving it
(``LEFT``: that dump holds this release's schema and data). A rollback restores that dump when it
is still kept, else runs the migration downgrade to the recorded revision.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .engine.model import q
from .engine.postgres import PSQL

REVISION = ".dropship-db-revision"
LEFT = ".dropship-db-left"
METHODS = ("dump", "downgrade")
REVISION_RE = re.compile(r"[A-Za-z0-9_]{1,64}")          # Alembic revision ids
DUMP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.dump")
_FLASK_UPGRADE = re.compile(r"(.*\bflask\b.*\bdb\s+)upgrade\s*")
REVISION_SQL = "select version_num from alembic_version"


class NoWayBack(Exception):
    """Neither a dump nor a downgrade can put the database back: ``reason`` and ``fix``."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def _write(path: str, value: str) -> str:
    # A new file renamed over the old: releases share files by hard links (upload's cp -al).
    return f"printf '%s\\n' {value} > {q(path)}.new && mv -f {q(path)}.new {q(path)}"


def revision_probe(database: str) -> str:
    """The database's Alembic revision (empty without an alembic_version table)."""
    return f"{PSQL} -d {q(database)} -c {q(REVISION_SQL)} 2>/dev/null | head -n 1"


def record_revision_command(database: str, release_dir: str) -> str:
    """After the release command: write the database's revision into the release; prints it."""
    write = _write(release_dir + "/" + REVISION, '"$rev"')
    return (f"rev=$({revision_probe(database)})\n"
            f"{write}\n"
            f"echo \"revision=$rev\"")


def write_revision_command(release_dir: str, revision: str) -> str:
    """Write ``revision`` (read on the database's own host) into the release; prints it."""
    if revision and not REVISION_RE.fullmatch(revision):
        raise ValueError(f"not an Alembic revision: {revision!r}")
    return f"{_write(release_dir + '/' + REVISION, q(revision))}\necho {q('revision=' + revision)}"


def record_left_command(previous_dir: str, dump: str) -> str:
    """After the pre-deploy dump: the release being left is restorable from ``dump``."""
    if not DUMP_RE.fullmatch(dump):
        raise ValueError(f"not a dump name: {dump!r}")
    return _write(previous_dir + "/" + LEFT, q(dump))


def probe_command(database: str, target_dir: str, dumps: str) -> str:
    """Read-only: the target release's recorded revision and leaving dump (with its time when it
    still exists in ``dumps``) and the database's revision now."""
    return f"""echo "revision=$(cat {q(target_dir + '/' + REVISION)} 2>/dev/null)"
left=$(cat {q(target_dir + '/' + LEFT)} 2>/dev/null)
echo "left=$left"
case "$left" in ''|*/*) ;; *) [ -s {q(dumps)}/"$left" ] &&
  echo "dump_at=$(date -u -r {q(dumps)}/"$left" +%Y-%m-%dT%H:%M:%SZ)" ;; esac
echo "current=$({revision_probe(database)})"
"""


def release_probe_command(target_dir: str) -> str:
    """Read-only, on the app's host: the target release's recorded revision and leaving dump."""
    return (f"echo \"revision=$(cat {q(target_dir + '/' + REVISION)} 2>/dev/null)\"\n"
            f"echo \"left=$(cat {q(target_dir + '/' + LEFT)} 2>/dev/null)\"\n")


def database_probe_command(database: str, dumps: str, left: str) -> str:
    """Read-only, on the database's host: when the dump ``left`` was taken (if it still exists) and
    the database's revision now."""
    exists = (f"[ -s {q(dumps + '/' + left)} ] && echo \"dump_at=$(date -u -r {q(dumps + '/' + left)} "
              f"+%Y-%m-%dT%H:%M:%SZ)\"\n") if DUMP_RE.fullmatch(left) else ""
    return f"{exists}echo \"current=$({revision_probe(database)})\"\n"


@dataclass(frozen=True)
class DbRecord:
    """What ``probe_command`` printed (values that fail validation are dropped)."""

    revision: str = ""
    left: str = ""
    dump_at: str = ""          # set only when the leaving dump still exists
    current: str = ""


def parse_probe(output: str) -> DbRecord:
    found: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("revision", "left", "dump_at", "current"):
            found[key] = value.strip()
    ok = {"revision": REVISION_RE, "current": REVISION_RE, "left": DUMP_RE,
          "dump_at": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")}
    return DbRecord(**{k: v for k, v in found.items() if ok[k].fullmatch(v)})


def downgrade_template(release_command: str, configured: str = "") -> str:
    """The app's downgrade command with a ``{revision}`` placeholder: ``configured``
    (``app.db_rollback_command``), else derived from a ``flask ... db upgrade`` release command."""
    if configured:
        return configured
    m = _FLASK_UPGRADE.fullmatch(release_command)
    return f"{m.group(1)}downgrade {{revision}}" if m else ""


def downgrade_command(template: str, revision: str) -> str:
    if not REVISION_RE.fullmatch(revision):
        raise ValueError(f"not an Alembic revision: {revision!r}")
    return template.replace("{revision}", q(revision))


@dataclass(frozen=True)
class DbPlan:
    method: str                # "dump" or "downgrade"
    dump: str = ""             # the dump's name (method dump)
    revision: str = ""         # the revision to go down to (method downgrade)


def choose_method(record: DbRecord, downgrade: str, forced: str | None = None) -> DbPlan:
    """The dump taken when leaving the target release if it is still kept, else the migration
    downgrade to its recorded revision; ``forced`` picks one. Raises ``NoWayBack``."""
    if forced not in (None, *METHODS):
        raise NoWayBack(f"--db-method {forced!r} is not one of {', '.join(METHODS)}", "pass dump or downgrade")
    dump_ok = bool(record.left and record.dump_at)
    down_ok = bool(record.revision and downgrade)
    if forced == "dump" and not dump_ok:
        raise NoWayBack("the dump taken when leaving this release is not kept"
                        + (f" ({record.left} is gone)" if record.left else ""),
                        "use --db-method downgrade, or restore a backup with `invoke db.restore`")
    if forced == "downgrade" and not down_ok:
        raise NoWayBack(_why_no_downgrade(record, downgrade), "use --db-method dump")
    if forced != "downgrade" and dump_ok:
        return DbPlan("dump", dump=record.left)
    if down_ok:
        return DbPlan("downgrade", revision=record.revision)
    raise NoWayBack("no dump of this release's database is kept and " + _why_no_downgrade(record, downgrade),
                    "roll back without --with-db, or restore a backup with `invoke db.restore`")


def _why_no_downgrade(record: DbRecord, downgrade: str) -> str:
    if not record.revision:
        return "no Alembic revision was recorded for this release"
    return "the app has no downgrade command (set app.db_rollback_command, e.g. 'flask db downgrade {revision}')"


def lost_writes(database: str, plan: DbPlan, record: DbRecord, now: datetime | None = None) -> str:
    """What the user loses, for the prompt and the report."""
    if plan.method == "dump":
        at = datetime.strptime(record.dump_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        minutes = int(((now or datetime.now(timezone.utc)) - at).total_seconds() // 60)
        return f"writes to {database} since {record.dump_at} ({minutes} minutes ago) will be lost"
    return (f"the migrations of {database} after revision {plan.revision} are downgraded: data in what they "
            "added (columns, tables) will be lost")
