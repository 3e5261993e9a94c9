"""The names app: a form that stores names in PostgreSQL and lists them."""
import os

from flask import Flask
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

from .config import configs
from .models import db

migrate = Migrate()
csrf = CSRFProtect()

#: app_src/migrations, found from any working directory.
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def create_app(config_name=None):
    """Build the app for `config_name`, else $FLASK_CONFIG, else "production"."""
    config_name = config_name or os.environ.get("FLASK_CONFIG") or "production"
    try:
        config_class = configs[config_name]
    except KeyError:
        raise ValueError(f"unknown config {config_name!r}: use one of {', '.join(configs)}") from None

    app = Flask(__name__)
    app.config.from_object(config_class())

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    csrf.init_app(app)

    from .views import bp
    app.register_blueprint(bp)
    return app
