"""Configuration classes, one per environment, selected by name in create_app().

Settings that differ between hosts come from the environment and are read when the
app is created, not at import time.
"""
import os

from sqlalchemy.engine import make_url


def database_uri(url):
    """DATABASE_URL as SQLAlchemy wants it: plain postgres(ql):// URLs get the psycopg2 driver
    (SQLAlchemy 2.1 would otherwise pick psycopg 3, which is not installed)."""
    if url is None:
        return None
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


class Config:
    """Shared settings."""

    TESTING = False
    DEBUG = False
    WTF_CSRF_ENABLED = True
    #: Staging and production refuse to start without these set in the environment.
    REQUIRED_ENV = ()
    #: Used when DATABASE_URL is not set (only where it is not required).
    DEFAULT_DATABASE_URL = None
    DEFAULT_SECRET_KEY = None

    def __init__(self):
        missing = [var for var in self.REQUIRED_ENV if not os.environ.get(var)]
        if missing:
            raise RuntimeError(
                f"{type(self).__name__} needs the environment variable(s) {', '.join(missing)}: "
                "set them in the app's environment file"
            )
        self.SECRET_KEY = os.environ.get("SECRET_KEY") or self.DEFAULT_SECRET_KEY
        self.SQLALCHEMY_DATABASE_URI = database_uri(os.environ.get("DATABASE_URL") or self.DEFAULT_DATABASE_URL)
        # Drop dead pooled connections (e.g. after a Postgres restart); bound the connect time
        # so /healthz answers 503 quickly instead of hanging when the server is unreachable.
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}


class DevelopmentConfig(Config):
    DEBUG = True
    DEFAULT_DATABASE_URL = "postgresql:///names"
    DEFAULT_SECRET_KEY = "dev-not-secret"


class TestingConfig(Config):
    TESTING = True
    WTF_CSRF_ENABLED = False
    DEFAULT_DATABASE_URL = "postgresql:///names_test"
    DEFAULT_SECRET_KEY = "testing-not-secret"


class StagingConfig(Config):
    REQUIRED_ENV = ("SECRET_KEY", "DATABASE_URL")


class ProductionConfig(Config):
    REQUIRED_ENV = ("SECRET_KEY", "DATABASE_URL")


configs = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "staging": StagingConfig,
    "production": ProductionConfig,
}
