"""db.* command builders by their exact strings, and the checks of ``db.restore`` inputs (backup names,
local dump files), which refuse before any host is contacted."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision.errors import DropshipError
from provision.inventory import load_environment
from provision.workflows import database as db

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

HOSTILE = ["../../etc/shadow", "/etc/shadow", "x.dump; reboot", "$(reboot).dump", "`reboot`.dump", "a b.dump",
           "a'b.dump", "a\nb.dump", "x.dump\n", "-x.dump", ".hidden.dump", "x.dump/", "sub/x.dump", "x.sql", ".dump",
           "", "x" * 300 + ".dump", "é.dump"]


def test_backup_command_exact():
    assert db.backup_command("names", "manual-20261202T041500Z") == (
        "install -d -m 0700 /var/backups/dropship /var/backups/dropship/names && "
        "runuser -u postgres -- pg_dump -Fc names > /var/backups/dropship/names/manual-20261202T041500Z.dump.partial"
        " && mv -f /var/backups/dropship/names/manual-20261202T041500Z.dump.partial "
        "/var/backups/dropship/names/manual-20261202T041500Z.dump && "
        "echo /var/backups/dropship/names/manual-20261202T041500Z.dump")


def test_backup_command_quotes_every_value():
    assert db.backup_command("n'; reboot", "a b") == (
        "install -d -m 0700 /var/backups/dropship '/var/backups/dropship/n'\"'\"'; reboot' && "
        "runuser -u postgres -- pg_dump -Fc 'n'\"'\"'; reboot' > "
        "'/var/backups/dropship/n'\"'\"'; reboot/a b.dump'.partial && "
        "mv -f '/var/backups/dropship/n'\"'\"'; reboot/a b.dump'.partial "
        "'/var/backups/dropship/n'\"'\"'; reboot/a b.dump' && echo '/var/backups/dropship/n'\"'\"'; reboot/a b.dump'")


def test_backups_command_exact():
    assert db.backups_command("names") == (
        "cd /var/backups/dropship/names 2>/dev/null && "
        "find . -maxdepth 1 -name '*.dump' -printf '%f %s %TY-%Tm-%TdT%TH:%TM:%TSZ\\n' | sort")


def test_restore_command_exact():
    assert db.restore_command("names", "names", "/var/backups/dropship/names/manual-1.dump") == (
        "test -s /var/backups/dropship/names/manual-1.dump || "
        "{ echo 'no such backup: /var/backups/dropship/names/manual-1.dump'; exit 1; }\n"
        "runuser -u postgres -- pg_restore --clean --if-exists --no-owner --role=names --single-transaction "
        "-d names < /var/backups/dropship/names/manual-1.dump")


def test_restore_command_keeps_a_hostile_path_data():
    path = "/x/it's $(reboot).dump"
    command = db.restore_command("names", "names", path)
    assert command == (
        "test -s '/x/it'\"'\"'s $(reboot).dump' || { echo 'no such backup: /x/it'\"'\"'s $(reboot).dump'; exit 1; }\n"
        "runuser -u postgres -- pg_restore --clean --if-exists --no-owner --role=names --single-transaction "
        "-d names < '/x/it'\"'\"'s $(reboot).dump'")
    out = subprocess.run(["sh", "-c", command.splitlines()[0]], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (1, f"no such backup: {path}\n")


def test_upload_command_exact():
    assert db.upload_command("names", "/var/backups/dropship/names/uploaded-1.dump", b"PGDMP\x01") == (
        "install -d -m 0700 /var/backups/dropship /var/backups/dropship/names && "
        "base64 -d > /var/backups/dropship/names/uploaded-1.dump <<'DROPSHIP_EOF'\nUEdETVAB\nDROPSHIP_EOF")


@pytest.mark.parametrize("name", ["manual-20261202T041500Z.dump", "uploaded-20261202T041500Z.dump",
                                  "Before_migration.v2.dump", "0.dump"])
def test_backup_names_db_backups_lists_are_accepted(name):
    assert db.backup_path("names", name) == f"/var/backups/dropship/names/{name}"


@pytest.mark.parametrize("name", HOSTILE)
def test_other_backup_names_are_refused(name):
    with pytest.raises(DropshipError) as info:
        db.backup_path("names", name)
    assert str(info.value) == (f"db.restore: backup name {name!r} is not one listed by db.backups "
                               "(fix: pass a name `invoke db.backups` prints, or the path of a local pg_dump -Fc file)")
    assert "\n" not in str(info.value)


def test_read_dump_accepts_the_custom_format_only(tmp_path):
    good, plain, empty = tmp_path / "good.dump", tmp_path / "plain.sql", tmp_path / "empty.dump"
    good.write_bytes(b"PGDMP\x01\x0f\x00rest")
    plain.write_text("-- PostgreSQL database dump\n")
    empty.write_bytes(b"")
    assert db.read_dump(good) == b"PGDMP\x01\x0f\x00rest"
    for path in (plain, empty):
        with pytest.raises(DropshipError) as info:
            db.read_dump(path)
        assert str(info.value) == (f"db.restore: {path} is not a pg_dump custom-format file (no PGDMP header) "
                                   "(fix: make it with `pg_dump -Fc` or `invoke db.backup`)")


# --- db.restore refuses before contacting a host ------------------------------------------------------

def offline(tmp_path, monkeypatch, inventory: str):
    """The environment ``prod`` of ``inventory``, where any contact with a host fails the test."""
    (tmp_path / "inventory.yaml").write_text(inventory)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(db, "_session", lambda env: pytest.fail("a host was contacted"))
    return load_environment(tmp_path / "inventory.yaml", "prod")


@pytest.fixture
def env(tmp_path, monkeypatch):
    return offline(tmp_path, monkeypatch, INVENTORY)


@pytest.mark.parametrize("name", ["../../etc/shadow", "x.dump; reboot", "$(reboot).dump", "x" * 5000])
def test_restore_refuses_a_hostile_name_before_asking_or_connecting(env, name):
    with pytest.raises(DropshipError) as info:
        db.restore(env, name, confirm=lambda: pytest.fail("asked to confirm"))
    assert str(info.value).startswith("db.restore: backup name ")


def test_restore_refuses_a_local_file_that_is_no_dump(env, tmp_path):
    (tmp_path / "notes.dump").write_text("SELECT 1;\n")
    with pytest.raises(DropshipError) as info:
        db.restore(env, "notes.dump", confirm=lambda: pytest.fail("asked to confirm"))
    assert "notes.dump is not a pg_dump custom-format file" in str(info.value)


def test_restore_asks_before_connecting(env):
    class Declined(Exception):
        pass

    def decline(database):
        assert database == "names"
        raise Declined

    with pytest.raises(Declined):
        db.restore(env, "manual-20261202T041500Z.dump", confirm=decline)


SEVERAL = INVENTORY.replace("""    app:
      name: names
      database: {name: names, user: names, password: {secret: app_db_password}}
""", """    apps:
      - name: names
        database: {name: names, user: names, password: {secret: app_db_password}}
      - {name: static-site, path: /static}
      - {name: names-admin, path: /admin, database: {name: names, user: names, password: {secret: app_db_password}}}
      - {name: shop, path: /shop, database: {name: shop_db, user: shop, password: {secret: shop_password}}}
""")


@pytest.fixture
def several(tmp_path, monkeypatch):
    return offline(tmp_path, monkeypatch, SEVERAL)


def test_app_databases_are_each_apps_once_or_one_apps(several):
    assert [d.name for d in db.app_databases(several)] == ["names", "shop_db"]       # names-admin shares names
    assert [d.name for d in db.app_databases(several, "shop")] == ["shop_db"]
    assert [d.name for d in db.app_databases(several, "names-admin")] == ["names"]
    with pytest.raises(DropshipError) as info:
        db.app_databases(several, "static-site")
    assert info.value.message == "app static-site has no database"
    with pytest.raises(DropshipError) as info:
        db.app_databases(several, "shop; reboot")
    assert info.value.message == "unknown app 'shop; reboot' in environment prod"
    assert info.value.fix == "use --app with one of: names, static-site, names-admin, shop"


def test_restore_of_one_dump_needs_the_app_where_several_have_databases(several):
    with pytest.raises(DropshipError) as info:
        db.restore(several, "manual-20261202T041500Z.dump", confirm=lambda database: pytest.fail("asked"))
    assert (info.value.message, info.value.fix) == ("environment prod has several app databases: names, shop_db",
                                                 "pass --app NAME")
    with pytest.raises(DropshipError, match="backup name"):      # checked before asking, for the app's database
        db.restore(several, "x.dump; reboot", confirm=lambda database: pytest.fail("asked"), app="shop")


def test_cli_refuses_a_hostile_name_in_one_line(tmp_path):
    """As a user runs it: staging has no droplet yet, so any contact would fail differently."""
    project = Path(__file__).resolve().parents[2]
    (tmp_path / "inventory.yaml").write_text((project / "inventory.yaml").read_text())
    (tmp_path / "app_src").symlink_to(project / "app_src")
    environ = dict(os.environ, DROPSHIP_INVENTORY=str(tmp_path / "inventory.yaml"), DIGITALOCEAN_TOKEN="dop_v1_fake")
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(project), "db.restore", "--env", "staging",
                           "--file", "../x.dump; reboot", "--yes"], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: db.restore: backup name '../x.dump; reboot' is not one listed by db.backups "
        "(fix: pass a name `invoke db.backups` prints, or the path of a local pg_dump -Fc file)"]
