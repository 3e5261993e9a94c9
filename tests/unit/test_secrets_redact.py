"""SecretStore (environment refs, generated-once secrets in .secrets/) and the Redactor."""
import os
import stat

import pytest

from provision.errors import DropshipError
from provision.inventory import SecretRef, load_environment
from provision.redact import MASK, Redactor
from provision.secrets import SecretStore

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


def test_redactor_ignores_short_values():
    redact = Redactor(("abc", "12345", "", None))
    assert redact("abc 12345") == "abc 12345"


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
