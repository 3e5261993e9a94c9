"""Choosing a config, and failing fast when a deployed config lacks its settings."""
import pytest

from names import create_app
from names.config import database_uri


def test_config_from_argument_env_or_production(monkeypatch):
    assert create_app("testing").testing
    monkeypatch.setenv("FLASK_CONFIG", "development")
    assert create_app().debug
    monkeypatch.delenv("FLASK_CONFIG")
    with pytest.raises(RuntimeError, match="ProductionConfig needs .*SECRET_KEY"):
        create_app()  # no name, no FLASK_CONFIG: production


def test_unknown_config_name():
    with pytest.raises(ValueError, match="unknown config 'prod'"):
        create_app("prod")


@pytest.mark.parametrize("name", ["staging", "production"])
def test_secret_key_required_when_deployed(monkeypatch, name):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/names")
    with pytest.raises(RuntimeError, match=r"needs the environment variable\(s\) SECRET_KEY"):
        create_app(name)
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    app = create_app(name)
    assert app.config["SECRET_KEY"] == "s3cret" and app.config["WTF_CSRF_ENABLED"]


def test_database_url_required_in_production(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        create_app("production")


def test_csrf_off_only_in_testing():
    assert not create_app("testing").config["WTF_CSRF_ENABLED"]
    assert create_app("development").config["WTF_CSRF_ENABLED"]


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:p%40ss@db:5432/names", "postgresql+psycopg2://u:p%40ss@db:5432/names"),
    ("postgres://u@db/names", "postgresql+psycopg2://u@db/names"),
    ("postgresql+psycopg2://u@db/names", "postgresql+psycopg2://u@db/names"),
    ("sqlite://", "sqlite://"),
])
def test_database_uri_uses_psycopg2(url, expected):
    assert database_uri(url) == expected
