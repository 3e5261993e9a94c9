"""Airflow accounts: the inventory's users, the probe and sync command builders, FAB's password hashes."""
import hashlib
import json
import shlex

import pytest

from provision.errors import InventoryError
from provision.inventory import load_inventory
from provision.roles.airflow_users import (ACCOUNTS_SQL, QUERY_IN_CONTAINER, SEAL, SYNC, AirflowAccounts, accounts, accounts_probe,
                                          differences, parse_accounts, password_matches, seal, sync_command)
from tests.unit.test_inventory import AIRFLOW, assert_located, write

# Made by FAB (werkzeug) in the Airflow image for the password  pw'"$x
FAB_HASH = ("scrypt:32768:8:1$CvaK7qLRBoQkRPE3$0d5c98ffef957cc1638fa1a56ea3a3a906ff8c90c7ba3ac8ef63f32be296eb2ec5e2672c"
            "457f687659ace6b80e0bee6010031c07bfb66d717f302f94d1abc871")
USERS = AIRFLOW + """\
      users:
        - {name: ops.anna, role: Viewer, email: anna@example.org, first_name: "Anna '$(x)'"}
        - name: ci-bot
          role: Op
          email: ci@example.org
          password: {env: CI_BOT_PASSWORD}
"""                                                   # users: line 11, ops.anna 12, ci-bot 13


def settings(tmp_path, text):
    return load_inventory(write(tmp_path, text))["local"].settings.airflow


def refused(tmp_path, text) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load_inventory(write(tmp_path, text))
    return info.value


# --- the inventory ------------------------------------------------------------------------------------

def test_admin_alone_by_default(tmp_path):
    (admin,) = settings(tmp_path, AIRFLOW).accounts()
    assert (admin.name, admin.role, admin.email, admin.password.name) == \
        ("admin", "Admin", "admin@localhost", "airflow_admin_password")


def test_listed_users_with_generated_or_named_passwords(tmp_path):
    af = settings(tmp_path, USERS)
    admin, anna, bot = af.accounts()
    assert admin.name == "admin"
    assert (anna.name, anna.role, anna.email, anna.first_name, anna.last_name) == \
        ("ops.anna", "Viewer", "anna@example.org", "Anna '$(x)'", "")
    assert (anna.password.kind, anna.password.name) == ("secret", "airflow_user_ops_anna_password")
    assert (bot.password.kind, bot.password.name, bot.first_name) == ("env", "CI_BOT_PASSWORD", "ci-bot")
    env = load_inventory(write(tmp_path, USERS))["local"]
    assert {"airflow_user_ops_anna_password", "CI_BOT_PASSWORD", "airflow_api_secret_key"} <= \
        {r.name for r in env.secret_refs()}


def test_the_admin_listed_keeps_its_password_and_takes_the_listed_role(tmp_path):
    af = settings(tmp_path, AIRFLOW + "      users:\n        - {name: admin, role: Op, email: root@example.org}\n")
    (admin,) = af.accounts()
    assert (admin.role, admin.email, admin.password.name) == ("Op", "root@example.org", "airflow_admin_password")


@pytest.mark.parametrize("item, key, words", [
    ("{name: Anna, role: Viewer, email: a@example.org}", "name", ["'Anna' is not valid"]),
    ("{name: 'a;rm -rf /', role: Viewer, email: a@example.org}", "name", ["is not valid"]),
    ("{name: anna, role: Public, email: a@example.org}", "role", ["Admin, Op, User, Viewer"]),
    ("{name: anna, role: Viewer, email: 'a@b.c\\nX-Header: 1'}", "email", ["is not valid"]),
    ("{name: anna, role: Viewer, email: a@example.org, first_name: \"A\\tB\"}", "first_name", ["is not valid"]),
    ("{name: anna, role: Viewer, email: a@example.org, password: hunter2}", "password", ["never written inline"]),
    ("{name: anna, role: Viewer}", "email", ["missing required key 'email'"]),
    ("{name: anna, role: Viewer, email: a@example.org, groups: [x]}", "groups", ["unknown key 'groups'"]),
])
def test_bad_users_are_refused_in_one_located_line(tmp_path, item, key, words):
    err = refused(tmp_path, AIRFLOW + f"      users:\n        - {item}\n")
    assert_located(err, tmp_path, 12, f"environments.local.airflow.users[0].{key}", *words)


def test_a_name_or_email_listed_twice_and_a_shared_secret_are_refused(tmp_path):
    twice = AIRFLOW + ("      users:\n        - {name: anna, role: Viewer, email: a@example.org}\n"
                       "        - {name: anna, role: Op, email: b@example.org}\n")
    assert_located(refused(tmp_path, twice), tmp_path, 13, "environments.local.airflow.users[1].name", "listed twice")
    same_mail = twice.replace("name: anna, role: Op, email: b@", "name: bob, role: Op, email: A@")
    assert_located(refused(tmp_path, same_mail), tmp_path, 13, "environments.local.airflow.users[1].email",
                   "listed twice")
    shared = twice.replace("name: anna, role: Op", "name: 'anna', role: Op").replace("- {name: anna, role: Viewer",
                                                                                   "- {name: a.nna, role: Viewer")
    shared = shared.replace("name: 'anna', role: Op", "name: a_nna, role: Op")
    assert_located(refused(tmp_path, shared), tmp_path, 13, "environments.local.airflow.users[1].name",
                   "would share the secret airflow_user_a_nna_password")


# --- FAB's password hashes ---------------------------------------------------------------------------

def test_a_hash_made_by_fab_verifies_only_its_password():
    assert password_matches(FAB_HASH, "pw'\"$x")
    assert not password_matches(FAB_HASH, "pw'\"$y")
    assert not password_matches("", "x") and not password_matches("plain", "plain")
    assert not password_matches("bcrypt$x$y", "x") and not password_matches("scrypt:a:b:c$s$00", "x")


def test_pbkdf2_hashes_verify():
    digest = hashlib.pbkdf2_hmac("sha256", b"s3cret", b"NaCl", 1000).hex()
    assert password_matches(f"pbkdf2:sha256:1000$NaCl${digest}", "s3cret")
    assert not password_matches(f"pbkdf2:sha256:1000$NaCl${digest}", "s3cre")


# --- the probe, the plan and the sync ------------------------------------------------------------------

def wanted(**over):
    return [{"name": "ops.anna", "role": "Viewer", "email": "a@example.org", "first_name": "Anna", "last_name": "",
             "password": "pw'\"$x", **over}]


def account(**over):
    return {"name": "ops.anna", "email": "a@example.org", "first_name": "Anna", "last_name": "", "active": True,
            "password": FAB_HASH, "roles": ["Viewer"], **over}


def test_probe_reads_the_seal_and_the_accounts_from_airflows_database():
    assert accounts_probe("air'flow", "/srv/airflow/config/.seal") == (
        "echo \"seal=$(cat /srv/airflow/config/.seal 2>/dev/null)\"; p=psql; for b in /usr/lib/postgresql/*/bin/psql; do [ -x \"$b\" ] && p=$b; done; "
        "command -v \"$p\" >/dev/null && PGGSSENCMODE=disable runuser -u postgres -- \"$p\" -X -A -t -q "
        "-d 'air'\"'\"'flow' -c " + shlex.quote(ACCOUNTS_SQL) + " 2>/dev/null; true")
    assert accounts_probe("airflow", "/s", "airflow-airflow-apiserver-1") == (
        "echo \"seal=$(cat /s 2>/dev/null)\"; docker exec airflow-airflow-apiserver-1 python -c "
        + shlex.quote(QUERY_IN_CONTAINER) + " " + shlex.quote(ACCOUNTS_SQL) + " 2>/dev/null; true")
    rows = [account(), account(name="old", roles=[])]
    assert parse_accounts("seal=ab12\n" + "\n".join(json.dumps(r) for r in rows) + "\nnoise\n{broken\n") == \
        ("ab12", {"ops.anna": rows[0], "old": rows[1]})
    assert parse_accounts("seal=\n") == ("", {})


def test_differences():
    assert differences(wanted(), {"ops.anna": account()}) == {"create": [], "update": [], "remove": []}
    assert differences(wanted(), {}) == {"create": ["ops.anna"], "update": [], "remove": []}
    assert differences(wanted(password="new", role="Op"), {"ops.anna": account(), "zed": account(name="zed")}) == \
        {"create": [], "update": ["ops.anna (role, password)"], "remove": ["zed"]}
    assert differences(wanted(), {"ops.anna": account(active=False, email="b@example.org", last_name=None)}) == \
        {"create": [], "update": ["ops.anna (email, active)"], "remove": []}


def test_differences_trust_the_seal_for_passwords():
    assert differences(wanted(password="other"), {"ops.anna": account()}, passwords_known=True) == \
        {"create": [], "update": [], "remove": []}


def test_the_seal_is_an_hmac_of_the_wanted_accounts_and_their_hashes():
    rows = [["ops.anna", FAB_HASH, "pw'\"$x"]]
    import hmac as h
    assert seal("k3y", wanted(), {"ops.anna": account()}) == \
        h.new(b"k3y", json.dumps(rows).encode(), hashlib.sha256).hexdigest()
    assert seal("k3y", wanted(), {}) != seal("k3y", wanted(), {"ops.anna": account()})
    assert seal("other", wanted(), {"ops.anna": account()}) != seal("k3y", wanted(), {"ops.anna": account()})
    # The sync writes the same formula, keyed with the same secret.
    assert 'rows = sorted([u["name"], hashes[u["name"]], u["password"]] for u in want)' in SYNC
    assert "hmac.new(key, json.dumps(rows).encode(), hashlib.sha256).hexdigest()" in SYNC
    assert 'os.environ["AIRFLOW__API__SECRET_KEY"]' in SYNC and f'SEAL = "{SEAL}"' in SYNC


def test_the_plan_names_users_never_passwords():
    res = AirflowAccounts("airflow", "docker compose -p airflow", tuple(tuple(sorted(u.items())) for u in wanted()),
                          "k3y", "/srv/airflow/config/.dropship-accounts")
    assert "pw'" not in repr(res) and "k3y" not in repr(res)
    assert res.plan(("", {"ops.anna": account()})) == []                      # checked against the hash
    assert res.plan(("", {"ops.anna": account(password="scrypt:1:1:1$x$00")})) != []
    good = seal("k3y", wanted(), {"ops.anna": account(password="h")})
    assert res.plan((good, {"ops.anna": account(password="h")})) == []        # sealed: no hash checked
    (change,) = res.plan(("", {"bob": account(name="bob")}))
    assert change.summary == "airflow accounts: create ops.anna; remove bob"
    assert "pw'" not in change.summary and change.commands == \
        [sync_command("docker compose -p airflow", [dict(sorted(u.items())) for u in wanted()])]


def test_the_sync_reads_the_accounts_on_stdin():
    users = wanted(password="DROPSHIP_USERS\n'$(id)'")
    assert sync_command("docker compose -p airflow", users) == (
        "out=$(docker compose -p airflow exec -T airflow-apiserver python -c " + "'" + SYNC.replace("'", "'\"'\"'")
        + "' <<'DROPSHIP_USERS' 2>&1\n" + json.dumps(users) + "\nDROPSHIP_USERS\n)\nrc=$?\n"
        "printf '%s\\n' \"$out\" | grep -E '^USERS(_FAILED)? ' || printf '%s\\n' \"$out\" | tail -n 5\nexit $rc")
    assert "\nDROPSHIP_USERS\n" not in json.dumps(users)        # one JSON line: the heredoc's end stays its own


def test_accounts_take_the_secret_values():
    class U:
        name, role, email, first_name, last_name = "a", "Op", "a@x.org", "a", ""
        password = type("R", (), {"name": "airflow_user_a_password"})
    assert accounts([U], {"airflow_user_a_password": "v"}) == \
        ((("email", "a@x.org"), ("first_name", "a"), ("last_name", ""), ("name", "a"), ("password", "v"),
          ("role", "Op")),)
