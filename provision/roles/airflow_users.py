"""Airflow's accounts (FAB auth manager): exactly the inventory's users, with their secret passwords.

The probe reads the accounts from Airflow's database with psql (cheap: no Airflow process). A
change runs one sync inside the api-server's container, which reads the wanted accounts (passwords
included) on stdin: nothing secret reaches a command line. The sync leaves a seal: an HMAC (keyed
with the UI's secret key) of the wanted accounts and the password hashes it left. While the seal
still matches, the passwords are known to be right; else each is checked against FAB's stored hash
here (scrypt: ~0.1 s each). Either way a run that changes nothing starts no Python on the host.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from ..engine.model import PHASE_SERVICES, Change, Resource, q

# Run inside the api-server's container: wanted accounts on stdin (JSON), one summary line out.
# Removals go first (a renamed user keeps its email), then updates, then creations.
SEAL = "/opt/airflow/config/.dropship-accounts"     # as the containers see it (the host: <root>/config/)
SYNC = r"""
import hashlib, hmac, json, os, sys
SEAL = "%s"
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
    hashes = {u["name"]: sm.find_user(username=u["name"]).password or "" for u in want}
key = os.environ["AIRFLOW__API__SECRET_KEY"].encode()
rows = sorted([u["name"], hashes[u["name"]], u["password"]] for u in want)
with open(os.open(SEAL, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    f.write(hmac.new(key, json.dumps(rows).encode(), hashlib.sha256).hexdigest() + "\n")
print("USERS " + json.dumps(done))
""" % SEAL

ACCOUNTS_SQL = ("select json_build_object('name', u.username, 'email', u.email, 'first_name', u.first_name, "
                "'last_name', u.last_name, 'active', u.active, 'password', u.password, "
                "'roles', coalesce((select json_agg(r.name order by r.name) from ab_user_role ur "
                "join ab_role r on r.id = ur.role_id where ur.user_id = u.id), '[]')) from ab_user u order by u.id")


def seal(key: str, wanted: list[dict], accounts: dict[str, dict]) -> str:
    """The seal SYNC writes, of ``wanted`` and the password hashes in ``accounts`` (pure)."""
    rows = sorted([u["name"], (accounts.get(u["name"]) or {}).get("password") or "", u["password"]] for u in wanted)
    return hmac.new(key.encode(), json.dumps(rows).encode(), hashlib.sha256).hexdigest()


# The same query from inside a running Airflow container, with Airflow's own connection (no Airflow import).
QUERY_IN_CONTAINER = r"""
import json, os, psycopg2, sys
conn = psycopg2.connect(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "", 1),
                        connect_timeout=10)
with conn, conn.cursor() as cur:
    cur.execute(sys.argv[1])
    for (row,) in cur.fetchall():
        print(json.dumps(row))
"""


def accounts_probe(database: str, seal_file: str, container: str = "") -> str:
    """Print the seal, then one JSON object per account of ``database`` (none before Airflow made its
    tables): with psql as postgres on the database's host, or, with ``container`` (the database is on
    another host), from that running Airflow container (pure)."""
    seal_line = f"echo \"seal=$(cat {q(seal_file)} 2>/dev/null)\"; "
    if container:
        return (seal_line + f"docker exec {q(container)} python -c {q(QUERY_IN_CONTAINER)} {q(ACCOUNTS_SQL)} "
                "2>/dev/null; true")
    return (seal_line + "p=psql; for b in /usr/lib/postgresql/*/bin/psql; do [ -x \"$b\" ] && p=$b; done; "
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


def parse_accounts(output: str) -> tuple[str, dict[str, dict]]:
    """(the seal, ``{username: account}``) from ``accounts_probe``'s output (pure)."""
    accounts, sealed = {}, ""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("seal="):
            sealed = line[5:]
        elif line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            accounts[row["name"]] = row
    return sealed, accounts


def differences(wanted: list[dict], accounts: dict[str, dict], passwords_known: bool = False) -> dict[str, list[str]]:
    """What a sync must do: ``{"create": [...], "update": ["bob (password)", ...], "remove": [...]}``;
    passwords are checked against their hashes unless ``passwords_known`` (pure)."""
    out: dict[str, list[str]] = {"create": [], "update": [], "remove": sorted(set(accounts) - {u["name"] for u in wanted})}
    for u in wanted:
        have = accounts.get(u["name"])
        if have is None:
            out["create"].append(u["name"])
            continue
        why = [k for k in ("email", "first_name", "last_name") if (have.get(k) or "") != u[k]]
        why += ["role"] if have.get("roles") != [u["role"]] else []
        why += ["active"] if have.get("active") is not True else []
        why += ["password"] if not passwords_known and not password_matches(have.get("password") or "",
                                                                             u["password"]) else []
        if why:
            out["update"].append(f"{u['name']} ({', '.join(why)})")
    return {verb: sorted(names) for verb, names in out.items()}


@dataclass(frozen=True)
class AirflowAccounts(Resource):
    """Airflow's accounts are exactly ``wanted`` (``[{name, role, email, first_name, last_name, password}]``)."""

    database: str
    compose: str
    wanted: tuple[tuple[tuple[str, str], ...], ...] = field(repr=False)     # hashable dicts, passwords inside
    seal_key: str = field(default="", repr=False)                           # the UI's secret key
    seal_file: str = ""                                                     # SEAL, as the host sees it
    container: str = ""                  # the api-server's, where the database is on another host
    role: str = ""
    phase: int = PHASE_SERVICES       # after compose up: the sync runs in the api-server

    @property
    def key(self) -> str:
        return "airflow accounts"

    def users(self) -> list[dict]:
        return [dict(u) for u in self.wanted]

    def probe(self, want_content: bool = False) -> str:
        return accounts_probe(self.database, self.seal_file, self.container)

    def parse(self, output: str) -> tuple[str, dict[str, dict]]:
        return parse_accounts(output)

    def plan(self, facts: tuple[str, dict[str, dict]]) -> list[Change]:
        sealed, found = facts
        known = bool(sealed) and hmac.compare_digest(sealed, seal(self.seal_key, self.users(), found))
        todo = differences(self.users(), found, passwords_known=known)
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

