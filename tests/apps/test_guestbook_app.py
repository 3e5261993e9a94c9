"""The guestbook test app (tests/apps/guestbook) against a real, throwaway PostgreSQL: tables made
by its release command, its page and title, its CSRF-protected form, the names of the environment
variables it reads, and gunicorn serving `guestbook:create_app()` under a path prefix."""
import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

APP_ROOT = Path(__file__).resolve().parent / "guestbook"
if str(APP_ROOT) not in sys.path:  # the app's own root, as gunicorn and its script see it
    sys.path.insert(0, str(APP_ROOT))

from guestbook import create_app, db  # noqa: E402
from guestbook.models import Entry  # noqa: E402
from tests.pg_server import postgres_server, unused_port  # noqa: E402
from tests.support import Browser  # noqa: E402

APP_ENV = ("GUESTBOOK_ENV", "GUESTBOOK_DB_URI", "GUESTBOOK_SECRET", "SITE_TITLE", "DROPSHIP_RELEASE",
           "DATABASE_URL", "SECRET_KEY", "SCRIPT_NAME")
TITLE = "It's \"$(touch pwned)\" `touch pwned2`; $HOME <b>&amp;</b> — ünïcødé ✓ 'quoted'"
TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def page_title(page: str) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", page, re.S).group(1))


def entries_on(page: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'<li class="entry">(.*?)</li>', page, re.S)]


@pytest.fixture(scope="module")
def db_uri():
    """GUESTBOOK_DB_URI of an empty database, with the psycopg2 driver named."""
    with postgres_server("guestbook_test", prefix="guestbook-pg-") as url:
        yield url.replace("postgresql://", "postgresql+psycopg2://", 1)


def app_env(db_uri: str, **extra: str) -> dict:
    """The process environment a release gets: the caller's, minus app settings, plus these."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    return {**env, "GUESTBOOK_ENV": "production", "GUESTBOOK_DB_URI": db_uri, "GUESTBOOK_SECRET": "s3cret",
            **extra}


def create_tables(db_uri: str) -> subprocess.CompletedProcess:
    """The release command, as Dropship runs it: from the release's root, settings in the environment."""
    return subprocess.run([sys.executable, "bin/create_tables.py"], cwd=APP_ROOT, env=app_env(db_uri),
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tables(db_uri):
    done = create_tables(db_uri)
    assert done.returncode == 0, done.stderr
    return db_uri


@pytest.fixture
def make_app(tables, monkeypatch):
    """Build the app from environment variables (GUESTBOOK_DB_URI etc. set); the table starts empty."""
    for var in APP_ENV:
        monkeypatch.delenv(var, raising=False)
    apps = []

    def make(**env):
        for key, value in app_env(tables, SITE_TITLE=TITLE, **env).items():
            if key in APP_ENV:
                monkeypatch.setenv(key, value)
        app = create_app()
        apps.append(app)
        with app.app_context():
            db.session.execute(db.text(f"TRUNCATE {Entry.__tablename__} RESTART IDENTITY"))
            db.session.commit()
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def client(make_app):
    return make_app(DROPSHIP_RELEASE="20260102T030405Z-abc1234").test_client()


def sign(client, author: str, message: str, with_token: bool = True):
    token = TOKEN.search(client.get("/").get_data(as_text=True)).group(1)
    form = {"author": author, "message": message, **({"csrf_token": token} if with_token else {})}
    return client.post("/", data=form)


def test_create_tables_is_idempotent(tables):
    again = create_tables(tables)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "tables ready: guestbook_entries"


def test_index_shows_title_version_release_and_form(client):
    page = client.get("/").get_data(as_text=True)
    assert page_title(page) == TITLE                        # byte-exact once unescaped
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in page and "<b>" not in page
    assert re.search(r'<h1>It&#39;s .*<span class="version" data-version="v1">v1</span></h1>', page)
    assert '<code class="release">20260102T030405Z-abc1234</code>' in page
    assert 'name="author"' in page and 'name="message"' in page and TOKEN.search(page)
    assert "Nobody has signed yet." in page


def test_signing_with_the_token_adds_an_entry(client):
    response = sign(client, "  Grace ", "Hello <script>alert(1)</script>")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert entries_on(page) == ["Grace: Hello <script>alert(1)</script>"]
    assert "<script>" not in page
    assert sign(client, "Ada", "Second").status_code == 303
    assert entries_on(client.get("/").get_data(as_text=True))[0] == "Ada: Second"    # newest first


def test_post_without_the_token_is_refused(client):
    assert sign(client, "Mallory", "no token", with_token=False).status_code == 400
    assert client.post("/", data={"author": "Mallory", "message": "x", "csrf_token": "forged"}).status_code == 400
    assert entries_on(client.get("/").get_data(as_text=True)) == []


def test_empty_fields_are_rejected(client):
    response = sign(client, "   ", "")
    assert response.status_code == 200
    assert response.get_data(as_text=True).count("This field is required.") == 2
    assert entries_on(response.get_data(as_text=True)) == []


def test_about_page_and_no_health_endpoint(make_app):
    client = make_app().test_client()
    about = client.get("/about")
    assert about.status_code == 200 and "<h2>About</h2>" in about.get_data(as_text=True)
    assert 'class="release"' not in about.get_data(as_text=True)    # no DROPSHIP_RELEASE, no footer
    assert client.get("/healthz").status_code == 404


def test_reads_its_own_environment_variable_names(make_app, monkeypatch):
    app = make_app(DATABASE_URL="postgresql+psycopg2://nobody@127.0.0.1:1/nothing", SECRET_KEY="not-this")
    assert app.config["SECRET_KEY"] == "s3cret" and not app.debug
    assert app.config["SQLALCHEMY_DATABASE_URI"] == os.environ["GUESTBOOK_DB_URI"]
    assert sign(app.test_client(), "Env", "names honoured").status_code == 303   # GUESTBOOK_DB_URI used
    monkeypatch.setenv("GUESTBOOK_ENV", "development")
    assert create_app().debug
    monkeypatch.setenv("GUESTBOOK_ENV", "staging")
    with pytest.raises(ValueError, match="GUESTBOOK_ENV='staging' is not a config: use one of production, dev"):
        create_app()
    monkeypatch.delenv("GUESTBOOK_ENV")
    monkeypatch.delenv("GUESTBOOK_SECRET")
    with pytest.raises(RuntimeError, match="^ProductionConfig needs GUESTBOOK_SECRET in the environment$"):
        create_app()


def test_gunicorn_serves_the_factory_under_a_path_prefix(tables, tmp_path):
    """As a slot runs it: `gunicorn 'guestbook:create_app()'` from the app's root, SCRIPT_NAME set."""
    port = unused_port()
    gunicorn, log = Path(sys.executable).parent / "gunicorn", tmp_path / "gunicorn.log"
    with log.open("w") as err:
        proc = subprocess.Popen([str(gunicorn), "--no-control-socket", "--bind", f"127.0.0.1:{port}",
                                 "--workers", "1", "guestbook:create_app()"], cwd=APP_ROOT,
                                env=app_env(tables, SITE_TITLE=TITLE, SCRIPT_NAME="/guestbook"),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        browser = Browser(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = browser.open("/guestbook/about")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert status == 200 and "About" in body
        status, _, page = browser.open("/guestbook/")
        assert status == 200 and page_title(page) == TITLE
        assert 'action="/guestbook/"' in page and 'href="/guestbook/about"' in page
        token = TOKEN.search(page).group(1)
        status, headers, _ = browser.open("/guestbook/", {"author": "Gunicorn", "message": "via the prefix",
                                                         "csrf_token": token})
        assert status == 303 and headers["Location"] == "/guestbook/"
        assert "Gunicorn: via the prefix" in entries_on(browser.open("/guestbook/")[2])
        assert Browser(f"http://127.0.0.1:{port}").open("/guestbook/", {"author": "x", "message": "y"})[0] == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
