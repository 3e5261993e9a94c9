"""The entries page with its form, and the about page."""
from flask import Blueprint, redirect, render_template, url_for

from .forms import EntryForm
from .models import Entry, db

bp = Blueprint("guestbook", __name__)


@bp.route("/", methods=["GET", "POST"])
def index():
    form = EntryForm()
    if form.validate_on_submit():
        db.session.add(Entry(author=form.author.data, message=form.message.data))
        db.session.commit()
        return redirect(url_for(".index"), code=303)
    entries = db.session.scalars(db.select(Entry).order_by(Entry.id.desc()).limit(100)).all()
    return render_template("index.html", form=form, entries=entries)


@bp.route("/about")
def about():
    return render_template("about.html")
