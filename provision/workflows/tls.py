"""``invoke tls.status``: each host's certificates (names, expiry, issuer, placeholder or live) and
the last renewal's result. The command builder and its parser are pure."""
from __future__ import annotations

from datetime import datetime, timezone

from .. import hosts as host_selection
from ..inventory import Environment
from ..roles.tls import RENEW_UNIT, TLS_DIR
from .on_hosts import read_hosts


def certificates_command() -> str:
    """One ``cert|<folder>|<live|placeholder>|<notAfter>|<DNS names>|<issuer>`` line per certificate
    folder, then the renewal service's ``renew|Key=value`` lines."""
    pem = '"$d/fullchain.pem"'
    return (f"for d in {TLS_DIR}/*/; do [ -e {pem} ] || continue; "
            "n=$(basename \"$d\"); [ -e \"$d/live\" ] && l=live || l=placeholder; "
            f"e=$(openssl x509 -in {pem} -noout -enddate 2>/dev/null | cut -d= -f2); "
            f"s=$(openssl x509 -in {pem} -noout -ext subjectAltName 2>/dev/null | tr ',' '\\n' | "
            "sed -n 's/^ *DNS://p' | tr '\\n' ' '); "
            f"i=$(openssl x509 -in {pem} -noout -issuer 2>/dev/null | sed 's/^issuer=//'); "
            "echo \"cert|$n|$l|$e|$s|$i\"; done\n"
            f"systemctl show {RENEW_UNIT}.service -p Result -p ExecMainStatus -p ExecMainExitTimestamp "
            "-p ActiveState 2>/dev/null | sed 's/^/renew|/'\n"
            "true\n")


def parse_certificates(output: str, now: float) -> dict:
    """What ``certificates_command`` printed: ``{"certificates": [...], "renewal": {...}}`` (pure)."""
    certs, renew = [], {}
    for line in output.splitlines():
        parts = line.split("|")
        if parts[0] == "cert" and len(parts) == 6:
            _, name, state, end, names, issuer = parts
            try:
                expires = datetime.strptime(end.replace(" GMT", ""), "%b %d %H:%M:%S %Y").replace(tzinfo=timezone.utc)
            except ValueError:
                expires = None
            certs.append({"name": name, "names": names.split(), "state": state,
                          "expires": expires.isoformat() if expires else "",
                          "days_left": int((expires.timestamp() - now) // 86400) if expires else None,
                          "issuer": issuer.strip()})
        elif parts[0] == "renew" and len(parts) == 2 and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            renew[key] = value.strip()
    last = renew.get("ExecMainExitTimestamp", "")
    result = renew.get("Result", "") if last else "never run"
    if renew.get("ActiveState") == "activating":
        result = "running"
    status = renew.get("ExecMainStatus", "")
    return {"certificates": certs,
            "renewal": {"result": result, "exit_status": int(status) if last and status.isdigit() else None,
                        "last_run": last}}


def tls_status(env: Environment, names=None) -> dict[str, dict]:
    """Per host with nginx: its certificates and the last renewal (or the host's error)."""
    chosen = [h for h in host_selection.select(env, names) if "nginx" in h.roles or "app" in h.roles]
    return read_hosts(env, chosen, lambda host: certificates_command(), parse_certificates, "tls.status")
