"""What Dropship manages on a host, recorded there, so what it no longer wants is removed.

The record (``/var/lib/dropship/managed.json``) lists, by role, items derived from the
resources: configuration files under /etc (``file:``), the systemd units those files define
(``unit:``), Compose projects (``compose:``) and data (``data:``: folders under /srv, users,
databases and roles). On each full provision, items of the record that are no longer wanted are
removed (units stopped, projects brought down, files deleted, then nginx reloaded after
``nginx -t`` by the handler); data only with ``purge``. A run of some roles (a deploy lays out
the apps) prunes only theirs. A host without a record (provisioned
before records existed) is adopted: the record is written and nothing is removed.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from .compose import ComposeProject
from .files import Directory, File, Symlink
from .model import Change, Handler, Resource, q
from .postgres import PgDatabase, PgRole
from .system import User

RECORD = "/var/lib/dropship/managed.json"
ABSENT = "@@dropship-no-record"
_UNIT_FILE = re.compile(r"^/etc/systemd/system/([A-Za-z0-9_.:-]+@?)\.service$")


def managed_items(resources: list[Resource], roles: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The record's items of the resources of ``roles``, by role (sorted, unique). Databases and
    their roles count whichever role makes them (the postgres role makes the apps')."""
    items: dict[str, set[str]] = {}
    for r in resources:
        if isinstance(r, PgDatabase):
            item = f"data:pgdb:{r.name}"
        elif isinstance(r, PgRole):
            item = f"data:pgrole:{r.name}"
        elif r.role not in roles:
            continue
        elif isinstance(r, (File, Symlink)) and r.path.startswith("/etc/"):
            item = f"file:{r.path}"
            unit = _UNIT_FILE.match(r.path)
            if unit:
                items.setdefault(r.role, set()).add(f"unit:{unit.group(1)}")
        elif written := [p for p in r.writes if p.startswith("/etc/")]:
            items.setdefault(r.role, set()).update(f"file:{p}" for p in written)
            continue
        elif isinstance(r, ComposeProject):
            item = f"compose:{r.directory}|{r.project}"
        elif isinstance(r, Directory) and re.match(r"^/srv/[^/]+$", r.path):
            item = f"data:dir:{r.path}"
        elif isinstance(r, User) and r.system and r.home.startswith("/srv/"):
            item = f"data:user:{r.name}"
        else:
            continue
        items.setdefault(r.role, set()).add(item)
    return {role: tuple(sorted(found)) for role, found in sorted(items.items())}


_ORDER = ("unit:", "compose:", "file:", "data:pgdb:", "data:pgrole:", "data:user:", "data:dir:")


def removal_commands(item: str) -> list[str]:
    """Shell that stops managing ``item`` (idempotent: a missing thing is fine)."""
    kind, _, rest = item.partition(":")
    if kind == "unit":
        if rest.endswith("@"):        # a template: every instance
            return [f"systemctl stop {q(rest + '*.service')} 2>/dev/null || true",   # loaded instances
                    f"rm -f /etc/systemd/system/*.wants/{q(rest)}*.service"]
        return [f"systemctl disable --now {q(rest + '.service')} 2>/dev/null || true"]
    if kind == "compose":
        directory, _, project = rest.partition("|")
        return [f"if command -v docker >/dev/null && [ -f {q(directory + '/compose.yaml')} ]; then "
                f"docker compose --project-directory {q(directory)} -p {q(project)} down --remove-orphans; fi"]
    if kind == "file":
        return [f"rm -f {q(rest)}"]
    what, _, name = rest.partition(":")
    return {
        "pgdb": [f"runuser -u postgres -- dropdb --if-exists {q(name)}"],
        "pgrole": [f"runuser -u postgres -- dropuser --if-exists {q(name)}"],
        "user": [f"if getent passwd {q(name)} >/dev/null; then userdel {q(name)}; fi"],
        "dir": [f"rm -rf {q(name)}"],
    }[what]


@dataclass(frozen=True)
class ManagedRecord(Resource):
    """Remove what the host's record lists for the roles in ``scope`` and ``items`` no longer has,
    then record ``items`` (the record's other roles are kept as they are)."""

    items: dict[str, tuple[str, ...]]      # by role
    scope: tuple[str, ...]                 # the roles this run converges (a full provision: all of them)
    purge: bool = False                    # also remove data no longer wanted
    nginx: Handler | None = None           # notified when an nginx file goes
    systemd: Handler | None = None         # notified when a unit file goes
    path: str = RECORD
    role: str = "cleanup"
    phase: int = 2

    @property
    def key(self) -> str:
        return f"managed {self.path}"

    def probe(self, want_content: bool = False) -> str:
        return f"cat {q(self.path)} 2>/dev/null || echo {ABSENT}"

    def parse(self, output: str) -> dict[str, tuple[str, ...]] | None:
        """The recorded items by role, or None when there is no (readable) record."""
        try:
            data = json.loads(output)["roles"]
            return {str(role): tuple(str(i) for i in items) for role, items in data.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def plan(self, recorded: dict[str, tuple[str, ...]] | None) -> list[Change]:
        wanted = {role: items for role, items in self.items.items() if items}
        if recorded is None:
            return [self.change("create", f"record what Dropship manages here "
                                f"({sum(len(i) for i in wanted.values())} items; nothing removed)",
                                self.write_commands(wanted))]
        keep: dict[str, tuple[str, ...]] = {r: i for r, i in recorded.items() if r not in self.scope}
        still = {i for items in wanted.values() for i in items}     # e.g. a database that moved to another role
        gone: list[str] = []
        for role in self.scope:
            stale = [i for i in recorded.get(role, ()) if i not in still]
            removed = [i for i in stale if self.purge or not i.startswith("data:")]
            gone += removed
            keep[role] = tuple(sorted(set(wanted.get(role, ())) | (set(stale) - set(removed))))
        keep = {r: i for r, i in sorted(keep.items()) if i}
        if not gone and keep == {r: tuple(sorted(i)) for r, i in sorted(recorded.items()) if i}:
            return []
        commands: list[str] = []
        for prefix in _ORDER:
            for item in sorted(i for i in set(gone) if i.startswith(prefix)):
                commands += removal_commands(item)
        notify = tuple(h for h, hit in ((self.nginx, any(i.startswith("file:/etc/nginx/") for i in gone)),
                                        (self.systemd, any(i.startswith("file:/etc/systemd/") for i in gone)))
                       if h is not None and hit)
        summary = f"remove what is no longer wanted: {', '.join(sorted(set(gone)))}" if gone else "update the record"
        return [self.change("remove" if gone else "update", summary, commands + self.write_commands(keep),
                            notify=notify)]

    def write_commands(self, roles: dict[str, tuple[str, ...]]) -> list[str]:
        data = (json.dumps({"roles": {r: list(i) for r, i in sorted(roles.items())}}, indent=1) + "\n").encode()
        return [f"install -d -m 0755 {q(self.path.rsplit('/', 1)[0])}",
                f"base64 -d > {q(self.path + '.new')} <<'DROPSHIP_EOF'",
                base64.encodebytes(data).decode().rstrip("\n"), "DROPSHIP_EOF",
                f"mv -f {q(self.path + '.new')} {q(self.path)}"]
