"""The app's pages: the names form and list, and a health check for deploys."""
import os

from flask import Blueprint, current_app, redirect, render_template, url_for
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .forms import NameForm
from .models import Name, db

bp = Blueprint("names", __name__)


@bp.route("/", methods=["GET", "POST"])
def index():
    """Show the form and every stored name; on a valid POST store the name and redirect."""
    form = NameForm()
    if form.validate_on_submit():
        db.session.add(Name(name=form.name.data))
        try:
            db.session.commit()
        except IntegrityError:  # the same name, sent twice at once
            db.session.rollback()
            form.name.errors.append("That name is already on the list.")
        else:
            return redirect(url_for("names.index"))
    names = db.session.scalars(db.select(Name).order_by(Name.id)).all()
    return render_template("index.html", form=form, names=names)


@bp.get("/healthz")
def healthz():
    """200 when the database answers, else 503; both name the running release."""
    release = os.environ.get("RELEASE_ID", "dev")
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        current_app.logger.warning("health check: database unreachable: %s", exc)
        return {"status": "error", "release": release, "error": "database unreachable"}, 503
    return {"status": "ok", "release": release}
