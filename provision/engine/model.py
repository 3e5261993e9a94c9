"""The step model: a Resource turns a probe's output (facts) into the Changes it needs (pure)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

PHASE_TRUST, PHASE_PACKAGES, PHASE_CONFIG, PHASE_LOCKDOWN, PHASE_SERVICES = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Handler:
    """Runs once at the end of a phase when any change notifies it (Ansible's handlers)."""

    name: str            # "reload nginx"
    command: str
    service: str = ""    # skipped when this service was (re)started in the same phase


def restart(service: str) -> Handler:
    """Restart if running; the start-rate limit is reset first (a first provision restarts often)."""
    return Handler(f"restart {service}",
                   f"systemctl reset-failed {q(service)} 2>/dev/null || true\nsystemctl try-restart {q(service)}",
                   service)


def reload(service: str, check: str = "") -> Handler:
    command = f"systemctl try-reload-or-restart {q(service)}"
    return Handler(f"reload {service}", f"{check} && {command}" if check else command, service)


@dataclass
class Change:
    """One thing that must change on a host, with the commands that change it."""

    resource: str
    action: str                      # create | update | install | start | enable | remove | skip ...
    summary: str
    commands: list[str] = field(default_factory=list)
    diff: str = ""
    notify: tuple[Handler, ...] = ()
    role: str = ""
    service: str = ""                # a service this change starts (suppresses its restart handler)
    fix: str = ""                    # what to do when it fails ("" = fix the cause and re-run)

    @property
    def skipped(self) -> bool:
        return self.action == "skip"

    def to_dict(self, host: str) -> dict:
        return {"host": host, "role": self.role, "resource": self.resource, "action": self.action,
                "summary": self.summary}


class Resource:
    """Wanted state of one thing on a host. Subclasses define probe, parse and plan."""

    phase = PHASE_CONFIG
    role = ""
    batch = ""          # resources of one batch kind share one probe command (engine/batch.py)

    @property
    def key(self) -> str:
        raise NotImplementedError

    def probe(self, want_content: bool = False) -> str:
        """Shell that prints the facts this resource needs (read-only, must not fail)."""
        raise NotImplementedError

    def batch_item(self, want_content: bool = False):
        """What a batched probe needs of this resource (a path, a unit, a query)."""
        raise NotImplementedError

    def parse(self, output: str):
        """Probe output -> facts."""
        return output

    def plan(self, facts) -> list[Change]:
        """Facts -> the changes needed ([] when the host already has the wanted state)."""
        raise NotImplementedError

    @property
    def writes(self) -> tuple[str, ...]:
        """Files this resource writes other than as a File or Symlink (a certificate's links): the
        managed record counts them as wanted, whichever resource wrote them before."""
        return ()

    def change(self, action: str, summary: str, commands: list[str], **kw) -> Change:
        return Change(self.key, action, summary, commands, role=self.role, **kw)


def q(value) -> str:
    return shlex.quote(str(value))
