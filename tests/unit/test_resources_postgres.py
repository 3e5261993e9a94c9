"""PostgreSQL roles and databases: SCRAM verifiers, plans, and the SQL that goes on stdin."""
import base64
import hashlib
import hmac
import shlex
import subprocess

import pytest

from provision.engine.postgres import PSQL, PgDatabase, PgRole, reload_and_wait, scram_matches, sql_literal
from provision.roles.handlers import RELOAD_POSTGRES


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """RFC 5802/7677: (ClientKey, StoredKey, ServerKey) for a password."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, hashlib.sha256(client_key).digest(), server_key


def verifier(password: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> str:
    """What PostgreSQL stores in pg_authid.rolpassword for scram-sha-256."""
    _, stored_key, server_key = scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def test_verifier_helper_matches_rfc7677_example():
    # RFC 7677 section 3: user "user", password "pencil"; the exchange's proof and signature.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    client_key, stored_key, server_key = scram_keys("pencil", salt, 4096)
    auth = ("n=user,r=rOprNGfwEbeRWgbNEkqO,"
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").encode()
    signature = hmac.new(stored_key, auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    assert base64.b64encode(proof).decode() == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    server_signature = hmac.new(server_key, auth, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_matches_rfc7677_password():
    stored = verifier("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    assert scram_matches(stored, "pencil")
    assert not scram_matches(stored, "pencil ")


@pytest.mark.parametrize("password", ["s3cret-Pa55", "it's $HOME `x`", "ünïcode"])
def test_scram_matches_right_password(password):
    assert scram_matches(verifier(password), password)


def test_scram_rejects_wrong_password():
    assert not scram_matches(verifier("right"), "wrong")


def test_scram_respects_iteration_count():
    stored = verifier("pw", iterations=4096).replace("SCRAM-SHA-256$4096:", "SCRAM-SHA-256$4097:")
    assert not scram_matches(stored, "pw")


@pytest.mark.parametrize("garbage", [
    "", "md5a3556571e93b0d20722ba62be61e8c2d", "SCRAM-SHA-256$", "SCRAM-SHA-256$abc:c2FsdA==$a:b",
    "SCRAM-SHA-256$4096:!!!$x:y", "SCRAM-SHA-1$4096:c2FsdA==$a:b", "SCRAM-SHA-256$0:c2FsdA==$a:b",
])
def test_scram_garbage_is_no_match(garbage):
    assert scram_matches(garbage, "pw") is False


# --- PgRole -------------------------------------------------------------------------------------

PASSWORD = "Zq9-p4ss'word$x"


def test_pgrole_parse():
    role = PgRole("names", PASSWORD)
    stored = verifier(PASSWORD)
    assert role.parse(f"r|names|{stored}|true\n") == {"password": stored, "login": True}
    assert role.parse(f"r|names|{stored}|t\n") == {"password": stored, "login": True}
    assert role.parse("r|names||false\n") == {"password": "", "login": False}
    assert role.parse("") is None


def test_pgrole_probe_names_the_role_but_never_the_password():
    probe = PgRole("names", PASSWORD).probe()
    sql = shlex.split(probe.split(" && ", 1)[1])[-3]   # the -c argument, unquoted
    assert sql.endswith("from pg_authid where rolname = 'names'")
    assert PASSWORD not in probe
    assert probe.endswith("; true")


def heredoc_parts(command: str) -> tuple[str, str]:
    """(the command line, the heredoc body) of `psql <<'DROPSHIP_SQL' ... DROPSHIP_SQL`."""
    first, _, rest = command.partition("\n")
    body, _, end = rest.rpartition("\n")
    assert end == "DROPSHIP_SQL"
    return first, body


def test_pgrole_absent_is_created_with_sql_on_stdin():
    [change] = PgRole("names", PASSWORD, role="postgres").plan(None)
    assert (change.action, change.summary) == ("create", "create postgres role names (password set)")
    [command] = change.commands
    first, body = heredoc_parts(command)
    assert first == f"{PSQL} <<'DROPSHIP_SQL'"
    assert PASSWORD not in first
    assert f"PASSWORD {sql_literal(PASSWORD)};" in body
    assert "CREATE ROLE \"names\"" in body and "SET password_encryption = 'scram-sha-256';" in body
    assert PASSWORD not in change.summary and PASSWORD not in change.diff


def test_pgrole_sql_reaches_stdin_verbatim():
    [command] = PgRole("names", PASSWORD).plan(None)[0].commands
    _, body = heredoc_parts(command)
    result = subprocess.run(["/bin/sh", "-c", command.replace(PSQL, "cat", 1)], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout == body + "\n"
    assert "'Zq9-p4ss''word$x'" in result.stdout


def test_pgrole_wrong_password_is_updated():
    [change] = PgRole("names", PASSWORD).plan({"password": verifier("old"), "login": True})
    assert change.action == "update"
    assert "ALTER ROLE \"names\" WITH LOGIN PASSWORD" in change.commands[0]


def test_pgrole_without_login_is_updated():
    assert PgRole("names", PASSWORD).plan({"password": verifier(PASSWORD), "login": False})[0].action == "update"


def test_pgrole_matching_password_plans_nothing():
    role = PgRole("names", PASSWORD)
    assert role.plan(role.parse(f"r|names|{verifier(PASSWORD)}|t")) == []


def test_sql_literal_doubles_quotes():
    assert sql_literal("it's") == "'it''s'"


# --- PgDatabase ---------------------------------------------------------------------------------

def test_pgdatabase_parse():
    db = PgDatabase("names", "names")
    assert db.parse("d|names|names\n") == "names"
    assert db.parse("") is None


def test_pgdatabase_plan():
    db = PgDatabase("names", "app")
    assert db.plan("app") == []
    [create] = db.plan(None)
    assert (create.action, create.commands) == ("create", ["runuser -u postgres -- createdb -O app names"])
    [update] = db.plan("postgres")
    assert update.action == "update"
    assert 'ALTER DATABASE "names" OWNER TO "app";' in update.commands[0]


RELOAD = (
    "before=$(runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -c 'SELECT pg_conf_load_time()' "
    "2>/dev/null) || true\n"
    "systemctl try-reload-or-restart postgresql\n"
    "i=0\n"
    "while [ -n \"$before\" ] && [ $i -lt 50 ] && [ \"$(runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 "
    "-c 'SELECT pg_conf_load_time()' 2>/dev/null || true)\" = \"$before\" ]; do\n"
    "  i=$((i + 1)); sleep 0.1\n"
    "done")


def test_reload_waits_until_the_server_read_its_files_again():
    assert reload_and_wait() == RELOAD
    assert RELOAD_POSTGRES.command == RELOAD and RELOAD_POSTGRES.service == "postgresql"


def _run_reload(tmp_path, reloads_after: int | None) -> tuple[int, list[str]]:
    """Runs the reload under ``set -e`` with fakes of runuser (the load time, from a file) and
    systemctl (the server reads its files ``reloads_after`` queries later; None: not running)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "runuser").write_text(
        "#!/bin/sh\necho q >> \"$T/log\"\n[ -f \"$T/time\" ] || exit 2\n"
        "n=$(wc -l < \"$T/log\")\n[ -f \"$T/at\" ] && [ \"$n\" -ge \"$(cat \"$T/at\")\" ] && echo 2 > \"$T/time\"\n"
        "cat \"$T/time\"\n")
    (bin_ / "systemctl").write_text("#!/bin/sh\necho \"systemctl $*\" >> \"$T/log\"\n"
                                    "[ -n \"$AFTER\" ] && echo $(( $(wc -l < \"$T/log\") + AFTER )) > \"$T/at\"\nexit 0\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    if reloads_after is not None:
        (tmp_path / "time").write_text("1\n")
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "T": str(tmp_path), "AFTER": "" if reloads_after is None
           else str(reloads_after)}
    proc = subprocess.run(["/bin/sh", "-c", f"( set -e\n{RELOAD}\n)"], env=env)
    return proc.returncode, (tmp_path / "log").read_text().split("\n")[:-1]


def test_reload_really_waits_for_the_new_load_time_and_not_when_postgres_is_down(tmp_path):
    rc, log = _run_reload(tmp_path / "running", 3)
    assert rc == 0 and log == ["q", "systemctl try-reload-or-restart postgresql", "q", "q", "q"]
    rc, log = _run_reload(tmp_path / "down", None)
    assert rc == 0 and log == ["q", "systemctl try-reload-or-restart postgresql"]   # nothing to wait for
