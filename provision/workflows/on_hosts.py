"""Run one piece of work on many hosts at once, each over its own SSH session, into one report."""
from __future__ import annotations

import time

from ..engine.runner import HostOutcome
from ..errors import DropshipError
from ..inventory import Environment, HostSpec
from ..redact import Redactor
from ..report import Report
from ..transport.hostkeys import KnownHosts
from ..transport.pool import PARALLEL, fan_out
from ..transport.ssh import Session, connect


def run_on_hosts(env: Environment, hosts: list[HostSpec], targets, redactor: Redactor, parallel: int, work,
               command: str, extra: dict | None = None, sessions: dict[str, Session] | None = None) -> Report:
    """``work(host, session)`` on every host at once (bounded by ``parallel``), each over its own
    SSH session (taken from ``sessions`` where one was opened already); a host's DropshipError
    becomes its failed outcome in the returned report. Every session is closed after its work."""
    started = time.monotonic()
    known = KnownHosts(env.workspace.known_hosts_path)
    specs = {h.name: h for h in hosts}
    report = Report(command, env.name, extra=extra or {})
    opened = sessions if sessions is not None else {}

    def one(target):
        session = opened.pop(target.name, None)
        if session is not None and not session.alive():     # dropped while it waited: log in again
            session.close()
            session = None
        session = session or connect(target, known, redactor)
        try:
            return work(specs[target.name], session)
        finally:
            session.close()

    for target, outcome, exc in fan_out(targets, one, parallel):
        if exc is not None and not isinstance(exc, DropshipError):
            raise exc
        if exc is not None:
            outcome = HostOutcome(target.name, failed=1, error=redactor(str(exc)))
        report.hosts[target.name] = outcome
    report.seconds = time.monotonic() - started
    return report


def read_hosts(env: Environment, hosts: list[HostSpec], script, parse, command: str) -> dict[str, dict]:
    """Per host: ``parse(output, now)`` of ``script(host)`` run there (secrets masked), or
    ``{"error": ...}`` for a host that does not answer; in the hosts' order."""
    from .. import hosts as host_selection
    from ..secrets import redactor_for

    redactor = redactor_for(env)
    found: dict[str, dict] = {}

    def work(host: HostSpec, session) -> HostOutcome:
        found[host.name] = parse(redactor(session.script(script(host), timeout=60).stdout), time.time())
        return HostOutcome(host.name, ok=1)

    report = run_on_hosts(env, hosts, host_selection.targets(env, hosts), redactor, PARALLEL, work, command)
    for name, outcome in report.hosts.items():
        if outcome.failed:
            found[name] = {"error": outcome.error}
    return {h.name: found[h.name] for h in hosts if h.name in found}
