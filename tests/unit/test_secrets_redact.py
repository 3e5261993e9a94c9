"""SecretStore (environment refs, generated-once secrets in .secrets/) and the Redactor."""
import os
import stat

import pytest

from provision.errors import DropshipError
from provision.inventory import SecretRef, load_environment
from provision.redact import MASK, Redactor
from provision.release import database_url
from provision.secrets import SecretStore, redactor_for

INVENTORY = """\
environments:
  prod:
    provider: digitalocean
    token: {env: DROPSHIP_TEST_TOKEN}
    droplets:
      - {name: web-1, size: s-2vcpu-4gb, region: fra1, image: debian-13-x64, roles: [base, postgres]}
    app:
      name: names
      database: {name: names, user: names, password: {secret: app_db_password}}
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("DROPSHIP_TEST_TOKEN", raising=False)
    monkeypatch.delenv("DROPSHIP_SECRET_APP_DB_PASSWORD", raising=False)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    return load_environment(tmp_path / "inventory.yaml", "prod")


def store(env, redactor=None):
    return SecretStore(env, redactor or Redactor())


def db_ref(env) -> SecretRef:
    return env.settings.app.database.password


def test_env_ref_reads_the_environment(env, monkeypatch):
    monkeypatch.setenv("DROPSHIP_TEST_TOKEN", "dop_v1_0123456789")
    redactor = Redactor()
    assert store(env, redactor).resolve(env.token) == "dop_v1_0123456789"
    assert redactor("token dop_v1_0123456789") == f"token {MASK}"


def test_unset_env_ref_names_the_variable_and_the_inventory_line(env):
    with pytest.raises(DropshipError) as info:
        store(env).resolve(env.token)
    assert "inventory.yaml:4 environments.prod.token" in str(info.value)
    assert "DROPSHIP_TEST_TOKEN is not set" in str(info.value)
    assert info.value.fix == "export DROPSHIP_TEST_TOKEN=..."


def test_secret_is_generated_once_and_stored_private(env, tmp_path):
    redactor = Redactor()
    value = store(env, redactor).resolve(db_ref(env))
    path = tmp_path / ".secrets" / "prod.yaml"
    assert len(value) >= 24
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert f"app_db_password: {value}" in path.read_text()
    assert redactor(f"password={value}") == f"password={MASK}"
    assert [p.name for p in path.parent.iterdir()] == ["prod.yaml"]


def test_stored_secret_is_reused_by_the_next_store(env):
    first = store(env).resolve(db_ref(env))
    assert store(env).resolve(db_ref(env)) == first
    assert store(env).peek(db_ref(env)) == first


def test_second_secret_keeps_the_first(env, tmp_path):
    s = store(env)
    first = s.resolve(db_ref(env))
    other = s.resolve(SecretRef("secret", "other", "x"))
    again = store(env)
    assert (again.resolve(db_ref(env)), again.resolve(SecretRef("secret", "other", "x"))) == (first, other)
    assert first != other


def test_peek_never_generates(env, tmp_path):
    assert store(env).peek(db_ref(env)) is None
    assert not (tmp_path / ".secrets").exists()


def test_resolve_without_generate_refuses(env, tmp_path):
    with pytest.raises(DropshipError) as info:
        store(env).resolve(db_ref(env), generate=False)
    assert "secret 'app_db_password' is not in" in str(info.value)
    assert not (tmp_path / ".secrets").exists()


def test_env_override_wins_over_the_file(env, monkeypatch, tmp_path):
    store(env).resolve(db_ref(env))
    monkeypatch.setenv("DROPSHIP_SECRET_APP_DB_PASSWORD", "from-the-environment")
    redactor = Redactor()
    assert store(env, redactor).resolve(db_ref(env)) == "from-the-environment"
    assert redactor("from-the-environment") == MASK


def test_env_override_means_nothing_is_generated(env, monkeypatch, tmp_path):
    monkeypatch.setenv("DROPSHIP_SECRET_APP_DB_PASSWORD", "from-the-environment")
    assert store(env).resolve(db_ref(env)) == "from-the-environment"
    assert not (tmp_path / ".secrets").exists()


def test_hand_written_secrets_file(env, tmp_path):
    (tmp_path / ".secrets").mkdir()
    (tmp_path / ".secrets" / "prod.yaml").write_text("app_db_password: typed-by-hand\n")
    assert store(env).resolve(db_ref(env)) == "typed-by-hand"


@pytest.mark.parametrize("text", ["app_db_password: [unclosed\n", "- just\n- a list\n"])
def test_broken_secrets_file_is_a_clear_error(env, tmp_path, text):
    (tmp_path / ".secrets").mkdir()
    (tmp_path / ".secrets" / "prod.yaml").write_text(text)
    with pytest.raises(DropshipError) as info:
        store(env).resolve(db_ref(env))
    assert str(tmp_path / ".secrets" / "prod.yaml") in str(info.value) and info.value.fix


# --- Redactor -----------------------------------------------------------------------------------

def test_redactor_masks_every_registered_value():
    redact = Redactor(("first-secret", "second-secret"))
    assert redact("a first-secret b second-secret c first-secret") == f"a {MASK} b {MASK} c {MASK}"


def test_redactor_masks_longest_first():
    redact = Redactor(("abcdef", "abcdefghij"))
    assert redact("x abcdefghij y abcdef") == f"x {MASK} y {MASK}"


def test_redactor_ignores_values_of_two_characters_or_less():
    redact = Redactor(("ab", "1", "", None))
    assert redact("ab 1 abc") == "ab 1 abc"


def test_redactor_masks_short_values_only_as_whole_words():
    redact = Redactor(("abc", "12345"))
    assert redact("abc 12345 abcdef xabc 123456 abc-1 =12345\n") == \
        f"{MASK} {MASK} abcdef xabc 123456 {MASK}-1 ={MASK}\n"


def test_redactor_masks_url_quoted_forms():
    secret = "p@ss w/rd#1%"
    redact = Redactor((secret,))
    assert redact(database_url("names", secret, "names")) == f"postgresql://names:{MASK}@127.0.0.1:5432/names"
    assert redact("a=p%40ss+w%2Frd%231%25 b=p%40ss%20w/rd%231%25") == f"a={MASK} b={MASK}"
    assert redact(secret) == MASK


def test_redactor_added_later_and_empty_text():
    redact = Redactor()
    redact.add("later-secret")
    assert redact("later-secret!") == f"{MASK}!"
    assert redact("") == ""


def test_secrets_dir_is_private_even_with_permissive_umask(env, tmp_path):
    old = os.umask(0)
    try:
        store(env).resolve(db_ref(env))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / ".secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / ".secrets" / "prod.yaml").stat().st_mode) == 0o600


# --- redactor_for: everything an environment's commands print ------------------------------------------

def test_redactor_for_masks_generated_env_and_url_quoted_secrets(env, monkeypatch, tmp_path):
    generated = store(env).resolve(db_ref(env))
    monkeypatch.setenv("DROPSHIP_TEST_TOKEN", "dop_v1_0123456789")
    redact = redactor_for(env)
    assert redact(f"password {generated} token dop_v1_0123456789") == f"password {MASK} token {MASK}"
    assert redact(database_url("names", generated, "names", driver="psycopg2")) == \
        f"postgresql+psycopg2://names:{MASK}@127.0.0.1:5432/names"


def test_redactor_for_masks_a_hand_written_password_in_database_urls(env, tmp_path):
    (tmp_path / ".secrets").mkdir()
    (tmp_path / ".secrets" / "prod.yaml").write_text('app_db_password: "p@ss:w/rd#1"\n')
    redact = redactor_for(env)
    url = database_url("names", "p@ss:w/rd#1", "names", host="host.docker.internal")
    assert "p%40ss%3Aw%2Frd%231" in url
    assert redact(f"could not connect: {url}") == \
        f"could not connect: postgresql://names:{MASK}@host.docker.internal:5432/names"
    assert redact("p@ss:w/rd#1") == MASK


def test_redactor_for_masks_every_value_of_the_secrets_file(env, tmp_path):
    (tmp_path / ".secrets").mkdir()
    (tmp_path / ".secrets" / "prod.yaml").write_text("old_app_secret_key: left-by-a-removed-app\n")
    assert redactor_for(env)("key=left-by-a-removed-app") == f"key={MASK}"


def test_redactor_for_never_generates(env, tmp_path, monkeypatch):
    monkeypatch.setenv("DROPSHIP_SECRET_APP_DB_PASSWORD", "from-the-environment")
    redact = redactor_for(env)
    assert not (tmp_path / ".secrets").exists()
    assert redact("from-the-environment dop_v1_0123456789") == f"{MASK} dop_v1_0123456789"


# --- the day-to-day workflows mask what hosts print ----------------------------------------------------

class FakeSession:
    """Prints ``lines`` (remote output) for every script; ``redact`` as ``connect`` would set it."""

    name = "web-1"

    def __init__(self, env, lines: list[str], rc: int = 0):
        self.redact, self.lines, self.rc = redactor_for(env), lines, rc

    def script(self, text, on_line=None, timeout=None):
        from provision.transport.ssh import Result

        for line in self.lines:
            if on_line:
                on_line(line)
        return Result(self.rc, "".join(f"{ln}\n" for ln in self.lines), "")

    def close(self):
        pass


def test_airflow_output_lines_and_errors_are_masked(env, monkeypatch):
    from provision.workflows import airflow

    secret = store(env).resolve(db_ref(env))
    lines = [f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={database_url('names', secret, 'names')}", f"pw {secret}"]
    monkeypatch.setattr(airflow, "_session", lambda e: FakeSession(e, lines, rc=1))
    seen = []
    rc, out = airflow.run(env, "true", on_line=seen.append)
    assert seen == [f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql://names:{MASK}@127.0.0.1:5432/names",
                    f"pw {MASK}"]
    assert (rc, out) == (1, "\n".join(seen) + "\n")
    with pytest.raises(DropshipError) as info:
        airflow.trigger(env, secret, None, False)             # a DAG id echoed back in the error
    assert secret not in str(info.value) and str(info.value).startswith(f"trigger of {MASK} failed: pw {MASK}")


def test_database_errors_are_masked(env, monkeypatch):
    from provision.workflows import database

    secret = store(env).resolve(db_ref(env))
    monkeypatch.setattr(database, "_session", lambda e: FakeSession(e, [f"FATAL: password {secret} refused"], 1))
    with pytest.raises(DropshipError) as info:
        database.backup(env, on_line=lambda line: None)
    assert str(info.value) == (f"web-1: pg_dump names: FATAL: password {MASK} refused (fix: check the database is up)")


def test_cli_prints_through_the_redactor(env, capsys):
    from provision.cli import _say

    secret = store(env).resolve(db_ref(env))
    say = _say(env)
    say(f"line {secret}")
    say({"status": secret})
    assert capsys.readouterr().out == f'line {MASK}\n{{"status": "{MASK}"}}\n'
