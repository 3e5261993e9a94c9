"""`invoke rollback --with-db` against a real local droplet (base, postgres, nginx, app) over SSH and HTTP.

The app is a small Flask-Migrate app of its own ("notes", written here into a git repository):
v1 has ``note(id, title, body)``; v2's migration DROPS ``body``. Rolling v2 back with --with-db
brings the column and its data back (the dump taken when v1 was left); with that dump gone, the
Alembic downgrade brings the column back (empty). Without --yes and no terminal, nothing is touched.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support import (APP_SOURCE, DEFAULTS, INVOKE, AppRepo, Sandbox, droplet_spec, http_base, last_json,
                           run_name, ssh_script)

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "nginx", "app"]
DB = "notes"
DUMPS = f"/var/backups/dropship/{DB}"
BODIES = ["plain", "it's \"quoted\"; $(touch /tmp/pwned) `id`", "ünïcødé ✓"]

WSGI = '''"""notes: GET /notes lists every column of every note; POST /notes adds one (raw SQL)."""
import os

from flask import Flask, jsonify, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

COLUMNS = {columns!r}

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
db = SQLAlchemy(app)
Migrate(app, db)


@app.get("/healthz")
def health():
    return "ok"


@app.get("/notes")
def notes():
    rows = db.session.execute(text("select * from note order by id")).mappings().all()
    return jsonify(version={version!r}, notes=[dict(r) for r in rows])


@app.post("/notes")
def add():
    values = {{c: request.form[c] for c in COLUMNS}}
    db.session.execute(text(f"insert into note ({{', '.join(COLUMNS)}}) values "
                            f"({{', '.join(':' + c for c in COLUMNS)}})"), values)
    db.session.commit()
    return "added", 201
'''

CREATE = '''"""create note
Revision ID: 0001notes
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001notes"
down_revision = None


def upgrade():
    op.create_table("note", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("title", sa.Text, nullable=False), sa.Column("body", sa.Text))


def downgrade():
    op.drop_table("note")
'''

DROP = '''"""drop note.body
Revision ID: 0002dropbody
Revises: 0001notes
"""
import sqlalchemy as sa
from alembic import op

revision = "0002dropbody"
down_revision = "0001notes"


def upgrade():
    op.drop_column("note", "body")


def downgrade():
    op.add_column("note", sa.Column("body", sa.Text))
'''


class NotesRepo(AppRepo):
    @classmethod
    def create(cls, dest: Path) -> "NotesRepo":
        (dest / "migrations" / "versions").mkdir(parents=True)
        for name in ("alembic.ini", "env.py", "script.py.mako"):
            shutil.copy(APP_SOURCE / "migrations" / name, dest / "migrations" / name)
        shutil.copy(APP_SOURCE / "requirements.txt", dest / "requirements.txt")
        (dest / "migrations" / "versions" / "0001_create_note.py").write_text(CREATE)
        (dest / "wsgi.py").write_text(WSGI.format(columns=("title", "body"), version="v1"))
        repo = cls(dest)
        repo.git("init", "-q", "-b", "main")
        repo.commit("notes v1")
        return repo

    def drop_body(self, version: str) -> None:
        (self.root / "migrations" / "versions" / "0002_drop_body.py").write_text(DROP)
        (self.root / "wsgi.py").write_text(WSGI.format(columns=("title",), version=version))
        self.commit(version)


def notes_settings(source: Path) -> dict:
    return {"name": "notes", "source": str(source), "wsgi": "wsgi:app", "requirements": "requirements.txt",
            "release_command": "flask --app wsgi db upgrade", "health_path": "/healthz", "keep_releases": 3,
            "database": {"name": DB, "user": "notes", "password": {"secret": "notes_db_password"},
                         "driver": "psycopg2"}}


def write_inventory(box: Sandbox, source: Path, **app: str) -> None:
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, warm=True)]}},
              defaults={**{k: v for k, v in DEFAULTS.items() if k != "app"}, "app": notes_settings(source) | app})


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    root = tmp_path_factory.mktemp("db-rollback")
    repo = NotesRepo.create(root / "app")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    write_inventory(box, repo.root)
    try:
        box.create_and_provision()
        yield box, repo
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")


def get(box: Sandbox) -> dict:
    with urllib.request.urlopen(http_base(box) + "/notes", timeout=10) as resp:      # through nginx
        return json.loads(resp.read())


def post(box: Sandbox, **form: str) -> None:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(http_base(box) + "/notes", data=data, timeout=10) as resp:
        assert resp.status == 201


def deploy(box: Sandbox) -> str:
    proc = box.invoke("deploy", "--env", box.env, "--json", timeout=1200)
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    return report["release"]


def on_host(box: Sandbox, script: str) -> str:
    return ssh_script(box, script)


def rollback_with_db(box: Sandbox, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = box.invoke("rollback", "--env", box.env, "--with-db", "--yes", "--json", *args, timeout=900)
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, report


def test_dropped_column_and_its_data_come_back_from_the_dump(notes):
    box, repo = notes
    v1 = deploy(box)
    for i, body in enumerate(BODIES):
        post(box, title=f"note {i}", body=body)
    repo.drop_body("v2")
    v2 = deploy(box)
    page = get(box)
    assert page["version"] == "v2" and all("body" not in n for n in page["notes"])
    post(box, title="written under v2")                 # after the dump: lost by the rollback, and said so
    # `releases` shows what a database rollback to each release would use.
    rows = {r["id"]: r for r in last_json(box.invoke("releases", "--env", box.env, "--json", check=True))["web-1"]}
    assert rows[v1]["db_revision"] == "0001notes" and f"pre-{v2}.dump" in rows[v1]["db_dump"], rows
    assert (rows[v2]["db_revision"], rows[v2]["db_dump"]) == ("0002dropbody", ""), rows

    # Without --yes and no terminal: one line, nothing touched.
    audit_before = on_host(box, "cat /srv/notes/audit.log 2>/dev/null; ls /var/backups/dropship/notes")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"DROPSHIP_INVENTORY": str(box.inventory)}
    refused = subprocess.run(INVOKE + ["rollback", "--env", box.env, "--with-db"], cwd=box.root, env=env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in (refused.stdout + refused.stderr).splitlines() if ln.strip()]
    assert refused.returncode != 0 and len(lines) == 1 and "pass --yes" in lines[0], lines
    assert "Traceback" not in refused.stderr
    assert on_host(box, "cat /srv/notes/audit.log 2>/dev/null; ls /var/backups/dropship/notes") == audit_before
    assert get(box)["version"] == "v2"

    proc, report = rollback_with_db(box, "--to", v1)
    [said] = report["database"]
    assert f"pre-{v2}.dump" in said and "(method dump)" in said and f"writes to {DB} since" in said, said
    page = get(box)
    assert page["version"] == "v1"
    assert [(n["title"], n["body"]) for n in page["notes"]] == [(f"note {i}", b) for i, b in enumerate(BODIES)]
    safety = on_host(box, f"ls {DUMPS}/rollback-safety-*.dump").split()
    assert len(safety) == 1 and safety[0] in said
    # The safety dump holds the state just before the rollback: v2's schema and the note written under v2.
    listing = on_host(box, f"runuser -u postgres -- pg_restore -f - < {safety[0]} | grep -c 'written under v2'")
    assert listing.strip() == "1"
    assert on_host(box, "tail -n 1 /srv/notes/audit.log").strip().endswith(f"rollback --with-db {v1} ok")


def test_downgrade_when_the_dump_is_gone(notes):
    box, repo = notes
    repo.drop_body("v3")
    v3 = deploy(box)                                    # v1 -> v3 drops body again
    page = get(box)
    assert page["version"] == "v3" and all("body" not in n for n in page["notes"])
    on_host(box, f"rm {DUMPS}/pre-{v3}.dump")

    # A downgrade that fails after the safety dump: one line naming it and how to restore; v3 still serves.
    write_inventory(box, repo.root, db_rollback_command="echo downgrade {revision} failed; false")
    proc = box.invoke("rollback", "--env", box.env, "--with-db", "--yes", "--json")
    error = last_json(proc)["hosts"]["web-1"]["error"]
    safety = on_host(box, f"ls -t {DUMPS}/rollback-safety-*.dump | head -n 1").strip()
    assert proc.returncode != 0 and "\n" not in error and "downgrade 0001notes failed" in error, error
    assert f"safety dump {safety}" in error and f"invoke db.restore --env {box.env} --file {safety.split('/')[-1]}" \
        in error, error
    assert get(box)["version"] == "v3"
    write_inventory(box, repo.root)

    proc, report = rollback_with_db(box)                # the previous release: v1
    [said] = report["database"]
    assert "(method downgrade)" in said and "revision 0001notes" in said, said
    page = get(box)
    assert page["version"] == "v1"
    assert [n["title"] for n in page["notes"]][:3] == [f"note {i}" for i in range(3)]
    assert all("body" in n for n in page["notes"])       # the column is back (Alembic cannot bring its data)
    assert on_host(box, f"runuser -u postgres -- psql -d {DB} -Atc 'select version_num from alembic_version'"
                   ).strip() == "0001notes"
    post(box, title="after the downgrade", body="v1 writes again")
    assert get(box)["notes"][-1]["body"] == "v1 writes again"

    # A method that does not exist for the target (v3 was never left by a deploy: no dump) -> refused.
    proc = box.invoke("rollback", "--env", box.env, "--with-db", "--yes", "--db-method", "dump", "--to", v3)
    assert proc.returncode != 0 and "is not kept" in proc.stdout + proc.stderr and get(box)["version"] == "v1"
