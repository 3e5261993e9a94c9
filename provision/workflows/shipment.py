"""The controller side of a deploy: the source at a ref, and what ships (files, manifest, info,
the release's environment). Nothing here touches a host."""
from __future__ import annotations

import getpass
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import release as rel
from ..engine.uv import project_dir
from ..errors import DropshipError
from ..inventory import AirflowSettings, AppSettings, SecretRef

DAG_EXCLUDE = (".git", "__pycache__", "*.pyc")


@dataclass
class Shipment:
    """A release ready to ship: id, files, manifest (controller side)."""

    id: str
    source: Path
    manifest: dict
    requirements: bytes
    info: dict = field(default_factory=dict)
    installs_source: bool = False     # the requirements install the source itself (`-e .`)

    def venv_digest(self, python: str) -> str:
        return rel.requirements_hash(self.requirements, python, self.id if self.installs_source else "")


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def checked_out(source: Path, ref: str | None):
    """The source folder as it is, or as it is at git ``ref`` (exported to a temp folder)."""
    if not ref:
        yield source, rel.git_sha(source)
        return
    if ref.startswith("-") or any(ch in ref for ch in "\0\n"):
        raise DropshipError(f"{ref!r} is not a git ref", "pass a branch, tag or commit")
    top = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True).stdout.strip()
    sha = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=8", f"{ref}^{{commit}}"],
                         capture_output=True, text=True).stdout.strip()
    if not top or not sha:
        raise DropshipError(f"unknown git ref {ref!r} for {source}", "pass a branch, tag or commit of that repository")
    inner = source.resolve().relative_to(Path(top).resolve())
    with tempfile.TemporaryDirectory(prefix="dropship-ref-") as tmp:
        archive = subprocess.run(["git", "-C", top, "archive", "--format=tar", f"{sha}:{inner}"], capture_output=True)
        if archive.returncode != 0:
            raise DropshipError(f"git archive of {ref} failed: {archive.stderr.decode().strip()}",
                                "check that app.source exists at that ref")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp), sha


def app_shipment(app: AppSettings, source: Path, sha: str, release_id: str | None = None) -> Shipment:
    req = source / app.requirements
    if not req.is_file():
        raise DropshipError(f"app {app.name}: {req} does not exist",
                            "set app.requirements to the requirements file inside app.source")
    rid = release_id or rel.release_id(sha)
    try:
        requirements, local = rel.requirements_text(source, app.requirements)
    except DropshipError as exc:
        raise DropshipError(f"app {app.name}: {exc.message}", exc.fix) from None
    project = project_dir(app.requirements)
    stale = rel.lock_out_of_date(source / project) if project is not None else None
    if stale:
        where = "" if project == "." else project + "/"
        fix = f"run `uv lock`{' in ' + project if where else ''} and commit uv.lock"
        if not rel.sets_requires_python(source / project / "pyproject.toml"):
            fix += ("; set project.requires-python in pyproject.toml too: without it uv locks for the Python "
                    "that runs it")
        raise DropshipError(f"app {app.name}: {where}uv.lock does not match {where}pyproject.toml ({stale})", fix)
    files = rel.manifest(source, app.exclude, app.shared_dirs, rel.git_files(source))
    if app.requirements not in files:
        raise DropshipError(f"app {app.name}: {app.requirements} would not ship: git ignores it or app.exclude "
                            "leaves it out", "commit it (remove it from .gitignore), or narrow app.exclude")
    return Shipment(rid, source, files, requirements, {"id": rid, "git": sha, "by": who(), "at": now()},
                    installs_source=local)


def dag_shipment(af: AirflowSettings, sha: str, release_id: str) -> Shipment:
    return Shipment(release_id, af.dags, rel.manifest(af.dags, DAG_EXCLUDE, listed=rel.git_files(af.dags)), b"",
                    {"id": release_id, "git": sha, "by": who(), "at": now()})


def app_environment(app: AppSettings, values: dict[str, str], release_id: str,
                    db_host: str = "127.0.0.1") -> list[tuple[str, str]]:
    """The release's .env: the database URL (under DATABASE_URL and ``url_env``; the database at
    ``db_host``), the secret key, the inventory's variables and the release id (DROPSHIP_RELEASE)."""
    out: list[tuple[str, str]] = []
    db = app.database
    if db:
        url = rel.database_url(db.user, values[db.password.name], db.name, host=db_host, driver=db.driver)
        out += [(name, url) for name in ("DATABASE_URL", *db.url_env)]
    if app.secret_key:
        out.append(("SECRET_KEY", values[app.secret_key.name]))
    for key, value in app.env:
        out.append((key, values[value.name] if isinstance(value, SecretRef) else value))
    out += [("DROPSHIP_RELEASE", release_id), ("RELEASE_ID", release_id)]
    return out
