"""Scheduled, encrypted backups: run one now, list them (on the host and off-site, with the last run's
outcome), and restore one: downloaded through the host, decrypted here with the age identity, streamed
into ``pg_restore`` over SSH after a safety dump of every database it replaces."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Callable

from ..engine.model import q
from ..errors import DropshipError
from ..inventory import Environment
from ..retention import STAMP
from ..roles.airflow import AirflowLayout, stack_health_command
from ..roles.app import AppLayout
from ..roles.backups import DUMP, FILES, FOLDER, RCLONE, SERVICE, STATE, TIMER, remote
from ..secrets import SecretStore, redactor_for
from .airflow_database import airflow_hosts, services_stopped
from .database import _failed, _session, backup_command, host_session

SOURCE = re.compile(r"^(offsite|host):(LATEST|\d{8}T\d{6}Z)$")


# --- command builders (pure) ------------------------------------------------------------------------

def run_command() -> str:
    """Start the backup service (what the timer starts) and wait for it; print this run's journal."""
    return (f"t=$(date +%s); systemctl start {SERVICE}; rc=$?\n"
            f"journalctl -u {SERVICE} --since \"@$t\" -o cat --no-pager | grep -v '^$' | tail -n 40\n"
            "exit $rc")


def records_command() -> str:
    """``run last-success|last-failure <epoch> <result> <exit> <step>`` of the backup service, and the
    timer's last and next trigger (``timer <last epoch> <next epoch>``)."""
    return (f"for f in last-success last-failure; do [ -s {STATE}/$f ] && echo \"run $f $(cat {STATE}/$f)\"; done\n"
            f"ts() {{ v=$(systemctl show -P \"$1\" {TIMER} 2>/dev/null); case \"$v\" in ''|n/a|0) echo 0;; "
            f"*) date -d \"$v\" +%s 2>/dev/null || echo 0;; esac; }}\n"
            "echo \"timer $(ts LastTriggerUSec) $(ts NextElapseUSecRealtime)\"\n")


def list_command(remote_path: str) -> str:
    """``host <stamp> <file> <bytes> <epoch>`` per kept file, ``offsite <rclone lsjson>`` (one line)
    when off-site, then ``records_command``."""
    out = (f"find {FOLDER} -mindepth 2 -maxdepth 2 \\( -name '*{DUMP}' -o -name '*{FILES}' \\) "
           f"-printf 'host %h %f %s %T@\\n' 2>/dev/null | sed 's#^host {FOLDER}/#host #' | sort\n")
    if remote_path:
        out += f"printf 'offsite '; {RCLONE} lsjson -R --files-only {q(remote_path)} 2>&1 | tr -d '\\n'; echo\n"
    return out + records_command()


def fetch_command(where: str, remote_path: str, stamp: str, file: str) -> str:
    """A set's encrypted ``file`` on stdout: from the bucket (``offsite``) or the host's folder (``host``)."""
    name = f"{stamp}/{file}"
    if where == "offsite":
        return f"{RCLONE} cat {q(remote_path + '/' + name)}"
    return f"cat {q(FOLDER + '/' + name)}"


def pg_restore_command(database: str, owner: str) -> str:
    """``pg_restore`` of a custom-format dump on stdin, replacing the database's objects in one transaction."""
    return (f"runuser -u postgres -- pg_restore --clean --if-exists --no-owner --role={q(owner)} "
            f"--single-transaction -d {q(database)}")


def restore_files_command(app: str, data: str, shared_dirs: tuple[str, ...], safety: str) -> str:
    """Unpack the tar on stdin as ``app``'s shared folders at ``data`` (root's, the folders in it its
    user's, those the app lists now made when the set lacks them): beside it first, then swapped in,
    the folder it replaces kept as ``<data>.<safety>``; the app's running slots reload (gracefully:
    new workers open the restored files). One command (``sh -c``), so ``sudo -n`` covers all of it."""
    d, new, user = q(data), q(data + ".restoring"), q(app)
    made = sorted({"/".join(p.split("/")[:n]) for p in shared_dirs for n in range(1, p.count("/") + 2)})
    lines = [f"rm -rf {new} && install -d -m 0755 {new} && tar -x -C {new} --no-same-owner && "
             f"chown -hR {user}:{user} {new} && chown root:root {new} || exit 1"]
    lines += [f"[ -d {q(data + '.restoring/' + m)} ] || install -d -o {user} -g {user} -m 0750 "
              f"{q(data + '.restoring/' + m)} || exit 1" for m in made]
    return "sh -c " + q("\n".join(lines + [
        f"if [ -e {d} ]; then mv {d} {q(data + '.' + safety)} || exit 1; "
        f"echo {q('kept the folder it replaces as ' + data + '.' + safety)}; fi",
        f"mv {new} {d} || exit 1",
        f"systemctl try-reload-or-restart {q(app + '@blue')} {q(app + '@green')}"]))


def held_words(row: dict) -> str:
    """What restoring a set replaces, in words: ``the databases a, b and the shared folders of c`` (pure)."""
    out = f"the database{'s' * (len(row['databases']) != 1)} {', '.join(row['databases'])}" if row["databases"] else ""
    files = row.get("files", [])
    return " and ".join(filter(None, [out, f"the shared folders of {', '.join(files)}" if files else ""]))


# --- parsing (pure) ---------------------------------------------------------------------------------

def parse_records(output: str, now: float) -> dict:
    """``records_command``'s lines as ``{"last_success": {...}, "last_failure": {...}, "timer": {...}}``."""
    out: dict = {"last_success": None, "last_failure": None, "timer": {}}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("run ") and len(parts) >= 5 and parts[2].isdigit():
            out[parts[1].replace("-", "_")] = {"at": _iso(int(parts[2])), "age_s": max(0, int(now) - int(parts[2])),
                                               "result": parts[3], "exit": parts[4],
                                               "step": parts[5].replace("_", " ") if len(parts) > 5 else ""}
        elif line.startswith("timer "):
            last, nxt = (parts + ["", ""])[1:3]
            out["timer"] = {"last_trigger": _iso(int(last)) if last.isdigit() and int(last) else None,
                            "next": _iso(int(nxt)) if nxt.isdigit() and int(nxt) else None}
    return out


def parse_list(output: str, now: float) -> dict:
    """``list_command``'s output: backups by stamp (``host`` and ``offsite`` sets), and the records."""
    sets: dict[tuple[str, str], dict] = {}
    offsite_error = ""
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("host ") and len(parts) == 5 and STAMP.match(parts[1]):
            _add_file(sets, "host", parts[1], parts[2], int(parts[3]), now)
        elif line.startswith("offsite "):
            try:
                objects = json.loads(line[len("offsite "):])
            except ValueError:
                offsite_error = line[len("offsite "):].strip()[-300:]
                continue
            for obj in objects:
                stamp, _, name = str(obj.get("Path", "")).partition("/")
                if STAMP.match(stamp) and "/" not in name:
                    _add_file(sets, "offsite", stamp, name, int(obj.get("Size", 0)), now)
    rows = sorted(sets.values(), key=lambda r: (r["where"], r["stamp"]))
    return {"backups": rows, "offsite_error": offsite_error, **parse_records(output, now)}


def _add_file(sets: dict, where: str, stamp: str, name: str, size: int, now: float) -> None:
    """Count a set's file: ``<database>.dump.age`` or ``<app>.files.tar.age``; any other name is not one."""
    for suffix, key in ((DUMP, "databases"), (FILES, "files")):
        if name.endswith(suffix) and len(name) > len(suffix):
            when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
            row = sets.setdefault((where, stamp), {"where": where, "stamp": stamp, "databases": [], "files": [],
                                                   "bytes": 0, "age_s": max(0, int(now - when))})
            row[key].append(name[:-len(suffix)])
            row["bytes"] += size


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_source(source: str) -> tuple[str, str]:
    """``offsite:LATEST`` / ``offsite:<stamp>`` / ``host:<stamp>`` -> (where, stamp or LATEST); checked
    before any host is contacted."""
    m = SOURCE.fullmatch(source or "")
    if not m:
        raise DropshipError(f"db.restore: --from {source!r} is not offsite:LATEST, offsite:<stamp> or host:<stamp>",
                            "pass e.g. --from offsite:LATEST (stamps: `invoke db.backups`)")
    return m.group(1), m.group(2)


# --- workflows ----------------------------------------------------------------------------------------

def _configured(env: Environment, offsite: bool = False):
    bk = env.settings.backups
    if bk is None:
        raise DropshipError(f"environment {env.name} has no scheduled backups",
                            "add backups: (schedule, keep_daily, keep_weekly, offsite) to the inventory and provision")
    if offsite and bk.offsite is None:
        raise DropshipError(f"environment {env.name} has no off-site storage", "add backups.offsite to the inventory")
    return bk


def run_now(env: Environment, on_line: Callable[[str], None] = print) -> None:
    """Run the scheduled backup now (the same unit the timer starts): dump, encrypt, upload, prune."""
    _configured(env)
    session = _session(env)
    try:
        result = session.script(run_command(), on_line=lambda ln: on_line(f"[{session.name}] {session.redact(ln)}"),
                                timeout=6 * 3600)
        if result.rc != 0:
            raise _failed(session, "backup", result.stdout,
                          f"read `journalctl -u {SERVICE}` on {session.name}; the previous backups are kept")
    finally:
        session.close()


def listing(env: Environment) -> dict:
    """Scheduled backups on the host and off-site (stamp, databases, size, age) and the last runs."""
    _configured(env)
    session = _session(env)
    try:
        out = session.redact(session.script(list_command(remote(env)), timeout=300).stdout)
    finally:
        session.close()
    return {"host": session.name, **parse_list(out, time.time())}


def restore(env: Environment, source: str, confirm: Callable[[str, str], None] | None = None,
            on_line: Callable[[str], None] = print) -> str:
    """Restore every database of one backup set, then the apps' shared folders it holds; returns its
    stamp. ``confirm(stamp, what)`` is asked once the set is known (``what`` it replaces, in words),
    before anything changes; a safety dump of
    each database is taken first, and each folder replaced is kept beside the restored one."""
    where, wanted = parse_source(source)
    bk = _configured(env, offsite=where == "offsite")
    if not shutil.which("age"):
        raise DropshipError("db.restore: `age` is not installed on this machine", "run scripts/setup.sh (apt: age)")
    store = SecretStore(env, redactor_for(env))
    identity = store.resolve(bk.identity, generate=False)
    owners = {a.database.name: a.database.user for a in env.settings.apps if a.database}
    airflow = env.settings.airflow
    if airflow:
        owners[airflow.database.name] = airflow.database.user
    session = _session(env)
    af_host = next((h for h in env.hosts if "airflow" in h.roles), None) if airflow else None
    af_hosts = airflow_hosts(env) if af_host else []     # stopped while Airflow's database is replaced
    opened: dict[str, object] = {}       # sessions to those hosts that are not the postgres host

    def airflow_session(host=None):
        host = host or af_host
        if host.name == session.name:
            return session
        if host.name not in opened:
            opened[host.name] = host_session(env, host)
        return opened[host.name]

    try:
        found = parse_list(session.redact(session.script(list_command(remote(env) if where == "offsite" else ""),
                                                         timeout=300).stdout), time.time())
        sets = [r for r in found["backups"] if r["where"] == where]
        if found["offsite_error"] and where == "offsite":
            raise _failed(session, "list off-site backups", found["offsite_error"],
                          "check backups.offsite (endpoint, bucket, credentials)")
        chosen = sets[-1] if wanted == "LATEST" and sets else next((r for r in sets if r["stamp"] == wanted), None)
        if chosen is None:
            raise DropshipError(f"db.restore: no {where} backup {wanted}", "list them with `invoke db.backups`")
        stamp = chosen["stamp"]
        unknown = [d for d in chosen["databases"] if d not in owners]
        if unknown:
            raise DropshipError(f"db.restore: backup {stamp} holds {', '.join(unknown)}, which the inventory does not "
                                "name", "restore into an environment that has these databases")
        apps = {a.name for a in env.settings.apps}
        runs_apps = any(h.name == session.name and "app" in h.roles for h in env.hosts)
        strays = [a for a in chosen.get("files", []) if a not in apps or not runs_apps]
        if strays:
            raise DropshipError(f"db.restore: backup {stamp} holds the shared folders of {', '.join(strays)}, which "
                                f"{session.name} does not run", "restore into an environment where the postgres host "
                                "runs these apps (the app role)")
        if confirm:
            confirm(stamp, held_words(chosen))
        safety = time.strftime("pre-restore-%Y%m%dT%H%M%SZ", time.gmtime())
        with tempfile.TemporaryDirectory(prefix="dropship-restore-") as tmp:
            key = os.path.join(tmp, "identity")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(identity + "\n")
            for db in sorted(chosen["databases"], key=lambda d: d == (airflow.database.name if airflow else "")):
                on_line(f"[{session.name}] download {where}:{stamp}/{db}")
                cipher = _download(session, fetch_command(where, remote(env), stamp, db + DUMP),
                                   os.path.join(tmp, f"{db}.age"), db)
                on_line(f"[{session.name}] safety dump of {db} ({safety})")
                dumped = session.script(backup_command(db, safety), timeout=6 * 3600)
                if dumped.rc != 0:
                    raise _failed(session, f"safety dump of {db}", dumped.stdout, "nothing was replaced; check the disk")
                is_airflow = af_host is not None and db == airflow.database.name
                # Airflow stops (wherever it runs) while its database is replaced
                stopped = services_stopped({h.name: airflow_session(h) for h in af_hosts}, on_line) \
                    if is_airflow else nullcontext()
                with stopped:
                    on_line(f"[{session.name}] decrypt here and pg_restore {db}")
                    result = _decrypt_into(session, key, cipher, pg_restore_command(db, owners[db]))
                if is_airflow:
                    on_line(f"[{af_host.name}] waiting for Airflow to be healthy")
                    healthy = airflow_session().script(stack_health_command(AirflowLayout().port, airflow.url_path),
                                                       timeout=400)
                    if healthy.rc != 0 and result.rc == 0:
                        raise _failed(airflow_session(), "Airflow after the restore", healthy.stdout,
                                      "read `invoke airflow.logs`; the data is restored")
                if result.rc != 0:
                    raise _failed(session, f"pg_restore {db}", result.stdout + result.stderr,
                                  f"{db} was left as it was (one transaction); the safety dump is "
                                  f"{safety}.dump in `invoke db.backups`")
            for app in sorted(chosen.get("files", [])):
                on_line(f"[{session.name}] download {where}:{stamp}/{app}{FILES}")
                cipher = _download(session, fetch_command(where, remote(env), stamp, app + FILES),
                                   os.path.join(tmp, f"{app}.files.age"), f"the shared folders of {app}")
                on_line(f"[{session.name}] decrypt here and unpack the shared folders of {app}")
                data = AppLayout(app).data
                shared = next(a.shared_dirs for a in env.settings.apps if a.name == app)
                result = _decrypt_into(session, key, cipher, restore_files_command(app, data, shared, safety))
                for line in result.stdout.splitlines():
                    on_line(f"[{session.name}] {app}: {session.redact(line)}")
                if result.rc != 0:
                    raise _failed(session, f"restore the shared folders of {app}", result.stdout + result.stderr,
                                  f"{data} is as it was unless the output says it was kept as {data}.{safety} "
                                  f"(then move that back); the databases are restored")
        return stamp
    finally:
        session.close()
        for other in opened.values():
            other.close()


def _download(session, command: str, to: str, what: str) -> str:
    """Write what ``command`` prints on the host (an encrypted file of a set) to ``to`` here; returns ``to``."""
    with open(to, "wb") as fh:
        got = session.receive(command, fh.write, timeout=6 * 3600)
    if got.rc != 0:
        raise _failed(session, f"download {what}", got.stderr, "check `invoke db.backups` lists it")
    return to


def _decrypt_into(session, identity_file: str, cipher: str, command: str):
    """Stream ``age -d`` of ``cipher`` (here) into ``command``'s stdin on the host."""
    proc = subprocess.Popen(["age", "-d", "-i", identity_file, cipher], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        result = session.send_stream(command, iter(lambda: proc.stdout.read(1 << 20), b""), timeout=6 * 3600)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.wait()
    if proc.returncode != 0:
        raise DropshipError(f"db.restore: age could not decrypt {os.path.basename(cipher)}: {err.strip()[-200:]}",
                            "check backups.identity is the identity the host's recipient belongs to")
    return result
