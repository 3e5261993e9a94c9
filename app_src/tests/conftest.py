"""Fixtures for the names app's tests, against a real, throwaway PostgreSQL cluster.

`postgres_url` starts one cluster per test session with the project's tests/pg_server.py
(this folder is not shipped with the app, so it may import from the project's tests).
"""
import sys
from pathlib import Path

import pytest

APP_SRC = Path(__file__).resolve().parents[1]
if str(APP_SRC) not in sys.path:  # so `import names` works without PYTHONPATH
    sys.path.insert(0, str(APP_SRC))
if str(APP_SRC.parent) not in sys.path:  # the project, for `tests.pg_server`
    sys.path.insert(1, str(APP_SRC.parent))

from sqlalchemy import text  # noqa: E402

from names import create_app  # noqa: E402
from names.models import db  # noqa: E402
from tests.pg_server import postgres_server, unused_port  # noqa: E402

APP_ENV = ("FLASK_CONFIG", "DATABASE_URL", "SECRET_KEY", "RELEASE_ID")


@pytest.fixture(scope="session")
def postgres_url():
    """Start a throwaway PostgreSQL cluster; yield the DATABASE_URL of an empty database."""
    with postgres_server("names_test", prefix="names-pg-") as url:
        yield url


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
