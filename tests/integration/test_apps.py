"""Two Flask apps of different shapes on one real local droplet, by inventory alone.

Beside the repo's names app (at the root: `wsgi:app`, DATABASE_URL, Flask-Migrate migrations, a
/healthz endpoint), the guestbook app of tests/apps/guestbook is written the way apps written
elsewhere are: a package factory given an argument (`guestbook:create_app('production')`), its
database URL in GUESTBOOK_DB_URI through psycopg2, requirements in requirements/prod.txt, tables
made by a script, no health endpoint (the gate asks /about). It is served at /guestbook of the default
server (SCRIPT_NAME), with a hostile string as its page title; it lists no gunicorn, then pins an
old one. The tests run in order on one droplet: both deploy and serve their forms (CSRF included);
deploys and rollbacks of each app under load fail no request; a release that cannot start fails
its gate with its own error; a rename leaves nginx valid and serving; removing the app disables
it and keeps its data, `--purge` drops that; a src-layout app installs its own source; an app with
only a pyproject.toml and a uv.lock gets the versions the lock pins; an app of
Flask's tutorial shape keeps its SQLite file and uploads in `shared_dirs` across deploys, and a
backup set holds them and restores them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.loadgen import LoadGenerator
from tests.support import (DEFAULTS, TITLE, AppRepo, Browser, GuestbookRepo, Sandbox, app_settings,
                           docker_exec, droplet_spec, guestbook, guestbook_page, heading, http_base, last_json,
                           run_name, sign)

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "nginx", "app"]


@dataclass
class Host:
    box: Sandbox
    names: AppRepo
    guestbook: GuestbookRepo
    url: str

    @property
    def container(self) -> str:
        from provision.state import load_droplets

        return load_droplets(self.box.environment())["web-1"].id

    def write(self, *apps: dict, backups: dict | None = None) -> None:
        defaults = {k: v for k, v in DEFAULTS.items() if k != "app"} | ({"backups": backups} if backups else {})
        self.box.write({self.box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, warm=True)],
                                       "apps": list(apps)}}, defaults=defaults)

    def on_host(self, script: str, check: bool = True) -> str:
        return docker_exec(self.container, script, check)

    def invoke(self, *args: str) -> subprocess.CompletedProcess:
        proc = self.box.invoke(*args, "--env", self.box.env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("apps")
    (root / "env").mkdir()
    h = Host(Sandbox(root / "env", run_name()), AppRepo.create(root / "names"),
             GuestbookRepo.create(root / "guestbook"), "")
    h.write(app_settings(h.names.root), guestbook(h.guestbook.root))
    try:
        h.box.create_and_provision()
        h.url = http_base(h.box)
        yield h
    finally:
        h.box.invoke("droplet.destroy", "--env", h.box.env, "--yes")


def under_load(host: Host, *commands: tuple[str, ...]) -> list:
    """Run each `invoke` command while both apps are asked 30 times a second; the load's stats."""
    loads = [LoadGenerator(host.url + "/healthz", rate=30).start(),
             LoadGenerator(host.url + "/guestbook/about", rate=30).start()]
    try:
        for command in commands:
            host.invoke(*command)
    finally:
        stats = [load.stop() for load in loads]
    return stats


# --- the tests, in order -----------------------------------------------------------------------------

def test_both_apps_deploy_and_serve_their_forms(host):
    report = last_json(host.invoke("deploy", "--json"))
    assert report["ok"] and set(report["releases"]) == {"names", "guestbook"}, report
    names = Browser(host.url)
    names.add_name("Ada Lovelace")
    assert names.page() == (heading("v1"), ["Ada Lovelace"])

    visitor = Browser(host.url)
    assert sign(visitor, "Grace", "Hello from the guestbook") in (302, 303)
    title, label, entries = guestbook_page(visitor)
    assert title == TITLE                                  # the hostile string arrived byte-exact, as data
    assert label == "v1" and any("Hello from the guestbook" in e for e in entries), entries
    assert sign(Browser(host.url), "Mallory", "no token", with_token=False) == 400
    assert host.on_host("ls /tmp/pwned /tmp/pwned2 2>&1 || true").count("No such file") == 2

    env = host.on_host("cat /srv/guestbook/slots/blue/.env")
    assert "GUESTBOOK_DB_URI=\"postgresql+psycopg2://guestbook:" in env and "DATABASE_URL=" in env
    rows = last_json(host.invoke("releases", "--json"))["web-1"]
    assert {(r["app"], r["live"]) for r in rows} == {("names", True), ("guestbook", True)}
    assert "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok" in host.on_host("nginx -t 2>&1")


def gunicorn_of(host: Host, app: str, live: bool) -> tuple[str, str]:
    """(version, command line) of the gunicorn in ``app``'s live or warm slot."""
    script = (f"l=$(cat /srv/{app}/live); s=$l; [ {'1' if live else '0'} = 1 ] || "
              f"{{ [ $l = blue ] && s=green || s=blue; }}; /srv/{app}/slots/$s/.venv/bin/gunicorn --version; "
              f"tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value {app}@$s)/cmdline")
    version, cmdline = host.on_host(script).splitlines()
    return version, cmdline


def test_deploy_and_rollback_of_each_app_under_load(host):
    """The guestbook lists no gunicorn (v1: Dropship's is added) and then pins an old one (v2: 23.0.0,
    before --no-control-socket): each slot runs its own, with the flags it takes."""
    assert gunicorn_of(host, "guestbook", live=True)[0] == "gunicorn (version 27.0.1)"
    host.names.version("v2")
    prod = host.guestbook.root / "requirements" / "prod.txt"
    prod.write_text(prod.read_text() + "gunicorn==23.0.0\n")
    host.guestbook.version("v2")
    stats = under_load(host, ("deploy", "--only", "guestbook"), ("deploy", "--only", "names"),
                       ("rollback", "--app", "guestbook"), ("rollback", "--app", "names"))
    for app, s in zip(("names", "guestbook"), stats):
        assert s.failed == 0 and s.total > 50, f"{app}: {s.summary()}"
    assert Browser(host.url).page()[0] == heading("v1")
    assert guestbook_page(Browser(host.url))[1] == "v1"
    version, cmdline = gunicorn_of(host, "guestbook", live=True)
    assert version == "gunicorn (version 27.0.1)" and " --no-control-socket --bind " in cmdline, cmdline
    under_load(host, ("rollback", "--app", "guestbook"))      # forward again: v2, warm
    assert guestbook_page(Browser(host.url))[1] == "v2"
    version, cmdline = gunicorn_of(host, "guestbook", live=True)
    assert version == "gunicorn (version 23.0.0)" and "/bin/gunicorn --bind " in cmdline, cmdline


def test_an_app_that_cannot_start_fails_its_gate_at_once_with_its_error_and_the_old_release_serves(host):
    host.write(app_settings(host.names.root), {**guestbook(host.guestbook.root), "wsgi": "guestbook:make_app()"})
    host.invoke("provision")
    proc = host.box.invoke("deploy", "--env", host.box.env, "--only", "guestbook")
    [line] = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 1 and "health check: log: Failed to find attribute 'make_app' in 'guestbook'." in line
    assert "got HTTP none (the service keeps exiting)" in line, line
    assert guestbook_page(Browser(host.url))[1] == "v2"                      # the old release serves
    host.write(app_settings(host.names.root), guestbook(host.guestbook.root))
    host.invoke("provision")
    host.invoke("deploy", "--only", "guestbook")                             # the mistake fixed
    assert guestbook_page(Browser(host.url))[1] == "v2"


def test_a_rename_leaves_nginx_valid_and_serving(host):
    """A renamed app is a new app: the old one stops at the provision, the new one serves from its
    deploy on; the other app serves throughout."""
    host.write(app_settings(host.names.root), guestbook(host.guestbook.root, name="visitors"))
    names, _ = under_load(host, ("provision",), ("deploy",))
    assert names.failed == 0, names.summary()
    assert "syntax is ok" in host.on_host("nginx -t 2>&1")
    gone = host.on_host("ls /etc/nginx/sites-enabled/; systemctl is-active guestbook@blue guestbook@green || true")
    assert "guestbook.conf" not in gone and "visitors.conf" in gone and "names.conf" in gone
    assert gone.count("inactive") == 2, gone
    title, label, entries = guestbook_page(Browser(host.url))
    assert (title, label) == (TITLE, "v2") and any("Hello from the guestbook" in e for e in entries)
    assert host.on_host("test -d /srv/guestbook && echo kept").strip() == "kept"      # data stays


def test_removing_an_app_disables_it_and_purge_drops_its_data(host):
    host.write(app_settings(host.names.root))
    host.invoke("provision")
    assert "syntax is ok" in host.on_host("nginx -t 2>&1")
    status, _, _ = Browser(host.url).open("/guestbook/about")
    assert status == 404                                     # the root app answers now
    state = host.on_host("ls /etc/nginx/sites-enabled/ /etc/nginx/dropship/locations/; "
                         "systemctl is-active visitors@blue visitors@green || true; ls -d /srv/*")
    assert "visitors" not in state.split("inactive")[0].replace("/srv/visitors", ""), state
    assert "/srv/visitors" in state and "/srv/guestbook" in state
    assert Browser(host.url).page()[1] == ["Ada Lovelace"]

    host.invoke("provision", "--purge")
    left = host.on_host("ls -d /srv/*; runuser -u postgres -- psql -Atc 'select datname from pg_database'; "
                        "getent passwd visitors guestbook || true")
    assert "/srv/visitors" not in left and "/srv/guestbook" not in left and "/srv/names" in left
    assert "guestbook" not in left.split()[2:] and "names" in left
    assert Browser(host.url).page()[1] == ["Ada Lovelace"]
    again = last_json(host.invoke("provision", "--json"))
    assert again["ok"] and again["hosts"]["web-1"]["changed"] == 0, again


PYPROJECT = """\
[project]
name = "pkgapp"
version = "1.0"
dependencies = ["flask"]

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[tool.setuptools.packages.find]
where = ["src"]
"""
FACTORY = """\
import time

from flask import Flask, request

from .message import MESSAGE


def create_app():
    app = Flask(__name__)

    @app.get("/")
    def index():
        return MESSAGE

    @app.get("/slow")
    def slow():
        time.sleep(float(request.args["s"]))
        return "done"

    return app
"""


def test_an_app_that_installs_its_own_source_serves_each_release(host, tmp_path_factory):
    """A src layout installed by its requirements (`-e .`, after `-r base.txt`), as Flask's tutorial
    makes apps, needing an apt package and a request timeout of its own: each release gets a virtualenv of its own source (a shared
    one would go on serving the first release's code), and rollback brings back the one before."""
    repo = AppRepo(tmp_path_factory.mktemp("pkgapp"))
    for name, text in {"pyproject.toml": PYPROJECT, "src/pkgapp/__init__.py": FACTORY,
                       "src/pkgapp/message.py": 'MESSAGE = "release one"\n',
                       "requirements/base.txt": "flask==3.1.3\n", "requirements/prod.txt": "-r base.txt\n-e .\n"
                       }.items():
        (repo.root / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.root / name).write_text(text)
    repo.git("init", "-q", "-b", "main")
    repo.commit("one")
    host.write(app_settings(host.names.root), {"name": "pkgapp", "source": str(repo.root), "path": "/pkg",
                                               "wsgi": "pkgapp:create_app()", "requirements": "requirements/prod.txt",
                                               "health": {"path": "/"}, "packages": ["sqlite3"],
                                               "request_timeout": 8})
    host.invoke("provision")                                                   # apt installs what the app asks for
    assert host.on_host("runuser -u pkgapp -- sqlite3 --version").startswith("3.")
    again = last_json(host.invoke("provision", "--json"))
    assert again["hosts"]["web-1"]["changed"] == 0, again
    host.invoke("deploy", "--only", "pkgapp")
    assert Browser(host.url).open("/pkg/")[2] == "release one"
    assert Browser(host.url).open("/pkg/slow?s=2")[:3:2] == (200, "done")
    assert Browser(host.url).open("/pkg/slow?s=11")[0] == 504           # request_timeout: 8 s
    (repo.root / "src/pkgapp/message.py").write_text('MESSAGE = "release two"\n')
    repo.commit("two")
    host.invoke("deploy", "--only", "pkgapp")
    assert Browser(host.url).open("/pkg/")[2] == "release two"
    host.invoke("rollback", "--app", "pkgapp")
    assert Browser(host.url).open("/pkg/")[2] == "release one"
    assert len(host.on_host("ls /srv/pkgapp/shared/venvs").split()) == 2          # one per source


def test_an_app_with_only_a_pyproject_is_installed_as_its_uv_lock_pins(host, tmp_path_factory):
    """`requirements: backend/pyproject.toml` (no requirements file, a uv project in a folder of the repo):
    the project itself is installed, its dependencies at the versions of its uv.lock (older than what a
    fresh resolution picks), its dev group not; a lock its pyproject outgrew is refused before any host, as
    `uv sync --locked` would."""
    repo = AppRepo(tmp_path_factory.mktemp("uvapp"))
    project = repo.root / "backend"
    pinned = PYPROJECT.replace('name = "pkgapp"', 'name = "uvapp"').replace(
        'dependencies = ["flask"]', 'dependencies = ["flask>=3"]\n\n[dependency-groups]\ndev = ["iniconfig"]')
    for name, text in {"pyproject.toml": pinned, "src/uvapp/__init__.py": FACTORY,
                       "src/uvapp/message.py": 'MESSAGE = "locked one"\n'}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    subprocess.run([sys.executable, "-m", "uv", "lock", "-q", "--upgrade-package", "flask==3.0.3"], cwd=project,
                   check=True, timeout=300)
    repo.git("init", "-q", "-b", "main")
    repo.commit("one")
    host.write(app_settings(host.names.root), {"name": "uvapp", "source": str(repo.root), "path": "/uv",
                                               "wsgi": "uvapp:create_app()", "requirements": "backend/pyproject.toml",
                                               "health": {"path": "/"}})
    host.invoke("provision")
    host.invoke("deploy", "--only", "uvapp")
    assert Browser(host.url).open("/uv/")[2] == "locked one"
    venv = "/srv/uvapp/slots/$(cat /srv/uvapp/live)/.venv"
    versions = host.on_host(f"{venv}/bin/python -c 'import importlib.metadata as m; "
                            "print(m.version(\"flask\"), [d.name for d in m.distributions() if d.name == \"iniconfig\"])'")
    assert versions.split(maxsplit=1) == ["3.0.3", "[]\n"], versions
    (project / "src/uvapp/message.py").write_text('MESSAGE = "locked two"\n')
    repo.commit("two")
    host.invoke("deploy", "--only", "uvapp")
    assert Browser(host.url).open("/uv/")[2] == "locked two"
    (project / "pyproject.toml").write_text(pinned.replace('"flask>=3"', '"flask>=3", "itsdangerous>=2"'))
    (project / "src/uvapp/message.py").write_text('MESSAGE = "locked three"\n')
    repo.commit("a dependency added, the lock left as it was")
    refused = host.box.invoke("deploy", "--env", host.box.env, "--only", "uvapp")
    [line] = [ln for ln in (refused.stdout + refused.stderr).splitlines() if ln.startswith("error: ")]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert line.startswith("error: app uvapp: backend/uv.lock does not match backend/pyproject.toml (error: The "
                           "lockfile at `uv.lock` needs to be updated, but `--check` was provided.)"), line
    assert "run `uv lock` in backend and commit uv.lock" in refused.stdout + refused.stderr
    assert Browser(host.url).open("/uv/")[2] == "locked two"


NOTES = '''\
import os
import sqlite3

from flask import Flask, request

from .message import MESSAGE


def create_app():
    """Flask's tutorial shape: a SQLite file in the instance folder; uploads in media/uploads."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    database = os.path.join(app.instance_path, "notes.sqlite")
    uploads = os.path.join(os.path.dirname(app.root_path), "media", "uploads")

    @app.cli.command("init-db")
    def init_db():
        with sqlite3.connect(database) as db:
            db.execute("CREATE TABLE IF NOT EXISTS note (body TEXT)")

    @app.route("/", methods=["GET", "POST"])
    def index():
        with sqlite3.connect(database) as db:
            if request.method == "POST":
                db.execute("INSERT INTO note VALUES (?)", (request.form["body"],))
            notes = [row[0] for row in db.execute("SELECT body FROM note")]
        return " | ".join([MESSAGE, *notes])

    @app.post("/upload")
    def upload():
        with open(os.path.join(uploads, os.path.basename(request.form["name"])), "w") as fh:
            fh.write(request.form["text"])
        return "stored"

    @app.get("/uploads")
    def listing():
        return " ".join(sorted(os.listdir(uploads)))

    return app
'''


@pytest.fixture(scope="module")
def notes_app(tmp_path_factory) -> tuple[AppRepo, dict]:
    repo = AppRepo(tmp_path_factory.mktemp("notes"))
    for name, text in {"notes/__init__.py": NOTES, "notes/message.py": 'MESSAGE = "release one"\n',
                       "requirements.txt": "flask==3.1.3\n", "instance/.gitkeep": "",
                       "media/uploads/README": "placeholder from the repo\n", "media/logo.txt": "logo\n"}.items():
        (repo.root / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.root / name).write_text(text)
    repo.git("init", "-q", "-b", "main")
    repo.commit("one")
    return repo, {"name": "notes", "source": str(repo.root), "path": "/notes", "wsgi": "notes:create_app()",
                  "release_command": "flask --app notes init-db", "health": {"path": "/"},
                  "shared_dirs": ["instance", "media/uploads"]}


def test_what_the_app_writes_in_its_shared_dirs_outlives_deploys_and_rollbacks(host, notes_app):
    """An app that writes beside its code (a SQLite file in Flask's instance folder, uploads in
    media/uploads), as Flask's tutorial does: without `shared_dirs` its user cannot write there and
    each release would start empty; with them, notes and uploads survive a deploy and a rollback,
    and the repo's placeholders in those folders never overwrite what the app wrote."""
    repo, notes = notes_app
    host.write(app_settings(host.names.root), notes)
    host.invoke("provision")
    host.invoke("deploy", "--only", "notes")
    user = Browser(host.url)
    assert user.open("/notes/", {"body": "first note"})[2] == "release one | first note"
    assert user.open("/notes/upload", {"name": "cat.txt", "text": "meow"})[2] == "stored"
    assert user.open("/notes/uploads")[2] == "cat.txt"                  # the repo's README did not ship there
    assert host.on_host("stat -c '%U %a' /srv/notes/data/instance /srv/notes/data/media/uploads").splitlines() == \
        ["notes 750", "notes 750"]
    host.on_host("runuser -u notes -- sh -c 'echo the app changed it > /srv/notes/data/media/uploads/README'")

    (repo.root / "notes/message.py").write_text('MESSAGE = "release two"\n')
    (repo.root / "media/uploads/README").write_text("a new placeholder\n")
    repo.commit("two")
    host.invoke("deploy", "--only", "notes")
    assert user.open("/notes/")[2] == "release two | first note"
    assert user.open("/notes/uploads")[2] == "README cat.txt"
    assert host.on_host("cat /srv/notes/data/media/uploads/README") == "the app changed it\n"
    assert host.on_host("cat /srv/notes/slots/*/media/logo.txt").splitlines() == ["logo", "logo"]
    host.invoke("rollback", "--app", "notes")
    assert user.open("/notes/", {"body": "after the rollback"})[2] == "release one | first note | after the rollback"
    host.write(app_settings(host.names.root), {**notes, "shared_dirs": ["instance"]})     # uploads no longer kept
    host.invoke("deploy", "--only", "notes")
    assert user.open("/notes/uploads")[2] == "README"                   # the release's own folder, with the repo's file
    assert host.on_host("ls /srv/notes/data/media/uploads").split() == ["README", "cat.txt"]   # nothing written there
    assert "release two | first note | after the rollback" == user.open("/notes/")[2]


def test_a_backup_set_holds_the_shared_folders_and_restores_them(host, notes_app):
    """With `backups:`, each set also holds the apps' shared folders (the SQLite file copied whole,
    encrypted like the dumps); `db.restore` brings them back as they were, the app's user owning
    them, the folder it replaces kept beside, and the app goes on writing without a deploy."""
    _, notes = notes_app
    host.write(app_settings(host.names.root), notes, backups={"keep_daily": 3})
    host.invoke("provision")
    host.invoke("deploy", "--only", "notes")
    user = Browser(host.url)
    assert user.open("/notes/", {"body": "kept by the backup"})[2].endswith(" | kept by the backup")
    assert user.open("/notes/upload", {"name": "dog's photo.txt", "text": "woof"})[2] == "stored"
    before = user.open("/notes/")[2]
    host.invoke("db.backup", "--offsite")
    listed = json.loads(host.invoke("db.backups", "--json").stdout.splitlines()[-1])["scheduled"]["backups"]
    [kept] = [r for r in listed if r["where"] == "host"]
    assert kept["files"] == ["notes"] and "names" in kept["databases"], kept
    archive = f"/var/backups/dropship/scheduled/{kept['stamp']}/notes.files.tar.age"
    assert host.on_host(f"head -c 22 {archive}") == "age-encryption.org/v1\n"

    assert user.open("/notes/", {"body": "after the backup"})[2].endswith(" | after the backup")
    assert user.open("/notes/upload", {"name": "late.txt", "text": "late"})[2] == "stored"
    proc = host.invoke("db.restore", "--from", f"host:{kept['stamp']}", "--yes")
    assert "notes: kept the folder it replaces as /srv/notes/data.pre-restore-" in proc.stdout, proc.stdout
    assert user.open("/notes/")[2] == before
    assert user.open("/notes/uploads")[2] == "README cat.txt dog's photo.txt"
    assert host.on_host("stat -c '%U %a' /srv/notes/data /srv/notes/data/instance/notes.sqlite").splitlines() == \
        ["root 755", "notes 644"]
    assert user.open("/notes/", {"body": "written after the restore"})[2] == before + " | written after the restore"
    assert host.on_host("cat /srv/notes/data.pre-restore-*/media/uploads/late.txt") == "late"
