"""A guestbook: visitors sign it with a name and a message. Served as `guestbook:create_app()`."""
from flask import Flask
from flask_wtf.csrf import CSRFProtect

from .models import db
from .settings import config_for
from .version import LABEL

csrf = CSRFProtect()


def create_app(config_name=None):
    """Build the app for ``config_name``, else $GUESTBOOK_ENV, else "production"."""
    app = Flask(__name__)
    app.config.from_object(config_for(config_name))
    db.init_app(app)
    csrf.init_app(app)

    from .views import bp
    app.register_blueprint(bp)
    app.context_processor(lambda: {"version": LABEL, "title": app.config["SITE_TITLE"],
                                   "release": app.config["RELEASE"]})
    return app


__all__ = ["create_app", "db"]
