"""The host's record of what Dropship manages: items from resources, removal of what is no longer
wanted (data only with purge), adoption of hosts without a record; exact commands."""
from dataclasses import replace

from provision.engine.certs import Certificate, Placeholder
from provision.engine.compose import ComposeProject
from provision.engine.files import Directory, File, Symlink
from provision.engine.managed import ManagedRecord, managed_items, removal_commands
from provision.engine.model import Handler
from provision.engine.postgres import PgDatabase, PgRole
from provision.engine.system import User

NGINX = Handler("reload nginx", "nginx -t -q && systemctl reload nginx", "nginx")
SYSTEMD = Handler("systemctl daemon-reload", "systemctl daemon-reload")


def app_resources(name: str):
    return [User(name, home=f"/srv/{name}", system=True, role="app"), Directory(f"/srv/{name}", role="app"),
            Directory(f"/srv/{name}/releases", role="app"),
            File(f"/srv/{name}/slots/blue.env", b"PORT=8001\n", role="app"),
            File(f"/etc/systemd/system/{name}@.service", b"[Service]\n", role="app"),
            File(f"/etc/nginx/sites-available/{name}.conf", b"server {}\n", role="app"),
            Symlink(f"/etc/nginx/sites-enabled/{name}.conf", f"/etc/nginx/sites-available/{name}.conf", role="app"),
            PgRole(name, "pw", role="postgres"), PgDatabase(name, name, role="postgres"),
            File("/etc/ssh/sshd_config.d/dropship.conf", b"", role="base")]


def test_items_of_a_host():
    items = managed_items(app_resources("names") + [ComposeProject("/srv/airflow", "airflow", (), (), role="airflow")],
                          ("nginx", "app", "airflow"))
    assert items == {
        "airflow": ("compose:/srv/airflow|airflow",),
        "app": ("data:dir:/srv/names", "data:user:names", "file:/etc/nginx/sites-available/names.conf",
                "file:/etc/nginx/sites-enabled/names.conf", "file:/etc/systemd/system/names@.service",
                "unit:names@"),
        "postgres": ("data:pgdb:names", "data:pgrole:names"),
    }


def test_removal_commands_exact():
    assert removal_commands("unit:names@") == [
        "systemctl stop 'names@*.service' 2>/dev/null || true",
        "rm -f /etc/systemd/system/*.wants/names@*.service"]
    assert removal_commands("unit:worker") == ["systemctl disable --now worker.service 2>/dev/null || true"]
    assert removal_commands("compose:/srv/airflow|airflow") == [
        "if command -v docker >/dev/null && [ -f /srv/airflow/compose.yaml ]; then docker compose "
        "--project-directory /srv/airflow -p airflow down --remove-orphans; fi"]
    assert removal_commands("file:/etc/nginx/sites-enabled/it's.conf") == [
        "rm -f '/etc/nginx/sites-enabled/it'\"'\"'s.conf'"]
    assert removal_commands("data:pgdb:names") == ["runuser -u postgres -- dropdb --if-exists names"]
    assert removal_commands("data:pgrole:names") == ["runuser -u postgres -- dropuser --if-exists names"]
    assert removal_commands("data:user:names") == ["if getent passwd names >/dev/null; then userdel names; fi"]
    assert removal_commands("data:dir:/srv/names") == ["rm -rf /srv/names"]


SCOPE = ("postgres", "nginx", "app", "airflow")


def record(name: str, purge: bool = False, scope=SCOPE) -> ManagedRecord:
    return ManagedRecord(managed_items(app_resources(name), ("app",)), scope, purge, NGINX, SYSTEMD)


def test_a_host_without_record_is_adopted_and_nothing_removed():
    r = record("names")
    assert r.parse("@@dropship-no-record\n") is None and r.parse("{not json") is None
    assert r.parse('{"items": ["file:/etc/x"]}') is None
    [change] = r.plan(None)
    assert change.action == "create" and "nothing removed" in change.summary
    assert not [c for c in change.commands if c.startswith(("rm ", "systemctl", "runuser"))]
    assert change.notify == ()
    assert r.parse(_written(change.commands)) == r.items


def test_unchanged_record_plans_nothing():
    r = record("names")
    assert r.plan(dict(r.items)) == []


def test_a_renamed_app_stops_and_loses_its_config_but_keeps_data():
    old, new = record("names"), record("guestbook")
    [change] = new.plan(old.items)
    assert change.action == "remove"
    commands = "\n".join(change.commands)
    order = [commands.index(s) for s in ("systemctl stop 'names@*.service'",
                                         "rm -f /etc/nginx/sites-available/names.conf",
                                         "rm -f /etc/nginx/sites-enabled/names.conf")]
    assert order == sorted(order)
    assert "dropdb" not in commands and "userdel" not in commands and "rm -rf /srv/names" not in commands
    assert change.notify == (NGINX, SYSTEMD)
    kept = new.parse(_written(change.commands))
    assert "data:dir:/srv/names" in kept["app"] and "data:pgdb:names" in kept["postgres"]
    assert "unit:names@" not in kept["app"] and "unit:guestbook@" in kept["app"]
    # A later run with purge removes the data it kept.
    [purged] = replace(new, purge=True).plan(kept)
    text = "\n".join(purged.commands)
    assert text.index("dropdb --if-exists names") < text.index("dropuser --if-exists names") \
        < text.index("userdel names") < text.index("rm -rf /srv/names")
    assert new.parse(_written(purged.commands)) == new.items


def test_a_run_of_some_roles_prunes_only_theirs():
    recorded = {"airflow": ("compose:/srv/airflow|airflow",), **record("names").items}
    deploy = record("guestbook", scope=("app",))        # a deploy lays out the apps only
    [change] = deploy.plan(recorded)
    text = "\n".join(change.commands)
    assert "names@" in text and "docker compose" not in text and "dropdb" not in text
    kept = deploy.parse(_written(change.commands))
    assert kept["airflow"] == recorded["airflow"] and kept["postgres"] == recorded["postgres"]
    # A full run drops what the host lost: Airflow turned off.
    [full] = record("names").plan(recorded)
    assert "docker compose --project-directory /srv/airflow -p airflow down" in "\n".join(full.commands)
    assert full.notify == ()


def _written(commands: list[str]) -> str:
    import base64

    start = commands.index("base64 -d > /var/lib/dropship/managed.json.new <<'DROPSHIP_EOF'")
    return base64.b64decode("".join(commands[start + 1:commands.index("DROPSHIP_EOF", start)])).decode()


def test_a_certificate_given_as_secrets_then_from_acme_keeps_its_files():
    """The custom pair were File resources; the ACME certificate links the same paths (the links are
    made later, in the services phase): the record's cleanup must not delete them in between."""
    folder = "/etc/dropship/tls/shop.test"
    custom = [File(f"{folder}/{n}", b"x", role="nginx") for n in ("fullchain.pem", "privkey.pem", "live")]
    acme = [Placeholder(folder, "shop.test", role="nginx"),
            Certificate("shop.test", ("shop.test",), folder, "/var/www/acme", "https://acme/dir", role="nginx")]
    assert managed_items(acme, ("nginx",)) == managed_items(custom, ("nginx",)) == {"nginx": (
        f"file:{folder}/fullchain.pem", f"file:{folder}/live", f"file:{folder}/privkey.pem")}
    now = ManagedRecord(managed_items(acme, ("nginx",)), SCOPE, False, NGINX, SYSTEMD)
    assert now.plan(managed_items(custom, ("nginx",))) == []
    assert managed_items([Placeholder("/var/lib/x", "x", role="nginx")], ("nginx",)) == {}    # only under /etc
