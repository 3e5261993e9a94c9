"""Create the guestbook's tables (the release command); tables that exist are left as they are."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from bin/

from guestbook import create_app, db  # noqa: E402

with create_app().app_context():
    db.create_all()
    print("tables ready:", ", ".join(sorted(db.metadata.tables)))
