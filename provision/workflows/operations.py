"""Day-to-day operations, as Kamal's ``details``, ``app logs``, ``app exec`` and ``audit``: the
status of every host, the apps' and nginx's logs merged per host, a command in the live release,
the merged audit log, and the SSH command line. Everything printed goes through the environment's
redactor; command builders and parsers are pure."""
from __future__ import annotations

import re
import shlex
import subprocess
from datetime import datetime, timedelta, timezone

from .. import balancer
from .. import hosts as host_selection
from .. import release as rel
from ..engine.model import q
from ..engine.runner import HostOutcome
from ..errors import DropshipError
from ..inventory import AppSettings, Environment, HostSpec
from ..roles.airflow import LAYOUT as AIRFLOW
from ..roles.app import SLOTS, layout
from ..secrets import redactor_for
from ..transport.hostkeys import KnownHosts
from ..transport.pool import PARALLEL, fan_out
from ..transport.ssh import Session, connect, fd_chunks
from .backups import parse_records, records_command
from .database import backup_dir
from .on_hosts import read_hosts, run_on_hosts
from .tls import certificates_command, parse_certificates

NGINX_LOGS = ("/var/log/nginx/access.log", "/var/log/nginx/error.log")
_SINCE = re.compile(r"^(\d+)([smhd])$")


# --- pure builders and parsers -------------------------------------------------------------------------

# A limited cgroup (a local droplet's size) wins over /proc/meminfo, which shows the whole machine there.
MEMORY = r"""t=; u=; mt=$(awk '/^MemTotal:/ { print $2 * 1024 }' /proc/meminfo)
lim() {  # $1 dir, $2 cgroup path, $3 limit file, $4 usage file: the first real limit up the tree
  p=$2
  while :; do
    if read -r m < "$1$p/$3" 2>/dev/null && [ "$m" != max ] && [ "${#m}" -lt 19 ] && [ "$m" -lt "$mt" ] &&
       read -r c < "$1$p/$4" 2>/dev/null; then
      t=$((m / 1024)); u=$((c / 1024)); return 0
    fi
    [ -z "$p" ] && return 1; p=${p%/*}
  done
}
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then lim /sys/fs/cgroup "$(sed -n 's/^0:://p' /proc/self/cgroup)" memory.max memory.current
else lim /sys/fs/cgroup/memory "$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)" memory.limit_in_bytes memory.usage_in_bytes
fi
awk -v t="$t" -v u="$u" '/^MemTotal:/ { mt = $2 } /^MemAvailable:/ { a = $2 }
  END { if (t == "" || t + 0 >= mt + 0) print "memory", mt, mt - a; else print "memory", t, u }' /proc/meminfo"""


def status_command(apps: tuple[AppSettings, ...], airflow: bool, backups: bool = False,
                   databases: tuple[str, ...] | None = None, lb: bool = False) -> str:
    """Print a host's state, a line each: ``app <name> <slot> <live|warm> <release> <http code>``,
    ``backup <database> <newest dump> <epoch>`` (of ``databases``, default the apps'), ``disk <used %>
    <free KB>``, ``memory <total KB> <used KB>``, (with ``airflow``) compose's JSON of the Airflow
    services, and (with ``lb``) the lines of its upstream file, each as ``lb-upstream <line>``."""
    lines = [f"sed 's/^/lb-upstream /' {q(balancer.UPSTREAM_FILE)} 2>/dev/null"] if lb else []
    own = [a.database.name for a in apps if a.database]
    dumps = own if databases is None else list(databases)
    for app in apps:
        lay = layout(app)
        lines.append(f"live=$(cat {q(lay.live_file)} 2>/dev/null)")
        for slot in SLOTS:
            url = f"http://127.0.0.1:{lay.port(slot)}{app.path}{app.health.path}"
            lines.append(f"r=$(readlink {q(lay.root + '/slots/' + slot)} 2>/dev/null) && {{ "
                         f"[ \"$live\" = {slot} ] && w=live || w=warm; "
                         f"c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 {q(url)}); "
                         f"echo \"app {app.name} {slot} $w ${{r##*/}} ${{c:-000}}\"; }}")
        if app.database and app.database.name in dumps:
            lines.append(newest_dump_command(app.database.name))
    lines += [newest_dump_command(db) for db in dumps if db not in own]      # the postgres host of other hosts' apps
    if backups:
        lines.append(records_command().rstrip("\n"))
    lines.append("df -Pk / | awk 'NR == 2 { print \"disk\", $5, $4 }'")
    lines.append(MEMORY)
    if airflow:
        lines.append(f"[ -f {AIRFLOW.root}/compose.yaml ] && {AIRFLOW.compose} ps -a --format json 2>/dev/null")
    lines.append(certificates_command().rstrip("\n"))
    return "\n".join(lines) + "\n"


def newest_dump_command(database: str) -> str:
    """``backup <database> <newest dump> <epoch>`` when its backup folder holds a dump."""
    folder = q(backup_dir(database))
    return (f"b=$(ls -t {folder} 2>/dev/null | grep '\\.dump$' | head -n 1); "
            f"[ -n \"$b\" ] && echo \"backup {database} $b $(stat -c %Y {folder}/\"$b\")\"")


def parse_status(output: str, now: float) -> dict:
    """What ``status_command`` printed, as one host's status (pure)."""
    import json

    out: dict = {"apps": {}, "backups": {}, "airflow": [], "disk": {}, "memory": {}}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("app ") and len(parts) == 6:
            _, app, slot, role, release, code = parts
            out["apps"].setdefault(app, []).append({"slot": slot, "role": role, "release": release,
                                                    "health": int(code) if code.isdigit() else 0})
        elif line.startswith("backup ") and len(parts) == 4 and parts[3].isdigit():
            out["backups"][parts[1]] = {"name": parts[2], "age_s": max(0, int(now - int(parts[3])))}
        elif line.startswith(("run ", "timer ")):
            records = parse_records(line, now)
            scheduled = out.setdefault("scheduled_backups", {"last_success": None, "last_failure": None, "timer": {}})
            scheduled.update({k: v for k, v in records.items() if v})
        elif line.startswith("disk ") and len(parts) == 3:
            out["disk"] = {"used_pct": int(parts[1].rstrip("%") or 0), "free_mb": int(parts[2]) // 1024}
        elif line.startswith("memory ") and len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out["memory"] = {"total_mb": int(parts[1]) // 1024, "used_mb": int(parts[2]) // 1024}
        elif line.startswith(("{", "[")):
            try:
                rows = json.loads(line)
            except ValueError:
                continue
            for row in rows if isinstance(rows, list) else [rows]:
                if row.get("Service") != "airflow-init":
                    out["airflow"].append({"service": row.get("Service"), "state": row.get("State"),
                                           "health": row.get("Health") or ""})
    upstream = [line.removeprefix("lb-upstream ") for line in output.splitlines() if line.startswith("lb-upstream ")]
    if upstream:
        out["upstream"] = balancer.servers("\n".join(upstream))
    out["tls"] = parse_certificates(output, now)
    return out


def since_seconds(since: str | None) -> int | None:
    """``10m`` -> 600 (s, m, h, d); None stays None; anything else is refused before any host is asked."""
    if since is None:
        return None
    m = _SINCE.fullmatch(since)
    if not m or int(m.group(1)) == 0:
        raise DropshipError(f"--since {since!r} is not a duration like 30s, 10m, 2h or 1d", "pass e.g. --since 10m")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def logs_command(apps: tuple[AppSettings, ...], since: int | None, follow: bool, lines: int = 200) -> str:
    """The apps' slot journals (JSON, one entry a line: ``journal_line`` reads them) and nginx's access
    and error logs, each of their lines prefixed ``nginx-access:``/``nginx-error:``; ``follow`` streams
    them all until the session ends."""
    units = " ".join(f"-u {q(layout(a).unit(s))}" for a in apps for s in SLOTS)
    window = f"--since {q(f'-{since}s')}" if since else f"-n {lines}"
    journal = f"journalctl --no-pager -o json --output-fields=_SYSTEMD_UNIT,MESSAGE {window} {units}" \
        if units else ""
    tails = [f"tail -n {lines}{' -F' if follow else ''} {q(path)} 2>/dev/null | "
             f"sed -u 's/^/nginx-{'access' if 'access' in path else 'error'}: /'" for path in NGINX_LOGS]
    if follow:
        parts = ([f"{journal} -f &"] if journal else []) + [f"{t} &" for t in tails] + ["wait"]
        return "\n".join(parts) + "\n"
    return "\n".join(([journal] if journal else []) + tails) + "\ntrue\n"


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                      "Nov", "Dec"), start=1)}
_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)([+-]\d\d:?\d\d|Z)?")
_ACCESS = re.compile(r"\[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\]")
_ERROR = re.compile(r"^nginx-error: (\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)")


def line_time(line: str) -> datetime | None:
    """When a journal (short-iso) or nginx log line was written, in UTC; None if it does not say (pure)."""
    m = _ISO.match(line)
    if m:
        zone = (m.group(2) or "+0000").replace("Z", "+0000").replace(":", "")
        return datetime.strptime(m.group(1) + zone, "%Y-%m-%dT%H:%M:%S%z").astimezone(timezone.utc)
    m = _ACCESS.search(line) if line.startswith("nginx-access: ") else None
    if m and m.group(2) in _MONTHS:
        d, mon, y, hh, mm, ss, zone = m.groups()
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
        return datetime(int(y), _MONTHS[mon], int(d), int(hh), int(mm), int(ss),
                        tzinfo=timezone(offset)).astimezone(timezone.utc)
    m = _ERROR.match(line)
    if m:
        return datetime(*map(int, m.groups()), tzinfo=timezone.utc)     # the hosts' logs are UTC
    return None


def journal_line(line: str) -> str:
    """A journal entry printed as JSON -> ``2026-12-02T18:03:28Z names@blue.service: message``; any
    other line as it is (pure)."""
    import json

    if not line.startswith("{"):
        return line
    try:
        entry = json.loads(line)
        stamp = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, timezone.utc)
    except (ValueError, KeyError, TypeError):
        return line
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):                   # not UTF-8: the journal gives the bytes
        message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode(errors="replace")
    return f"{stamp.strftime('%Y-%m-%dT%H:%M:%SZ')} {entry.get('_SYSTEMD_UNIT', '?')}: {message}"


def merge_logs(output: str, since: int | None, now: datetime) -> list[str]:
    """A host's log lines in time order, the nginx ones limited to ``since`` as the journal is; a line
    without a time (a continuation) stays after the line before it (pure)."""
    entries: list[tuple[datetime, int, str]] = []
    last = datetime.min.replace(tzinfo=timezone.utc)
    floor = now - timedelta(seconds=since) if since else None
    lines = (journal_line(ln) for ln in output.splitlines() if ln.strip() and not ln.startswith("-- "))
    for i, line in enumerate(lines):
        when = line_time(line)
        if when is None:
            when = last
        last = when
        if floor and line.startswith("nginx-") and when < floor:
            continue
        entries.append((when, i, line))
    return [line for _, _, line in sorted(entries)]


def audit_lines(host: str, output: str) -> list[tuple[str, str]]:
    """``(time, "[host] <app>: line")`` of ``<app> <audit line>`` rows; audit lines start with their UTC time."""
    rows = []
    for line in output.splitlines():
        app, _, entry = line.partition(" ")
        if entry.strip():
            rows.append((entry.split(" ", 1)[0], f"[{host}] {app}: {entry}"))
    return rows


def exec_command(release_dir: str, user: str, argv: list[str]) -> str:
    """``argv`` (one string: a shell command line; several: words kept as they are) run as the app's
    user in the release's folder, virtualenv and environment."""
    command = argv[0] if len(argv) == 1 else " ".join(shlex.quote(a) for a in argv)
    return rel.release_command(release_dir, user, command)


def exec_shell(release_dir: str, user: str, argv: list[str]) -> str:
    """``exec_command`` as one ``sh -c`` command with stderr merged into stdout: what root runs."""
    return f"sh -c {q('exec 2>&1; ' + exec_command(release_dir, user, argv))}"


def ssh_argv(env: Environment, host: HostSpec, command: list[str], tty: bool = False) -> list[str]:
    """OpenSSH as the deploy user with the pinned host keys only (a changed or unknown key is refused);
    with a ``command``, in batch mode (no prompt ever); ``tty``: on a terminal of its own (``-t``)."""
    target = host_selection.targets(env, [host])[0]
    return ["ssh", "-i", str(target.key_path), "-p", str(target.port),
            "-o", f"UserKnownHostsFile={env.workspace.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", *(["-o", "BatchMode=yes"] if command else []), *(["-t"] if tty else []),
            f"{env.ssh.user}@{target.address}", *command]


# --- the workflows ------------------------------------------------------------------------------------

def _hosts(env: Environment, names, *roles: str) -> list[HostSpec]:
    """The chosen hosts (``names``, default all) with one of ``roles`` (any role when none is given)."""
    chosen = [h for h in host_selection.select(env, names) if not roles or set(roles) & set(h.roles)]
    if not chosen:
        raise DropshipError(f"no host{' with the ' + ' or '.join(roles) + ' role' if roles else ''} in environment "
                            f"{env.name}", "check --hosts and the hosts' roles in the inventory")
    return chosen


def status(env: Environment, names=None) -> dict[str, dict]:
    """Per host: each app's slots (live and warm, release, health), the newest dump, Airflow's
    services (a worker host's too), the lb's upstream, disk and memory use; a host that does not
    answer says why."""

    def script(host: HostSpec) -> str:
        apps = env.settings.apps if "app" in host.roles else ()
        airflow = bool({"airflow", "airflow_worker"} & set(host.roles)) and env.settings.airflow is not None
        backups = "postgres" in host.roles and env.settings.backups is not None
        here = "postgres" in host.roles       # dumps are where the database is
        databases = tuple(dict.fromkeys(a.database.name for a in env.settings.apps if a.database)) if here else ()
        return status_command(tuple(apps), airflow, backups, databases, lb="lb" in host.roles)

    return read_hosts(env, _hosts(env, names), script, parse_status, "status")


def logs(env: Environment, app: str | None, names, follow: bool, since: str | None, on_line) -> None:
    """The chosen apps' slot journals and nginx's logs of each app host (the lb's nginx logs too), in
    time order (or streamed with ``follow``), each line as ``[host] line``, secrets masked."""
    seconds = since_seconds(since)
    apps = host_selection.apps(env, app)
    chosen = _hosts(env, names, "app", "lb")
    redactor = redactor_for(env)
    known = KnownHosts(env.workspace.known_hosts_path)
    roles = {h.name: h.roles for h in chosen}

    def one(target):
        command = logs_command(apps if "app" in roles[target.name] else (), seconds, follow)
        session = connect(target, known, redactor)
        try:
            if follow:
                session.script(command, on_line=lambda ln: on_line(f"[{target.name}] {redactor(journal_line(ln))}"),
                               timeout=24 * 3600)
            else:
                out = redactor(session.script(command, timeout=120).stdout)
                for line in merge_logs(out, seconds, datetime.now(timezone.utc)):
                    on_line(f"[{target.name}] {line}")
        finally:
            session.close()

    for target, _, exc in fan_out(host_selection.targets(env, chosen), one, len(chosen) if follow else 10):
        if exc is not None:
            if not isinstance(exc, DropshipError):
                raise exc
            on_line(f"[{target.name}] error: {redactor(str(exc))}")


def app_exec(env: Environment, app: str | None, host: str | None, argv: list[str], on_line,
             stdin_fd: int | None = None, terminal: bool = False) -> int:
    """Run ``argv`` in the live release of the app on one host (the first with the app role by
    default); the command's exit status. Its input is what comes on ``stdin_fd`` (none without),
    its output (stderr merged) is streamed through ``on_line``, masked. With ``terminal`` it runs on
    a terminal of its own through OpenSSH instead, as ``invoke ssh``: for a shell or a REPL, unmasked."""
    if not argv or not any(a.strip() for a in argv):
        raise DropshipError("app.exec needs a command", "pass it after --, e.g. `invoke app.exec --env staging -- "
                                                        "flask --app wsgi shell`")
    apps = host_selection.apps(env, app)
    if len(apps) != 1:
        raise DropshipError(f"environment {env.name} has several apps: {', '.join(a.name for a in apps)}",
                            "pass --app NAME")
    chosen = apps[0]
    target_host = _hosts(env, (host,) if host else None, "app")[0]
    redactor = redactor_for(env)
    lay = layout(chosen)
    session = connect(host_selection.targets(env, [target_host])[0], KnownHosts(env.workspace.known_hosts_path),
                      redactor)
    try:
        live = session.script(f"readlink {q(lay.root + '/slots')}/$(cat {q(lay.live_file)} 2>/dev/null)",
                              timeout=30).stdout.strip()
        if not live:
            raise DropshipError(f"{target_host.name}: {chosen.name} has no live release",
                                f"deploy it first: `invoke deploy --env {env.name}`")
        command = exec_shell(f"{lay.root}/releases/{live.rsplit('/', 1)[-1]}", lay.user, argv)
        if not terminal:
            result = session.send_stream(command, iter(()) if stdin_fd is None else fd_chunks(stdin_fd),
                                         timeout=24 * 3600, on_line=lambda ln: on_line(redactor(ln)))
            for line in result.stderr.splitlines():             # sudo's own, if it refused
                on_line(redactor(line))
            return result.rc
    finally:
        session.close()
    root = command if env.ssh.user == "root" else f"sudo -n {command}"
    return subprocess.call(ssh_argv(env, target_host, [root], tty=True))


def audit(env: Environment, names=None) -> list[str]:
    """Every host's audit lines of every app, merged in time order, as ``[host] app: line``."""
    redactor = redactor_for(env)
    chosen = _hosts(env, names, "app")
    rows: list[tuple[str, str]] = []
    script = "\n".join(f"[ -f {q(layout(a).audit_log)} ] && sed 's/^/{a.name} /' {q(layout(a).audit_log)}"
                       for a in env.settings.apps) + "\ntrue"

    def work(host: HostSpec, session: Session) -> HostOutcome:
        rows.extend(audit_lines(host.name, redactor(session.script(script, timeout=60).stdout)))
        return HostOutcome(host.name, ok=1)

    report = run_on_hosts(env, chosen, host_selection.targets(env, chosen), redactor, PARALLEL, work, "audit")
    failed = [h.error for h in report.hosts.values() if h.failed]
    if failed:
        raise DropshipError(failed[0])
    return [line for _, line in sorted(rows, key=lambda r: r[0])]
