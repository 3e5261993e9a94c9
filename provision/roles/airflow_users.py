"""Airflow's accounts (FAB auth manager): exactly the inventory's users, with their secret passwords.

The probe reads the accounts from Airflow's database with psql (cheap: no Airflow process), and the
passwords are checked against FAB's stored hashes on this machine, so a run that changes nothing
starts no Python on the host. A change runs one sync inside the api-server's container, which reads
the wanted accounts (passwords included) on stdin: nothing secret reaches a command line.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from ..engine.model import PHASE_SERVICES, Change, Resource, q

# Run inside the api-server's container: wanted accounts on stdin (JSON), one summary line out.
# Removals go first (a renamed user keeps its email), then updates, then creations.
SYNC = r"""
import json, sys
from werkzeug.security import check_password_hash
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
want = json.loads(sys.stdin.read())
done = {"created": [], "updated": [], "removed": []}
def fail(message):
    print("USERS_FAILED " + json.dumps(message)); sys.exit(3)
with get_application_builder() as ab:
    sm, names = ab.sm, {u["name"] for u in want}
    roles = {u["role"]: sm.find_role(u["role"]) for u in want}
    missing = sorted(r for r, found in roles.items() if found is None)
    if missing:
        fail("Airflow has no role " + ", ".join(missing) + "; it has " + ", ".join(r.name for r in sm.get_all_roles()))
    for user in list(sm.get_all_users()):
        if user.username not in names:
            user.roles.clear()
            if not sm.del_register_user(user):
                fail("could not remove " + user.username)
            done["removed"].append(user.username)
    for u in want:
        user = sm.find_user(username=u["name"])
        if user is None:
            if not sm.add_user(u["name"], u["first_name"], u["last_name"], u["email"], roles[u["role"]], u["password"]):
                fail("could not create " + u["name"] + " (is " + u["email"] + " another user's email?)")
            done["created"].append(u["name"])
            continue
        fields = (user.email, user.first_name, user.last_name, [r.name for r in user.roles], user.active)
        if fields != (u["email"], u["first_name"], u["last_name"], [u["role"]], True):
            user.email, user.first_name, user.last_name = u["email"], u["first_name"], u["last_name"]
            user.roles, user.active = [roles[u["role"]]], True
            if not sm.update_user(user):
                fail("could not update " + u["name"] + " (is " + u["email"] + " another user's email?)")
        if not check_password_hash(user.password or "", u["password"]):
            sm.reset_password(user.id, u["password"])
        elif fields == (u["email"], u["first_name"], u["last_name"], [u["role"]], True):
            continue
        done["updated"].append(u["name"])
print("USERS " + json.dumps(done))
"""

ACCOUNTS_SQL = ("select json_build_object('name', u.username, 'email', u.email, 'first_name', u.first_name, "
                "'last_name', u.last_name, 'active', u.active, 'password', u.password, "
                "'roles', coalesce((select json_agg(r.name order by r.name) from ab_user_role ur "
                "join ab_role r on r.id = ur.role_id where ur.user_id = u.id), '[]')) from ab_user u order by u.id")


def accounts_probe(database: str) -> str:
    """Print one JSON object per account of ``database`` (nothing before Airflow made its tables) (pure)."""
    return (f"p=psql; for b in /usr/lib/postgresql/*/bin/psql; do [ -x \"$b\" ] && p=$b; done; "
            f"command -v \"$p\" >/dev/null && PGGSSENCMODE=disable runuser -u postgres -- \"$p\" -X -A -t -q "
            f"-d {q(database)} -c {q(ACCOUNTS_SQL)} 2>/dev/null; true")


def sync_command(compose: str, wanted: list[dict]) -> str:
    """SYNC in the running api-server with ``wanted`` on stdin (a quoted heredoc: kept as data) (pure)."""
    return (f"out=$({compose} exec -T airflow-apiserver python -c {q(SYNC)} <<'DROPSHIP_USERS' 2>&1\n"
            f"{json.dumps(wanted)}\nDROPSHIP_USERS\n)\nrc=$?\n"
            "printf '%s\\n' \"$out\" | grep -E '^USERS(_FAILED)? ' || printf '%s\\n' \"$out\" | tail -n 5\n"
            "exit $rc")


def password_matches(stored: str, password: str) -> bool:
    """Does werkzeug's ``scrypt:N:r:p$salt$hex`` or ``pbkdf2:sha256:N$salt$hex`` hash verify ``password``?"""
    try:
        method, salt, digest = stored.split("$", 2)
        kind, *params = method.split(":")
        if kind == "scrypt":
            n, r, p = (int(x) for x in params)
            got = hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p,
                                 dklen=len(digest) // 2)
        elif kind == "pbkdf2":
            algorithm, iterations = params[0], int(params[1])
            got = hashlib.pbkdf2_hmac(algorithm, password.encode(), salt.encode(), iterations, len(digest) // 2)
        else:
            return False
        return hmac.compare_digest(got.hex(), digest)
    except (ValueError, TypeError, IndexError):
        return False


def parse_accounts(output: str) -> dict[str, dict]:
    """``{username: account}`` from ``accounts_probe``'s output (pure)."""
    accounts = {}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            accounts[row["name"]] = row
    return accounts


def differences(wanted: list[dict], accounts: dict[str, dict]) -> dict[str, list[str]]:
    """What a sync must do: ``{"create": [...], "update": ["bob (password)", ...], "remove": [...]}`` (pure)."""
    out: dict[str, list[str]] = {"create": [], "update": [], "remove": sorted(set(accounts) - {u["name"] for u in wanted})}
    for u in wanted:
        have = accounts.get(u["name"])
        if have is None:
            out["create"].append(u["name"])
            continue
        why = [k for k in ("email", "first_name", "last_name") if (have.get(k) or "") != u[k]]
        why += ["role"] if have.get("roles") != [u["role"]] else []
        why += ["active"] if have.get("active") is not True else []
        why += ["password"] if not password_matches(have.get("password") or "", u["password"]) else []
        if why:
            out["update"].append(f"{u['name']} ({', '.join(why)})")
    return {verb: sorted(names) for verb, names in out.items()}


@dataclass(frozen=True)
class AirflowAccounts(Resource):
    """Airflow's accounts are exactly ``wanted`` (``[{name, role, email, first_name, last_name, password}]``)."""

    database: str
    compose: str
    wanted: tuple[tuple[tuple[str, str], ...], ...]      # hashable dicts
    role: str = ""
    phase: int = PHASE_SERVICES       # after compose up: the sync runs in the api-server

    @property
    def key(self) -> str:
        return "airflow accounts"

    def users(self) -> list[dict]:
        return [dict(u) for u in self.wanted]

    def probe(self, want_content: bool = False) -> str:
        return accounts_probe(self.database)

    def parse(self, output: str) -> dict[str, dict]:
        return parse_accounts(output)

    def plan(self, facts: dict[str, dict]) -> list[Change]:
        todo = differences(self.users(), facts)
        if not any(todo.values()):
            return []
        summary = "; ".join(f"{verb} {', '.join(names)}" for verb, names in todo.items() if names)
        return [self.change("update", f"airflow accounts: {summary}", [sync_command(self.compose, self.users())],
                            fix="see `invoke airflow.logs --service apiserver`; the accounts are synced again "
                                "on the next provision")]


def accounts(users, secrets: dict[str, str]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The resource's ``wanted`` from the inventory's accounts and the secrets' values."""
    return tuple(tuple(sorted({"name": u.name, "role": u.role, "email": u.email, "first_name": u.first_name,
                               "last_name": u.last_name, "password": secrets[u.password.name]}.items()))
                 for u in users)

