"""Web forms (Flask-WTF: each carries a CSRF token unless WTF_CSRF_ENABLED is off)."""
from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length, ValidationError

from .models import Name, db


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class NameForm(FlaskForm):
    name = StringField("What is your name?", filters=[_strip], validators=[DataRequired(), Length(1, 64)])
    submit = SubmitField("Submit")

    def validate_name(self, field):
        if db.session.scalar(db.select(Name.id).filter_by(name=field.data)) is not None:
            raise ValidationError("That name is already on the list.")
