"""Releases, pure: ids, the manifest of what ships, what changed since the live release, the
app's environment file, and the shell commands of each deploy step (as Kamal does: command
builders tested by their exact strings; the workflow only runs them)."""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .engine.files import File
from .engine.model import q
from .engine.nginx import reload_and_wait
from .engine.uv import (LOCK_STALE, SYSTEM_CAS, UV, UV_ENV, export_lock_command, install_args, lock_check_argv,
                        project_dir, seed_command,
                        seeded_venv_commands, venv_commands)
from .errors import DropshipError
from .transport.procstat import FIELD

MANIFEST = ".dropship-manifest.json"
INFO = ".dropship-release.json"
UNFINISHED = ".dropship-unfinished"     # in a release being prepared (its release command may not have run)
APP_SERVER = "gunicorn==27.0.1"         # added to a venv whose requirements do not install gunicorn
GUNICORN_ENV = ".gunicorn.env"          # in a venv: DROPSHIP_GUNICORN_FLAGS for the slot units


def git_sha(path: Path) -> str:
    """Short sha of the commit holding ``path`` (+ "-dirty" when it has local changes), or "nogit"."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        sha = git("rev-parse", "--short=8", "HEAD")
        if not sha:
            return "nogit"
        dirty = git("status", "--porcelain", "--", ".")
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "nogit"


RELEASE_ID = re.compile(r"\d{8}T\d{6}Z-(?:[0-9a-f]{8,40}(?:-dirty)?|nogit)")    # what release_id() makes


def release_id(sha: str, now: float | None = None) -> str:
    """``20261125T010203Z-1a2b3c4d``: sorts by time; says which commit."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time())) + f"-{sha}"


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(p, pat) for p in parts for pat in patterns)


def in_folder(path: str, folders: tuple[str, ...]) -> bool:
    """``path`` is one of ``folders`` or lies inside one (relative paths)."""
    return any(path == f or path.startswith(f + "/") for f in folders)


def git_files(source: Path) -> set[str] | None:
    """The files of ``source`` git would commit: tracked and new ones, none that ``.gitignore``,
    ``.git/info/exclude`` or the global excludes file ignores (a developer's ``venv/``, ``.env``, local
    database); paths relative to ``source``. None where ``source`` is not in a git work tree, or git
    lists nothing there (a folder the repository ignores whole): then everything ships. A submodule's
    files are listed by its own rules; a symlink to a folder lists what is in it (by the rules of the
    repository it is in, if any)."""
    try:
        proc = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                               "--", "."], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    files = {os.path.normpath(p) for p in os.fsdecode(proc.stdout).split("\0") if p} if proc.returncode == 0 else set()
    for sub in [p for p in files if (source / p).is_dir()]:
        files.discard(sub)
        inside = git_files(source / sub)
        files |= {f"{sub}/{p}" for p in (inside if inside is not None else
                                         (rel for rel, _ in _walk(source / sub, lambda _rel, _folder: True)))}
    return files or None


def _walk(source: Path, wanted) -> Iterator[tuple[str, str]]:
    """(relative path, full path) of each file under ``source`` that ``wanted(rel, folder)`` keeps, in
    order, symlinks followed (each real folder once, so a link to a parent cannot loop)."""
    walked: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in walked:
            dirnames[:] = []
            continue
        walked.add(real)
        rel_dir = os.path.relpath(dirpath, source)
        dirnames[:] = sorted(d for d in dirnames if wanted(os.path.normpath(os.path.join(rel_dir, d)), True))
        for name in sorted(filenames):
            rel, full = os.path.normpath(os.path.join(rel_dir, name)), os.path.join(dirpath, name)
            if wanted(rel, False) and os.path.isfile(full):
                yield rel, full


def manifest(source: Path, exclude: tuple[str, ...], shared_dirs: tuple[str, ...] = (),
             listed: set[str] | None = None) -> dict[str, list]:
    """``{relative path: [sha256, mode]}`` of every file that ships: of ``listed`` only (``git_files``)
    unless it is None, none ``exclude`` matches, none in a shared folder (the host's copy is the one
    that counts). What does not ship is not even read. Symlinks ship what they point at (a file's
    content, a folder's files: see ``_walk``); a dangling one ships nothing."""
    def wanted(rel: str, folder: bool) -> bool:
        if _excluded(rel, exclude) or in_folder(rel, shared_dirs):
            return False
        return listed is None or rel in (parents if folder else listed)

    parents = {str(d) for p in listed or () for d in Path(p).parents}
    out: dict[str, list] = {}
    for rel, full in _walk(source, wanted):
        with open(full, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        out[rel] = [digest, os.stat(full).st_mode & 0o777]
    return out


@dataclass(frozen=True)
class Upload:
    changed: list[str]     # new or different files
    removed: list[str]     # in the previous release, not in this one

    @property
    def empty(self) -> bool:
        return not self.changed and not self.removed


def diff(previous: dict[str, list] | None, current: dict[str, list]) -> Upload:
    previous = previous or {}
    return Upload(sorted(p for p, meta in current.items() if previous.get(p) != meta),
                  sorted(p for p in previous if p not in current))


def tarball(source: Path, paths: list[str]) -> bytes:
    """A gzip tar of ``paths`` (relative to ``source``, symlinks followed), owned by root, modes kept."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6, dereference=True) as tar:   # as the manifest
        for rel in paths:
            info = tar.gettarinfo(str(source / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = int(time.time())     # newer than any bytecode cached from the previous release
            with open(source / rel, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)")
# a requirement installing a path of the source: `.`, `-e .`, `./pkg`, `/abs`, `file:…`, `name @ file:…`
_LOCAL = re.compile(r"^\s*(?:(?:-e|--editable)(?:\s*=\s*|\s+))?(?:\.{1,2}(?:/|$|\[)|/|file:)|@\s*file:")


def requirements_text(source: Path, path: str) -> tuple[bytes, bool]:
    """The requirements file ``path`` of ``source`` and every file it includes (``-r``, ``-c``,
    relative to the including file), as one text to hash; and whether one of them installs a local
    path (``-e .``: the release's own code). A missing include is a DropshipError naming file and line.
    A ``pyproject.toml`` installs its project, pinned by the ``uv.lock`` beside it (hashed with it)."""
    folder = project_dir(path)
    if folder is not None:
        lock = source / folder / "uv.lock"
        return b"\0".join([path.encode(), (source / path).read_bytes(),
                           lock.read_bytes() if lock.is_file() else b""]), True
    out: list[bytes] = []
    local, seen = False, set()

    def read(rel_path: str) -> None:
        nonlocal local
        if rel_path in seen:
            return
        seen.add(rel_path)
        text = (source / rel_path).read_text(errors="replace")
        out.append(rel_path.encode() + b"\0" + text.encode() + b"\0")
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split(" #", 1)[0]
            include = _INCLUDE.match(line)
            if include and "://" not in include.group(1):
                target = os.path.normpath(os.path.join(os.path.dirname(rel_path), include.group(1)))
                if target.startswith("..") or os.path.isabs(target) or not (source / target).is_file():
                    raise DropshipError(f"{rel_path}:{n} includes {include.group(1)}, which is not a file of the "
                                        "app's source", "ship it with the source, or remove the line")
                read(target)
            elif _LOCAL.search(line):
                local = True

    read(path)
    return b"".join(out), local


def lock_out_of_date(project: Path) -> str | None:
    """uv's words when ``project``'s ``uv.lock`` no longer matches its ``pyproject.toml`` (``uv sync
    --locked`` would refuse it), else None. Checked here offline first, then against the index; where
    neither can tell (no Python here for its requires-python, no network), it is None: the hosts install
    the lock as it is."""
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if uv is None or not (project / "uv.lock").is_file():
        return None
    for offline in (True, False):
        try:
            done = subprocess.run(lock_check_argv(uv, offline), cwd=project, capture_output=True, text=True,
                                  timeout=300, env={**os.environ, "UV_NO_PROGRESS": "1"})
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            return None
        said = " ".join(done.stderr.strip().split("\n\n")[0].split())     # uv wraps its error at 80 columns
        if LOCK_STALE in said:
            return said
    return None


def sets_requires_python(pyproject: Path) -> bool:
    """Whether ``pyproject`` sets ``project.requires-python`` (an unreadable one counts as setting it)."""
    try:
        return "requires-python" in tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, ValueError, AttributeError):
        return True


def requirements_hash(requirements: bytes, python_version: str, release_id: str = "") -> str:
    """Virtualenvs are shared by every release with the same requirements and Python; requirements
    that install the release itself (``-e .`` links to its folder) make one per release."""
    own = b"\0" + release_id.encode() if release_id else b""
    return hashlib.sha256(requirements + b"\0" + python_version.encode() + own).hexdigest()[:16]


def env_file(values: list[tuple[str, str]]) -> bytes:
    """``KEY="value"`` lines that systemd's EnvironmentFile= and ``. ./.env`` in sh read the same:
    inside double quotes both take ``\\`` before ``"``, ``\\``, `` ` `` and ``$`` as escapes and keep
    newlines. A NUL cannot be passed (ValueError)."""
    lines = []
    for key, value in values:
        if "\0" in value:
            raise ValueError(f"{key}: a value cannot hold a NUL character")
        escaped = "".join("\\" + ch if ch in '"\\`$' else ch for ch in value)
        lines.append(f'{key}="{escaped}"')
    return ("\n".join(lines) + "\n").encode()


def database_url(user: str, password: str, name: str, host: str = "127.0.0.1", port: int = 5432,
                 driver: str = "") -> str:
    """A SQLAlchemy/libpq URL; ``driver`` picks SQLAlchemy's (``postgresql+psycopg2://``)."""
    from urllib.parse import quote

    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{quote(user)}:{quote(password, safe='')}@{host}:{port}/{quote(name)}"


# --- commands of the deploy steps (run in the host's root shell) ----------------------------------

def url_host_sed(key: str, quote: str = '"') -> str:
    """sed printing the host of the URL in the ``key=<quote>…`` lines of its input."""
    return f"sed -n 's/^{key}={quote}.*@\\([^:/@]*\\):[0-9]*\\/.*/\\1/p'"


def url_host_command(path: str, key: str) -> str:
    """The host of the URL in the ``key="…"`` line of ``path`` (nothing without one)."""
    return f"{url_host_sed(key)} {q(path)} 2>/dev/null; true"


def database_host_command(dotenv: str) -> str:
    """The host of the DATABASE_URL in the release's ``dotenv`` (nothing without one): where that
    release reads its database."""
    return url_host_command(dotenv, "DATABASE_URL")


def lock_command(lock_dir: str, holder: dict, wait: int = 0, ending: int = 20) -> str:
    """Take the lock atomically: a complete lock folder (``holder`` JSON, ``shell``: the root
    shell's pid and start time, ``session``: the same of its SSH session process) is renamed into
    place; only one rename wins. A lock whose root shell is gone is stale: it is renamed away (again
    only one run wins) and taken. A holder whose shell runs but whose SSH session is gone is a lost
    client's last step, being stopped on the host: it is waited for up to ``ending`` seconds (or
    ``wait`` if longer), a live holder up to ``wait`` seconds.

    Output, one line each: ``WAIT <seconds left> <holder json>`` about every second while a live
    holder is waited for, ``ENDING <seconds left> <holder json>`` while a lost client's step ends,
    ``STALE <holder json>`` when a stale lock is taken over; last ``LOCKED_BY_ME`` (exit 0), or
    ``LOCKED <holder json>`` (exit 3) when the holder outlasted the wait."""
    info, wait = json.dumps(holder), int(-(-wait // 1))
    return f"""
lock={q(lock_dir)}
mine="$lock.new.$$"
{FIELD}
alive() {{ [ -n "$1" ] && [ -n "$2" ] && field "$1" 1 && [ "$v" != Z ] && field "$1" 20 && [ "$v" = "$2" ]; }}
rm -rf "$mine"; mkdir -p "$mine"
printf '%s\\n' {q(info)} > "$mine/holder"
field $$ 20; echo "$$ $v" > "$mine/shell"
field $$ 2; p=$v
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  c=; {{ read -r c < "/proc/$p/comm"; }} 2>/dev/null
  case $c in sshd*) field "$p" 20; echo "$p $v" > "$mine/session"; break;; esac
  field "$p" 2; p=$v
done
t0=$(date +%s); tries=0
while [ "$tries" -lt 5 ]; do
  if mv -T "$mine" "$lock" 2>/dev/null; then echo LOCKED_BY_ME; exit 0; fi
  pid=""; start=""; spid=""; sstart=""
  {{ read -r pid start < "$lock/shell"; }} 2>/dev/null
  {{ read -r spid sstart < "$lock/session"; }} 2>/dev/null
  word=""
  if alive "$pid" "$start"; then
    word=WAIT; limit={wait}
    if [ -n "$spid" ] && ! alive "$spid" "$sstart"; then word=ENDING; [ "$limit" -ge {int(ending)} ] || limit={int(ending)}; fi
  elif [ -z "$pid" ] && [ -d "$lock" ] && [ -z "$(find "$lock" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then
    word=WAIT; limit={wait}     # no shell: made by hand just now
  fi
  if [ -n "$word" ]; then
    left=$((t0 + limit - $(date +%s)))
    [ "$left" -gt 0 ] || break
    echo "$word $left $(cat "$lock/holder" 2>/dev/null)"; sleep 1; continue
  fi
  tries=$((tries + 1))
  if mv -T "$lock" "$lock.stale.$$" 2>/dev/null; then
    echo "STALE $(cat "$lock.stale.$$/holder" 2>/dev/null)"; rm -rf "$lock.stale.$$"
  fi
done
rm -rf "$mine"; echo "LOCKED $(cat "$lock/holder" 2>/dev/null)"; exit 3
"""


def lock_holder_alive_command(lock_dir: str) -> str:
    """Exit 0 when the lock's root shell still runs (its step goes on after a lost connection)."""
    return (f"{{ read -r pid start < {q(lock_dir)}/shell; }} 2>/dev/null && [ -r /proc/$pid/stat ] && "
            f"[ \"$(cut -d' ' -f22 /proc/$pid/stat)\" = \"$start\" ]")


def unlock_command(lock_dir: str) -> str:
    return f"rm -rf {q(lock_dir)}"


def upload_command(releases: str, new: str, previous: str | None, upload: Upload, tar: bytes,
                   manifest_json: bytes, info_json: bytes, data: str = "") -> str:
    """Hard-link the previous release (rsync --link-dest's trick), then replace what changed. Its
    links into the shared folders under ``data`` go first: nothing is written through them."""
    target = f"{releases}/{new}"
    lines = [f"rm -rf {q(target)}.partial"]
    if previous:
        lines.append(f"cp -al {q(releases + '/' + previous)} {q(target)}.partial")
        if data:
            lines.append(f"find {q(target)}.partial -type l -lname {q(data + '/*')} -delete")
        lines.append(f"rm -f {q(target)}.partial/.env")
        lines.append(f"rm -f {q(target)}.partial/.dropship-db-*")     # the previous release's database record
        # Bytecode cached by the previous release must not stand in for changed sources.
        lines.append(f"find {q(target)}.partial -name __pycache__ -type d -prune -exec rm -rf {{}} +")
    else:
        lines.append(f"mkdir -p {q(target)}.partial")
    for rel in upload.removed:
        lines.append(f"rm -f {q(target + '.partial/' + rel)}")
    if upload.changed:
        lines += [f"base64 -d <<'DROPSHIP_EOF' | tar -xz --unlink-first --no-same-owner -C {q(target)}.partial",
                  base64.encodebytes(tar).decode().rstrip("\n"), "DROPSHIP_EOF"]
    for name, data in ((MANIFEST, manifest_json), (INFO, info_json)):
        lines += [f"rm -f {q(target)}.partial/{name}",
                  f"base64 -d > {q(target)}.partial/{name} <<'DROPSHIP_EOF'",
                  base64.encodebytes(data).decode().rstrip("\n"), "DROPSHIP_EOF"]
    # A release of the same id that never went live (a killed deploy of this commit in the same
    # second) is replaced; the workflow refuses an id that is in a slot before it gets here.
    lines.append(f"rm -rf {q(target)}")
    lines.append(f"mv -T {q(target)}.partial {q(target)}")
    return "\n".join(lines)


def shared_dirs_command(release_dir: str, data: str, shared_dirs: tuple[str, ...], user: str) -> str:
    """Link each shared folder of the release to its folder under ``data`` (Capistrano's linked_dirs),
    made the app user's when missing: what the app writes there outlives its releases."""
    lines, made = [], set()
    for path in shared_dirs:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if sub not in made:
                made.add(sub)
                folder = q(f"{data}/{sub}")
                lines.append(f"[ -d {folder} ] || install -d -o {q(user)} -g {q(user)} -m 0750 {folder}")
        if len(parts) > 1:
            lines.append(f"mkdir -p {q(release_dir + '/' + '/'.join(parts[:-1]))}")
        lines.append(f"rm -rf {q(release_dir + '/' + path)}")
        lines.append(f"ln -s {q(data + '/' + path)} {q(release_dir + '/' + path)}")
    return "\n".join([f"install -d -m 0755 {q(data)}"] + lines) if lines else ""


def app_server_command(venv: str) -> str:
    """Make ``venv`` able to serve: gunicorn ``APP_SERVER`` added when the requirements did not install
    one (apps written elsewhere seldom list it), then ``GUNICORN_ENV`` written with the flags the slot
    units pass: ``--no-control-socket`` where that gunicorn has it (25.1 on; both slots of an app
    would share one control socket), none for an older one an app pins. Exits 1 when it cannot."""
    v = q(venv)
    return f"""if [ ! -x {v}/bin/gunicorn ]; then
  if [ -x {UV} ]; then {UV_ENV} {UV} pip install -q --compile-bytecode --python {v}/bin/python {APP_SERVER}
  else PIP_CERT={SYSTEM_CAS} {v}/bin/pip install --disable-pip-version-check -q {APP_SERVER}
  fi || exit 1
fi
flags=; grep -qs -e --no-control-socket {v}/lib/python3*/site-packages/gunicorn/config.py && flags=--no-control-socket
echo "DROPSHIP_GUNICORN_FLAGS=$flags" > {v}/{GUNICORN_ENV}"""


def venv_command(venvs: str, digest: str, release_dir: str, requirements: str) -> str:
    """Build the virtualenv once per requirements hash with uv (pip where provision has not installed
    uv yet): from the newest venv when there is one, so that only what changed is installed (any
    failure there, silent, falls back to a new venv); marked complete only when the install
    succeeded, a half-built one is removed. Bytecode is compiled as root, once: the venv's (an older
    venv's on its next use) and the release's, whose files its user cannot write to (a source that
    does not compile is the health check's to report). A venv without ``GUNICORN_ENV`` (new: a seed's
    is removed; or made before it existed) gets ``app_server_command``. It runs in the release, where
    a requirement's relative path (``-e .``) points."""
    venv, req = f"{venvs}/{digest}", f"{release_dir}/{requirements}"
    lock = export_lock_command(req)
    return f"""
cd {q(release_dir)} || exit 1
{lock + chr(10) if lock else ""}if [ ! -e {q(venv)}/.complete ]; then
  rm -rf {q(venv)}
  ok=
  if [ -x {UV} ]; then
    {seed_command(venvs).replace(chr(10), chr(10) + "    ")}
    if [ -n "$seed" ] && ({seeded_venv_commands('"$seed"', venv, req)}) >/dev/null 2>&1; then
      ok=1
    else
      rm -rf {q(venv)}
      {venv_commands(venv, req)} && ok=1
    fi
  else
    python3 -m venv {q(venv)} && PIP_CERT={SYSTEM_CAS} {q(venv)}/bin/pip install --disable-pip-version-check -q \\
      {install_args(req)} && ok=1
  fi
  if [ -n "$ok" ]; then
    rm -f {q(venv)}/{GUNICORN_ENV}
    touch {q(venv)}/.bytecode {q(venv)}/.complete
    echo BUILT
  else
    rm -rf {q(venv)}
    echo "installing {requirements} failed (see above)"
    exit 1
  fi
elif [ ! -e {q(venv)}/.bytecode ]; then
  {q(venv)}/bin/python -m compileall -q -j 0 {q(venv)}/lib >/dev/null 2>&1
  touch {q(venv)}/.bytecode
fi
[ -e {q(venv)}/{GUNICORN_ENV} ] || (
{app_server_command(venv)}
) || {{ echo "adding {APP_SERVER} failed (see above)"; exit 1; }}
ln -sfn {q(venv)} {q(release_dir)}/.venv
{q(venv)}/bin/python -m compileall -q --invalidation-mode checked-hash {q(release_dir)} >/dev/null 2>&1
true
"""


def cleanup_command(releases: str, keep: list[str]) -> str:
    """Remove releases a killed or failed deploy left half made (no .env, or still marked
    ``UNFINISHED``), except those in slots."""
    keep_pattern = "|".join(k for k in keep if k) or "-"
    return f"""
cd {q(releases)} 2>/dev/null || exit 0
for r in *; do
  [ -d "$r" ] || continue
  case "$r" in {keep_pattern}) continue ;; esac
  case "$r" in *.partial) rm -rf "$r"; continue ;; esac
  [ -e "$r/.env" ] && [ ! -e "$r/{UNFINISHED}" ] || {{ rm -rf "$r"; echo "removed unfinished $r"; }}
done
true
"""


def unfinished_command(release_dir: str, done: bool = False) -> str:
    """Mark a release as being prepared, or (``done``) as ready to start: its release command ran."""
    return f"{'rm -f' if done else 'touch'} {q(release_dir + '/' + UNFINISHED)}"


def write_file_command(path: str, content: bytes, owner: str, mode: int) -> str:
    """The engine's atomic write (temp file beside the target, owner and mode, rename)."""
    return "\n".join(File(path, content, owner, owner, mode).write_commands())


def release_command(release_dir: str, user: str, command: str) -> str:
    """Run the release command (migrations) as the app user with the release's environment."""
    return (f"cd {q(release_dir)} && export USER={q(user)} LOGNAME={q(user)} && set -a && . ./.env && set +a && "
            f"PATH={q(release_dir)}/.venv/bin:$PATH HOME=/tmp "
            f"setpriv --reuid={q(user)} --regid={q(user)} --init-groups sh -c {q(command)}")


def start_slot_command(slots: str, slot: str, release: str, unit: str) -> str:
    """Point ``slot`` at ``release`` and (re)start its unit; enabled once (enabling reloads systemd)."""
    link = f"{slots}/{slot}"
    return (f"ln -sfn ../releases/{q(release)} {q(link)}.new && mv -T {q(link)}.new {q(link)}\n"
            f"systemctl is-enabled -q {q(unit)} 2>/dev/null || systemctl enable -q {q(unit)} 2>/dev/null || true\n"
            f"systemctl restart {q(unit)}")


def stop_slot_command(unit: str) -> str:
    """Have systemd stop ``unit`` without waiting for it (a later start or restart waits)."""
    return f"systemctl stop --no-block {q(unit)}"


# The gist of a crashed app's log: its first three distinct lines that are not blank, indented
# (traceback frames), gunicorn's [INFO] or a worker's exit, a traceback's header or systemd's
# starting, stopping and restarting; without gunicorn's time and pid.
LOG_GIST = ("grep -v -e '^[[:space:]]*$' -e '^[[:space:]]' -e '\\[INFO\\]' -e 'Worker (pid:[0-9]*) exited' "
            "-e '^Traceback (most recent call last)' -e '^During handling of the above exception' "
            "-e '^The above exception was the direct cause' -e '^Started ' -e '^Stopping ' -e '^Stopped ' "
            "-e ': Scheduled restart job' -e ': Deactivated successfully' -e ': Failed with result' -e ': Consumed ' | "
            "sed 's/^\\[[^]]*\\] \\[[0-9]*\\] //' | awk '!seen[$0]++' | head -n 3")


def health_command(url: str, expect_status: tuple[int, ...] = (), expect_text: str = "", seconds: int = 30,
                   host: str = "", unit: str = "") -> str:
    """Wait until ``url`` answers with an expected status (default any 2xx or 3xx) and, when given,
    a body holding ``expect_text``; else say what was expected and what came back, and exit 1.
    ``host``: the Host header sent (the server name of an app behind a load balancer). ``unit``: the
    service answering there; the wait ends early once systemd has restarted it twice (it keeps
    exiting), and a failure first prints the gist of its own log since the gate began (from the
    start of the run then: a restart may just have begun a run that printed nothing yet)."""
    codes = "|".join(str(c) for c in expect_status) or "2??|3??"
    want = "HTTP " + ("/".join(str(c) for c in expect_status) or "2xx/3xx") + \
        (f" with {expect_text!r} in the body" if expect_text else "")
    ok = "echo HEALTHY; exit 0"
    header = f"-H {q('Host: ' + host)} " if host else ""
    if expect_text:
        ok = f'grep -qF -e {q(expect_text)} "$d/body" && {{ {ok}; }}'
    restarts = f"systemctl show -p NRestarts --value {q(unit)} 2>/dev/null"
    watch, crashed, log = "", "", ""
    if unit:
        watch = f"\n  [ $((i % 10)) -eq 9 ] && n=$({restarts}) && [ \"${{n:-0}}\" -ge $((${{n0:-0}} + 2)) ] && break"
        crashed = (f"n0=$({restarts}); n=\n"
                   f"since=$(systemctl show -p ExecMainStartTimestamp --value {q(unit)} 2>/dev/null)\n")
        log = (f'[ -n "$since" ] && journalctl -u {q(unit)} --since "$since" -o cat --no-pager 2>/dev/null | '
               f"{LOG_GIST} | sed 's/^/log: /'\n"
               f'[ -n "$n" ] && [ "$n" -ge $((${{n0:-0}} + 2)) ] && code="none (the service keeps exiting)"\n')
    # Two processes a try (curl, sleep), the answer kept in a folder of its own: the gate shares the
    # CPUs with the app it waits for.
    return f"""
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
{crashed}i=0; code=""
while [ $i -lt {seconds * 10} ]; do
  : > "$d/body"; code=$(curl -sS --max-time 2 -o "$d/body" -w '%{{http_code}}' {header}{q(url)} 2>"$d/err")
  case "$code" in {codes}) {ok} ;; esac{watch}
  i=$((i + 1)); sleep 0.1
done
got=$(cat "$d/body" "$d/err" 2>/dev/null | head -c 200 | tr -s '\\r\\n\\t' '   ')
{log}printf 'expected %s from %s within %s s; got HTTP %s: %s\\n' {q(want)} {q(url)} {seconds} "${{code:-none}}" \\
  "${{got:-no response}}"
exit 1
"""


def state_command(root: str, links: tuple[str, ...], live_file: str = "", python: bool = False,
                  marks: tuple[str, ...] = ()) -> str:
    """Print a release store's state (read-only): ``absent`` when ``root`` is missing; else
    ``live=<slot>`` (with ``live_file``), ``link <link>=<release>`` and ``manifest <link> <json>`` for
    each link, ``python=<version>`` (with ``python``), ``release <id> <info json>`` for each
    finished release, and ``mark <id> <file> <first line>`` for each of its ``marks`` files present.
    ``parse_state`` reads it."""
    lines = [f"cd {q(root)} 2>/dev/null || {{ echo absent; exit 0; }}"]
    if live_file:
        lines.append(f"echo \"live=$(cat {q(live_file)} 2>/dev/null)\"")
    lines.append(f"for l in {' '.join(q(link) for link in links)}; do")
    lines.append('  t=$(readlink "$l" 2>/dev/null); echo "link $l=${t##*/}"')
    lines.append(f'  [ -n "$t" ] && [ -f "$l/{MANIFEST}" ] && echo "manifest $l $(cat "$l/{MANIFEST}")"')
    lines.append("done")
    if python:
        lines.append("echo \"python=$(python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)\"")
    lines.append("for r in releases/*; do")
    lines.append('  [ -d "$r" ] || continue; case "$r" in *.partial) continue ;; esac')
    lines.append(f'  [ -e "$r/{UNFINISHED}" ] && continue')
    lines.append(f'  echo "release ${{r#releases/}} $(cat "$r/{INFO}" 2>/dev/null)"')
    for mark in marks:
        lines.append(f'  [ -f "$r/{mark}" ] && echo "mark ${{r#releases/}} {mark} $(head -n 1 "$r/{mark}")"')
    lines.append("done")
    lines.append("true")
    return "\n".join(lines) + "\n"


@dataclass
class StoreState:
    """What ``state_command`` printed: which release each link points at, and the releases kept."""

    present: bool = True
    live: str | None = None
    links: dict[str, str | None] = field(default_factory=dict)
    manifests: dict[str, dict] = field(default_factory=dict)
    releases: list[str] = field(default_factory=list)
    info: dict[str, dict] = field(default_factory=dict)
    python: str = ""
    marks: dict[str, dict[str, str]] = field(default_factory=dict)    # {release: {file: first line}}


def parse_state(output: str) -> StoreState:
    state = StoreState()
    for line in output.splitlines():
        if line == "absent":
            state.present = False
        elif line.startswith("live="):
            state.live = line[5:] or None
        elif line.startswith("link "):
            link, _, target = line[5:].partition("=")
            state.links[link] = target or None
        elif line.startswith("manifest "):
            link, _, data = line[9:].partition(" ")
            state.manifests[link] = _json_or(data, None)
        elif line.startswith("python="):
            state.python = line[7:]
        elif line.startswith("release "):
            rid, _, data = line[8:].partition(" ")
            state.releases.append(rid)
            state.info[rid] = _json_or(data, {}) or {}
        elif line.startswith("mark "):
            rid, _, rest = line[5:].partition(" ")
            name, _, value = rest.partition(" ")
            state.marks.setdefault(rid, {})[name] = value
    state.releases.sort()
    return state


def _json_or(text: str, default):
    try:
        return json.loads(text) if text.strip() else default
    except ValueError:
        return default


def nginx_swap_command(path: str, content: bytes, what: str) -> str:
    """Replace the nginx file ``path`` atomically, `nginx -t` (the old file back when it fails: ``what``
    undone), then a graceful reload that waits for the old workers."""
    return f"""cp -p {q(path)} {q(path)}.prev 2>/dev/null || true
{write_file_command(path, content, 'root', 0o644)}
if ! nginx -t -q; then mv -f {q(path)}.prev {q(path)}; echo "nginx -t failed: {what} undone"; exit 1; fi
{reload_and_wait()}
rm -f {q(path)}.prev"""


def switch_command(upstream_file: str, upstream: bytes, live_file: str, slot: str) -> str:
    """Point nginx at ``slot`` (atomic file swap, `nginx -t`, graceful reload), then record it."""
    return f"""
{nginx_swap_command(upstream_file, upstream, "switch")}
echo {q(slot)} > {q(live_file)}.new && mv -f {q(live_file)}.new {q(live_file)}
"""


def audit_command(audit_log: str, line: str) -> str:
    return f"printf '%s\\n' {q(line)} >> {q(audit_log)}"


def prune_venvs_command(releases: str, venvs: str) -> str:
    """Remove the virtualenvs in ``venvs`` that no release left in ``releases`` links to (run after
    the releases are pruned, under the deploy lock: the new release already links to its own);
    none when no release links to any."""
    return f"""
cd {q(venvs)} 2>/dev/null || exit 0
used=$(for l in {q(releases)}/*/.venv; do readlink "$l"; done 2>/dev/null)
[ -n "$used" ] || exit 0
for v in *; do
  [ -d "$v" ] || continue
  printf '%s\\n' "$used" | grep -qxF -e {q(venvs)}/"$v" || {{ rm -rf "$v" && echo "pruned venv $v"; }}
done
true
"""


def prune_command(releases: str, keep: list[str], count: int, dumps: str = "") -> str:
    """Remove releases beyond the newest ``count``, never one in ``keep`` (slots); with ``dumps``,
    also the dump (in that folder) each pruned release would be rolled back with."""
    keep_pattern = "|".join(k for k in keep if k) or "-"
    dump = (f'  l=$(cat "$r/.dropship-db-left" 2>/dev/null); case "$l" in *.dump) [ $n -gt {count} ] && '
            f'rm -f {q(dumps)}/"${{l##*/}}" ;; esac\n') if dumps else ""
    return f"""
cd {q(releases)} || exit 0
n=0
for r in $(ls -1 | grep -v '\\.partial$' | sort -r); do
  n=$((n + 1))
  case "$r" in {keep_pattern}) continue ;; esac
{dump}  [ $n -gt {count} ] && rm -rf "$r" && echo "pruned $r"
done
true
"""
