"""Invoke tasks of day-to-day operations: status, logs, ssh, app.exec, audit (workflows/operations.py),
tls.status (workflows/tls.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from invoke import Exit, task

from .cli_shared import environment, print_json, required, split_names, user_errors
from .errors import DropshipError


def _after_dashes() -> list[str]:
    """The words after ``--`` on the command line (invoke keeps them aside)."""
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def run_lines(records: dict) -> list[str]:
    """The scheduled backup's last success and last failure (pure)."""
    out = []
    for key, label in (("last_success", "last success"), ("last_failure", "LAST FAILURE")):
        r = records.get(key)
        if r:
            out.append(f"scheduled backup {label}: {r['at']} ({_age(r['age_s'])} ago)"
                       + ("" if key == "last_success" else f", {r['result']} (exit {r['exit']}) at step "
                          f"'{r['step']}'; read `journalctl -u dropship-backup.service`"))
    if not out:
        out.append("scheduled backup: no run yet")
    if records.get("timer", {}).get("next"):
        out.append(f"scheduled backup next: {records['timer']['next']}")
    return out


def scheduled_lines(found: dict) -> list[str]:
    """``db.backups``' part of the scheduled backups: sets on the host and off-site, then the runs (pure)."""
    lines = [f"scheduled backups ({found['host']}):"]
    for r in found["backups"]:
        held = r["databases"] + [f"{app} files" for app in r.get("files", [])]
        lines.append(f"  {r['where'] + ':' + r['stamp']:<28} {r['bytes']:>12} bytes  {_age(r['age_s']):>5} old  "
                     f"{', '.join(held)}")
    if not found["backups"]:
        lines.append("  none yet")
    if found.get("offsite_error"):
        lines.append(f"  off-site storage unreadable: {found['offsite_error']}")
    return lines + ["  " + line for line in run_lines(found)]


def status_lines(found: dict[str, dict]) -> list[str]:
    """The status of each host as text (pure)."""
    lines = []
    for host, st in found.items():
        if "error" in st:
            lines.append(f"{host}: unreachable: {st['error']}")
            continue
        disk, mem = st.get("disk", {}), st.get("memory", {})
        lines.append(f"{host}: disk {disk.get('used_pct', '?')}% used ({disk.get('free_mb', '?')} MB free), "
                     f"memory {mem.get('used_mb', '?')} of {mem.get('total_mb', '?')} MB used")
        for app, slots in st.get("apps", {}).items():
            for s in sorted(slots, key=lambda s: s["role"] != "live"):
                health = "healthy" if 200 <= s["health"] < 400 else f"UNHEALTHY (HTTP {s['health'] or 'none'})"
                lines.append(f"  {app}: {s['role']:<4} {s['release']} in {s['slot']}, {health}")
        for db, b in st.get("backups", {}).items():
            lines.append(f"  backup of {db}: {b['name']}, {_age(b['age_s'])} ago")
        if st.get("scheduled_backups"):
            lines += ["  " + line for line in run_lines(st["scheduled_backups"])]
        if "upstream" in st:
            lines.append(upstream_line(st["upstream"]))
        for svc in st.get("airflow", []):
            lines.append(f"  airflow: {svc['service']} {svc['state']}{' (' + svc['health'] + ')' if svc['health'] else ''}")
        lines += certificate_lines(st.get("tls", {}))
    return lines


def upstream_line(servers: list[dict]) -> str:
    """The lb's upstream as text (pure): each web host serving or drained."""
    if not servers:
        return "  upstream: no web host yet (its placeholder answers 503)"
    said = ", ".join(f"{s['host'] or s['address']} {'serving' if s['serving'] else 'DRAINED'}" for s in servers)
    if all(s["serving"] for s in servers):
        return f"  upstream: {said}"
    return (f"  upstream: {said} (left drained by a deploy, rollback or resize that did not finish: run it "
            "again to put it back)")


def certificate_lines(tls: dict) -> list[str]:
    """A host's certificates and its last renewal as text (pure)."""
    lines = []
    for cert in tls.get("certificates", []):
        left = cert["days_left"]
        when = f"expires {cert['expires'][:10]} ({left} days)" if left is not None else "expiry unknown"
        state = "" if cert["state"] == "live" else ", placeholder until issued"
        lines.append(f"  certificate {' '.join(cert['names']) or cert['name']}: {when}{state}, {cert['issuer']}")
    renewal = tls.get("renewal")
    if tls.get("certificates") and renewal:
        last = f" at {renewal['last_run']}" if renewal["last_run"] else ""
        lines.append(f"  renewal: {renewal['result']}{last}")
    return lines


@task(help={"env": "environment", "hosts": "comma-separated host names", "json": "print one JSON object"})
@user_errors
@required("env")
def status(c, env=None, hosts=None, json=False):
    """Per host: live and warm releases and their health, the newest backup, Airflow, disk and memory."""
    from .workflows.operations import status as host_status

    found = host_status(environment(c, env), split_names(hosts))
    if json:
        print_json(found)
    else:
        print("\n".join(status_lines(found)))
    if any("error" in st for st in found.values()):
        raise Exit(code=1)


@task(name="status", help={"env": "environment", "hosts": "comma-separated host names",
                           "json": "print one JSON object"})
@user_errors
@required("env")
def tls_status(c, env=None, hosts=None, json=False):
    """Each host's certificates (names, expiry, issuer) and the last renewal's result."""
    from .workflows.tls import tls_status as found_tls

    found = found_tls(environment(c, env), split_names(hosts))
    if json:
        print_json(found)
    else:
        for host, st in found.items():
            lines = [f"  error: {st['error']}"] if "error" in st else certificate_lines(st) or ["  no certificates"]
            print("\n".join([f"{host}:"] + lines))
    if any("error" in st for st in found.values()):
        raise Exit(code=1)


@task(help={"env": "environment", "app": "only this app's slots", "hosts": "comma-separated host names",
            "follow": "keep streaming", "since": "how far back, e.g. 30s, 10m, 2h, 1d (default: the last 200 lines)"})
@user_errors
@required("env")
def logs(c, env=None, app=None, hosts=None, follow=False, since=None):
    """The apps' slot journals and nginx's logs, merged per host in time order, the host in front."""
    from .workflows.operations import logs as host_logs

    host_logs(environment(c, env), app, split_names(hosts), follow, since, on_line=lambda line: print(line, flush=True))


@task(help={"env": "environment", "host": "host name (default: the first)",
            "command": "run this instead of a login shell (or pass it after --)"})
@user_errors
@required("env")
def ssh(c, env=None, host=None, command=None):
    """An SSH session as the deploy user, checked against the pinned host key."""
    from .hosts import select
    from .workflows.operations import ssh_argv

    e = environment(c, env)
    chosen = select(e, (host,) if host else None)[0]
    words = ([command] if command else []) + _after_dashes()
    raise Exit(code=subprocess.call(ssh_argv(e, chosen, words)))


@task(name="exec", help={"env": "environment", "app": "the app (needed when there are several)",
                         "host": "host name (default: the first with the app role)",
                         "command": "the command line (or pass it after --)"})
@user_errors
@required("env")
def app_exec(c, env=None, app=None, host=None, command=None):
    """Run a one-off command as the app's user in its live release (virtualenv and environment):
    `invoke app.exec --env staging -- flask --app wsgi shell`; stdin is passed on (in a terminal, an
    interactive session), and so is its exit status."""
    from .secrets import redactor_for
    from .workflows.operations import app_exec as run

    e = environment(c, env)
    argv = [command] if command else _after_dashes()
    if command and _after_dashes():
        raise DropshipError("app.exec takes the command once: --command or after --", "use one of the two")
    redact = redactor_for(e)
    terminal = os.isatty(0) and os.isatty(1)
    rc = run(e, app, host, argv, on_line=lambda line: print(redact(line), flush=True),
             stdin_fd=None if terminal or not _readable(0) else 0, terminal=terminal)
    raise Exit(code=rc)


def _readable(fd: int) -> bool:
    """Whether ``fd`` is open (a CI job may run commands with no stdin at all)."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@task(help={"env": "environment", "hosts": "comma-separated host names"})
@user_errors
@required("env")
def audit(c, env=None, hosts=None):
    """Every host's audit log (deploys, rollbacks, who, when, result), merged in time order."""
    from .workflows.operations import audit as merged

    for line in merged(environment(c, env), split_names(hosts)):
        print(line)
