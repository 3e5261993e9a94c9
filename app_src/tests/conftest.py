"""Fixtures for the names app's tests, against a real, throwaway PostgreSQL cluster.

`postgres_url` starts one cluster per test session (initdb + pg_ctl from the Debian
`postgresql` package) on a free 127.0.0.1 port, with its socket and data in a fresh temp
dir; a watchdog process stops and deletes it even if the test run is killed.
"""
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

APP_SRC = Path(__file__).resolve().parents[1]
if str(APP_SRC) not in sys.path:  # so `import names` works without PYTHONPATH
    sys.path.insert(0, str(APP_SRC))

from sqlalchemy import text  # noqa: E402

from names import create_app  # noqa: E402
from names.models import db  # noqa: E402

APP_ENV = ("FLASK_CONFIG", "DATABASE_URL", "SECRET_KEY", "RELEASE_ID")

# Runs detached; waits for EOF on stdin (the test run ending, however it ends), then
# stops the server if it is still up and deletes the temp dir.
WATCHDOG = textwrap.dedent("""
    import json, os, shutil, subprocess, sys
    stop, tmp = json.loads(sys.argv[1]), sys.argv[2]
    sys.stdin.read()
    if os.path.exists(os.path.join(tmp, "data", "postmaster.pid")):
        subprocess.run(stop, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)
""")


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl")).parent
    pytest.fail("PostgreSQL server binaries not found: apt-get install postgresql (scripts/setup.sh does)")


@pytest.fixture(scope="session")
def postgres_url():
    """Start a throwaway PostgreSQL cluster; yield the DATABASE_URL of an empty database."""
    bindir = pg_bindir()
    tmp = Path(tempfile.mkdtemp(prefix="names-pg-"))
    data, log = tmp / "data", tmp / "postgres.log"
    as_user = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)

    def pg(*args):
        done = subprocess.run(as_user + [str(bindir / args[0]), *args[1:]], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed: {done.stderr or done.stdout}")

    stop = as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, json.dumps(stop), str(tmp)],
                                stdin=subprocess.PIPE, start_new_session=True)
    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
           "--no-sync", "--no-instructions")
        for attempt in range(3):  # a free port can be taken before the server binds it
            port = unused_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
                break
            except RuntimeError as exc:
                if attempt == 2:
                    pytest.fail(f"PostgreSQL did not start: {exc}\n{log.read_text() if log.exists() else ''}")
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "names_test")
        yield f"postgresql://postgres@127.0.0.1:{port}/names_test"
    finally:
        subprocess.run(stop, cwd=tmp, capture_output=True)
        watchdog.stdin.close()  # EOF: the watchdog deletes the temp dir and exits
        watchdog.wait(timeout=30)


@pytest.fixture
def free_port():
    """A 127.0.0.1 port nothing listens on."""
    return unused_port()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No test sees the caller's FLASK_CONFIG, DATABASE_URL, SECRET_KEY or RELEASE_ID."""
    for var in APP_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def migrated_db(postgres_url):
    """The test database with the real migrations applied (Flask-Migrate's upgrade())."""
    from flask_migrate import upgrade

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", postgres_url)
        app = create_app("testing")
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return postgres_url


@pytest.fixture
def make_app(migrated_db, monkeypatch):
    """Build apps on the migrated test database (`make_app("staging")`); tables start empty."""
    apps = []

    def make(config_name="testing", **env):
        monkeypatch.setenv("DATABASE_URL", migrated_db)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = create_app(config_name)
        apps.append(app)
        with app.app_context():
            tables = ", ".join(t.name for t in db.metadata.sorted_tables)
            db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            db.session.commit()
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    """The app in the Testing config (CSRF off), with empty tables."""
    return make_app("testing")


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def database(app):
    """Flask-SQLAlchemy's `db`, inside an app context."""
    with app.app_context():
        yield db
