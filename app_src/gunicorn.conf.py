"""Gunicorn settings, read from the working directory: `gunicorn wsgi:app`."""

# gunicorn >= 25.1 opens a control socket at ~/.gunicorn/gunicorn.ctl by default; two
# releases running side by side (zero-downtime switch) would fight over it.
control_socket_disable = True
accesslog = "-"
