"""rollback --with-db: the command builders (exact strings), the method choice, hostile strings."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from provision import db_release as dbr
from provision import release as rel
from provision.workflows.database import restore_command

PSQL = "runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1"


def test_revision_probe_exact():
    assert dbr.revision_probe("shop") == (
        f"{PSQL} -d shop -c 'select version_num from alembic_version' 2>/dev/null | head -n 1")


def test_record_revision_exact():
    assert dbr.record_revision_command("shop", "/srv/shop/releases/r1") == (
        f"rev=$({PSQL} -d shop -c 'select version_num from alembic_version' 2>/dev/null | head -n 1)\n"
        "printf '%s\\n' \"$rev\" > /srv/shop/releases/r1/.dropship-db-revision.new && "
        "mv -f /srv/shop/releases/r1/.dropship-db-revision.new /srv/shop/releases/r1/.dropship-db-revision\n"
        'echo "revision=$rev"')


def test_record_left_exact_and_refuses_other_names():
    assert dbr.record_left_command("/srv/shop/releases/r1", "pre-r2.dump") == (
        "printf '%s\\n' pre-r2.dump > /srv/shop/releases/r1/.dropship-db-left.new && "
        "mv -f /srv/shop/releases/r1/.dropship-db-left.new /srv/shop/releases/r1/.dropship-db-left")
    for bad in ("../x.dump", "a b.dump", "x.dump; reboot", "-x.dump", "x"):
        with pytest.raises(ValueError):
            dbr.record_left_command("/r", bad)


def test_probe_exact():
    assert dbr.probe_command("shop", "/srv/shop/releases/r1", "/var/backups/dropship/shop") == (
        'echo "revision=$(cat /srv/shop/releases/r1/.dropship-db-revision 2>/dev/null)"\n'
        "left=$(cat /srv/shop/releases/r1/.dropship-db-left 2>/dev/null)\n"
        'echo "left=$left"\n'
        "case \"$left\" in ''|*/*) ;; *) [ -s /var/backups/dropship/shop/\"$left\" ] &&\n"
        '  echo "dump_at=$(date -u -r /var/backups/dropship/shop/"$left" +%Y-%m-%dT%H:%M:%SZ)" ;; esac\n'
        f'echo "current=$({PSQL} -d shop -c \'select version_num from alembic_version\' 2>/dev/null | head -n 1)"\n')


def test_restore_exact():
    """The dump is restored as db.restore does it: one transaction, objects owned by the app's role."""
    assert restore_command("shop", "shop", "/var/backups/dropship/shop/pre-r2.dump") == (
        "test -s /var/backups/dropship/shop/pre-r2.dump || "
        "{ echo 'no such backup: /var/backups/dropship/shop/pre-r2.dump'; exit 1; }\n"
        "runuser -u postgres -- pg_restore --clean --if-exists --no-owner --role=shop --single-transaction "
        "-d shop < /var/backups/dropship/shop/pre-r2.dump")


def test_downgrade_command_exact_and_derived():
    assert dbr.downgrade_template("flask --app wsgi db upgrade") == "flask --app wsgi db downgrade {revision}"
    assert dbr.downgrade_template("flask --app 'pkg:create_app()' db upgrade ") == \
        "flask --app 'pkg:create_app()' db downgrade {revision}"
    assert dbr.downgrade_template("python manage.py migrate") == ""
    assert dbr.downgrade_template("", "alembic downgrade {revision}") == "alembic downgrade {revision}"
    assert dbr.downgrade_command("flask --app wsgi db downgrade {revision}", "a1b2c3d4e5f6") == \
        "flask --app wsgi db downgrade a1b2c3d4e5f6"
    assert rel.release_command("/srv/shop/releases/r2", "shop", "flask --app wsgi db downgrade a1b2") == (
        "cd /srv/shop/releases/r2 && export USER=shop LOGNAME=shop && set -a && . ./.env && set +a && "
        "PATH=/srv/shop/releases/r2/.venv/bin:$PATH HOME=/tmp setpriv --reuid=shop --regid=shop --init-groups sh -c 'flask --app wsgi db downgrade a1b2'")


@pytest.mark.parametrize("hostile", ["", "a1; reboot", "$(id)", "`id`", "a b", "a'b", "a\nb", "x" * 65, "../a"])
def test_downgrade_refuses_hostile_revisions(hostile):
    with pytest.raises(ValueError):
        dbr.downgrade_command("flask db downgrade {revision}", hostile)


def test_parse_probe_drops_hostile_values():
    out = ("revision=a1b2\nleft=pre-r2.dump\ndump_at=2026-12-04T03:00:00Z\ncurrent=ffee\n")
    assert dbr.parse_probe(out) == dbr.DbRecord("a1b2", "pre-r2.dump", "2026-12-04T03:00:00Z", "ffee")
    hostile = ("revision=$(reboot)\nleft=../../etc/passwd.dump\ndump_at=yesterday\ncurrent=a b\nother=1\n")
    assert dbr.parse_probe(hostile) == dbr.DbRecord()
    assert dbr.parse_probe("revision=\nleft=\ncurrent=\n") == dbr.DbRecord()


FULL = dbr.DbRecord("a1b2", "pre-r2.dump", "2026-12-04T03:00:00Z", "ffee")
DOWN = "flask db downgrade {revision}"


@pytest.mark.parametrize("record, downgrade, forced, expected", [
    (FULL, DOWN, None, dbr.DbPlan("dump", dump="pre-r2.dump")),
    (FULL, "", None, dbr.DbPlan("dump", dump="pre-r2.dump")),
    (FULL, DOWN, "downgrade", dbr.DbPlan("downgrade", revision="a1b2")),
    (FULL, DOWN, "dump", dbr.DbPlan("dump", dump="pre-r2.dump")),
    (dbr.DbRecord("a1b2", "pre-r2.dump", "", "ffee"), DOWN, None, dbr.DbPlan("downgrade", revision="a1b2")),
    (dbr.DbRecord("a1b2", "", "", "ffee"), DOWN, None, dbr.DbPlan("downgrade", revision="a1b2")),
])
def test_choose_method(record, downgrade, forced, expected):
    assert dbr.choose_method(record, downgrade, forced) == expected


@pytest.mark.parametrize("record, downgrade, forced, says", [
    (dbr.DbRecord("a1b2", "pre-r2.dump", "", ""), DOWN, "dump", "pre-r2.dump is gone"),
    (dbr.DbRecord("", "pre-r2.dump", "2026-12-04T03:00:00Z", ""), DOWN, "downgrade", "no Alembic revision"),
    (dbr.DbRecord("a1b2", "", "", ""), "", None, "no downgrade command"),
    (dbr.DbRecord(), DOWN, None, "no dump of this release's database is kept"),
    (FULL, DOWN, "both", "not one of dump, downgrade"),
])
def test_choose_method_refuses(record, downgrade, forced, says):
    with pytest.raises(dbr.NoWayBack) as info:
        dbr.choose_method(record, downgrade, forced)
    assert says in info.value.reason and info.value.fix


def test_lost_writes():
    now = datetime(2026, 12, 4, 3, 42, 30, tzinfo=timezone.utc)
    assert dbr.lost_writes("shop", dbr.DbPlan("dump", dump="pre-r2.dump"), FULL, now) == \
        "writes to shop since 2026-12-04T03:00:00Z (42 minutes ago) will be lost"
    assert "after revision a1b2" in dbr.lost_writes("shop", dbr.DbPlan("downgrade", revision="a1b2"), FULL, now)


def test_upload_drops_the_previous_releases_database_record():
    """A new release is a hard-linked copy of the previous one: its database record must not come along."""
    script = rel.upload_command("/srv/shop/releases", "r2", "r1", rel.Upload([], []), b"", b"{}", b"{}")
    assert "rm -f /srv/shop/releases/r2.partial/.dropship-db-*\n" in script


def test_prune_removes_the_dump_of_each_pruned_release(tmp_path):
    """A release's leaving dump lives as long as the release; other dumps are never touched."""
    import subprocess

    releases, dumps = tmp_path / "releases", tmp_path / "dumps"
    dumps.mkdir()
    for i in range(1, 6):
        (releases / f"r{i}").mkdir(parents=True)
        if i < 5:
            (releases / f"r{i}" / dbr.LEFT).write_text(f"pre-r{i + 1}.dump\n")
        (dumps / f"pre-r{i + 1}.dump").write_text("x")
    (dumps / "manual-1.dump").write_text("x")
    (releases / "r1" / dbr.LEFT).write_text("../../escape.dump\n")
    (tmp_path / "escape.dump").write_text("x")
    out = subprocess.run(["sh", "-c", rel.prune_command(str(releases), ["r5", "r4"], 3, str(dumps))],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["pruned", "r2", "pruned", "r1"]
    assert sorted(p.name for p in dumps.iterdir()) == ["manual-1.dump", "pre-r2.dump", "pre-r4.dump",
                                                       "pre-r5.dump", "pre-r6.dump"]    # r1 named no dump here
    assert (tmp_path / "escape.dump").exists()


def test_inventory_db_rollback_command(tmp_path):
    from tests.unit.test_apps_inventory import load, refused

    [app] = load(tmp_path, """
        app: {name: shop, db_rollback_command: "alembic downgrade {revision}"}
    """).settings.apps
    assert app.db_rollback_command == "alembic downgrade {revision}"
    message = refused(tmp_path, "app: {name: shop, db_rollback_command: 'flask db downgrade -1'}\n")
    assert "db_rollback_command" in message and "{revision}" in message
