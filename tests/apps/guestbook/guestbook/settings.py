"""Configuration classes, chosen by GUESTBOOK_ENV; settings are read from the environment when
the app is created (not at import time)."""
import os


class BaseConfig:
    """Shared settings. GUESTBOOK_DB_URI is a full SQLAlchemy URL (postgresql+psycopg2://...)."""

    DEBUG = False
    TESTING = False
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    #: Environment variables this config refuses to start without.
    REQUIRED_ENV = ()
    DEFAULT_DB_URI = None
    DEFAULT_SECRET = None

    def __init__(self):
        missing = [var for var in self.REQUIRED_ENV if not os.environ.get(var)]
        if missing:
            raise RuntimeError(f"{type(self).__name__} needs {', '.join(missing)} in the environment")
        self.SQLALCHEMY_DATABASE_URI = os.environ.get("GUESTBOOK_DB_URI") or self.DEFAULT_DB_URI
        self.SECRET_KEY = os.environ.get("GUESTBOOK_SECRET") or self.DEFAULT_SECRET
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}
        self.SITE_TITLE = os.environ.get("SITE_TITLE") or "Guestbook"
        self.RELEASE = os.environ.get("DROPSHIP_RELEASE", "")


class ProductionConfig(BaseConfig):
    REQUIRED_ENV = ("GUESTBOOK_DB_URI", "GUESTBOOK_SECRET")


class DevelopmentConfig(BaseConfig):
    DEBUG = True
    DEFAULT_DB_URI = "postgresql+psycopg2:///guestbook"
    DEFAULT_SECRET = "dev-not-secret"


CONFIGS = {"production": ProductionConfig, "development": DevelopmentConfig}


def config_for(name=None):
    """The config object for ``name``, else $GUESTBOOK_ENV, else production."""
    name = name or os.environ.get("GUESTBOOK_ENV") or "production"
    try:
        return CONFIGS[name]()
    except KeyError:
        raise ValueError(f"GUESTBOOK_ENV={name!r} is not a config: use one of {', '.join(CONFIGS)}") from None
