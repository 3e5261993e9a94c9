"""Run one piece of work on many hosts at once, each over its own SSH session, into one report."""
from __future__ import annotations

import time

from ..engine.runner import HostOutcome
from ..errors import DropshipError
from ..inventory import Environment, HostSpec
from ..redact import Redactor
from ..report import Report
from ..transport.hostkeys import KnownHosts
from ..transport.pool import fan_out
from ..transport.ssh import connect


def run_on_hosts(env: Environment, hosts: list[HostSpec], targets, redactor: Redactor, parallel: int, work,
               command: str, extra: dict | None = None) -> Report:
    """``work(host, session)`` on every host at once (bounded by ``parallel``), each over its own
    SSH session; a host's DropshipError becomes its failed outcome in the returned report."""
    started = time.monotonic()
    known = KnownHosts(env.workspace.known_hosts_path)
    specs = {h.name: h for h in hosts}
    report = Report(command, env.name, extra=extra or {})

    def one(target):
        session = connect(target, known, redactor)
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
