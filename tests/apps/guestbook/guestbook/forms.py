"""The signing form (Flask-WTF: it carries a CSRF token)."""
from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class EntryForm(FlaskForm):
    author = StringField("Your name", filters=[_strip], validators=[DataRequired(), Length(max=80)])
    message = TextAreaField("Message", filters=[_strip], validators=[DataRequired(), Length(max=2000)])
    submit = SubmitField("Sign")
