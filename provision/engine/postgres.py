"""PostgreSQL roles and databases; passwords checked against the stored SCRAM verifier (pure)."""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from .batch import PSQL as PSQL_BATCH
from .model import Change, Resource, q

PSQL = "runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1"


def scram_matches(stored: str, password: str) -> bool:
    """Does PostgreSQL's ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` verify ``password``?"""
    try:
        scheme, rest = stored.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored_key = keys.split(":", 1)[0]
        if scheme != "SCRAM-SHA-256":
            return False
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))
    except (ValueError, TypeError):
        return False


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def reload_and_wait() -> str:
    """Reload PostgreSQL (if running), then wait (at most 5 s) until the server has read its files
    again: a reload is only a signal, and until then new connections meet the old pg_hba.conf."""
    loaded = f"{PSQL} -c 'SELECT pg_conf_load_time()' 2>/dev/null"
    return (f"before=$({loaded}) || true\n"
            "systemctl try-reload-or-restart postgresql\n"
            "i=0\n"
            f"while [ -n \"$before\" ] && [ $i -lt 50 ] && [ \"$({loaded} || true)\" = \"$before\" ]; do\n"
            "  i=$((i + 1)); sleep 0.1\n"
            "done")


def _psql(sql: str) -> str:
    return f"{PSQL} <<'DROPSHIP_SQL'\n{sql}\nDROPSHIP_SQL"


def _probe(sql: str) -> str:
    return f"command -v psql >/dev/null && {PSQL} -c {q(sql)} 2>/dev/null; true"


@dataclass(frozen=True)
class PgRole(Resource):
    """A login role whose password is ``password`` (never printed: the SQL goes on stdin)."""

    name: str
    password: str
    role: str = ""
    phase: int = 2

    batch = PSQL_BATCH

    @property
    def key(self) -> str:
        return f"postgres role {self.name}"

    def batch_item(self, want_content: bool = False) -> str:
        return (f"select 'r|' || rolname || '|' || coalesce(rolpassword, '') || '|' || rolcanlogin "
                f"from pg_authid where rolname = {sql_literal(self.name)}")

    def probe(self, want_content: bool = False) -> str:
        return _probe(self.batch_item())

    def parse(self, output: str) -> dict | None:
        for line in output.splitlines():
            parts = line.split("|")
            if len(parts) == 4 and parts[:2] == ["r", self.name]:
                return {"password": parts[2], "login": parts[3] in ("t", "true")}
        return None

    def plan(self, facts: dict | None) -> list[Change]:
        if facts and facts["login"] and scram_matches(facts["password"], self.password):
            return []
        ident = '"' + self.name + '"'
        sql = (f"SET password_encryption = 'scram-sha-256';\n"
               f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {sql_literal(self.name)}) "
               f"THEN CREATE ROLE {ident}; END IF; END $$;\n"
               f"ALTER ROLE {ident} WITH LOGIN PASSWORD {sql_literal(self.password)};")
        action = "create" if facts is None else "update"
        return [self.change(action, f"{action} postgres role {self.name} (password set)", [_psql(sql)])]


@dataclass(frozen=True)
class PgDatabase(Resource):
    name: str
    owner: str
    role: str = ""
    phase: int = 2

    batch = PSQL_BATCH

    @property
    def key(self) -> str:
        return f"postgres database {self.name}"

    def batch_item(self, want_content: bool = False) -> str:
        return (f"select 'd|' || datname || '|' || pg_get_userbyid(datdba) from pg_database "
                f"where datname = {sql_literal(self.name)}")

    def probe(self, want_content: bool = False) -> str:
        return _probe(self.batch_item())

    def parse(self, output: str) -> str | None:
        for line in output.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[:2] == ["d", self.name]:
                return parts[2]
        return None

    def plan(self, owner: str | None) -> list[Change]:
        if owner == self.owner:
            return []
        if owner is None:
            return [self.change("create", f"create database {self.name} owned by {self.owner}",
                                [f"runuser -u postgres -- createdb -O {q(self.owner)} {q(self.name)}"])]
        return [self.change("update", f"set owner of database {self.name} to {self.owner}",
                            [_psql(f'ALTER DATABASE "{self.name}" OWNER TO "{self.owner}";')])]
