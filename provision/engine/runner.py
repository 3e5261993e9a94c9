"""Converge one host: gather facts, plan each phase, apply it in one batched script.

A no-op run costs two short commands on an open connection (system facts, then every
resource's facts) and nothing else. Facts are gathered again only after a phase changed
something, because later phases depend on it (packages before their config).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import RemoteError
from ..facts import SYSTEM_PROBE, SystemFacts, parse_system
from .model import PHASE_LOCKDOWN, Change, Resource
from .script import ApplyEvents, apply_script, apply_steps, build_probe, marker, read_event

PHASE_NAMES = {0: "trust", 1: "packages", 2: "configuration", 3: "ssh lockdown", 4: "services"}


@dataclass
class HostOutcome:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error: str = ""
    changes: list[Change] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)


class Progress:
    """Receives per-host events while a host converges (the CLI prints them)."""

    def step(self, host: str, status: str, label: str, seconds: float | None = None) -> None: ...

    def diff(self, host: str, text: str) -> None: ...


@dataclass
class Converge:
    session: object                                   # transport.ssh.Session
    build: Callable[[SystemFacts], list[Resource]]    # roles for this host, given its facts
    progress: Progress
    dry_run: bool = False
    verify_login: Callable[[], None] | None = None     # proves the deploy user before lockdown
    before_phase: Callable[[int], None] | None = None   # e.g. ship an image once Docker is installed
    before_changes: Callable[[int], None] | None = None  # before a phase's changes (waits for hosts it needs)
    outcome: HostOutcome = None  # type: ignore[assignment]

    def __post_init__(self):
        self.outcome = HostOutcome(self.session.name)
        self.host = self.session.name

    def run(self) -> HostOutcome:
        started = time.monotonic()
        try:
            self._run()
        except RemoteError as exc:
            self.outcome.failed += 1
            self.outcome.error = self.session.redact(str(exc))
            self.progress.step(self.host, "failed", self.session.redact(f"{exc.step}: {exc.detail}"))
        finally:
            self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def _run(self) -> None:
        resources, found = self._gather()
        phases = sorted({r.phase for r in resources})
        for phase in phases:
            if self.before_phase and not self.dry_run:
                self.before_phase(phase)
            changes = self._plan([r for r in resources if r.phase == phase], found)
            if not changes:
                continue
            if self.dry_run:
                self._show_plan(changes)
                continue
            acting = any(not c.skipped for c in changes)
            if self.before_changes and acting:
                self.before_changes(phase)
            if phase == PHASE_LOCKDOWN and self.verify_login and acting:
                self.verify_login()
            self._apply(phase, changes)
            if phase != phases[-1] and acting:
                resources, found = self._gather()

    def _gather(self) -> tuple[list[Resource], dict[str, object]]:
        result = self.session.script(SYSTEM_PROBE, timeout=120)
        if result.rc != 0 or "os=" not in result.stdout:
            raise RemoteError(self.host, "facts", f"system facts failed: {_last_line(result)}",
                              "check that the SSH user can run sudo without a password")
        facts = parse_system(result.stdout)
        resources = self.build(facts)
        script, decode = build_probe(resources, marker(), want_content=self.dry_run)
        result = self.session.script(script, timeout=120)
        try:
            return resources, decode(result.stdout)
        except ValueError:
            raise RemoteError(self.host, "facts", f"fact gathering stopped: {_last_line(result)}",
                              "re-run; if it persists, run the failing command by hand over ssh") from None

    def _plan(self, resources: list[Resource], found: dict[str, object]) -> list[Change]:
        changes: list[Change] = []
        for r in resources:
            planned = r.plan(found[r.key])
            changes += planned
            if not planned:
                self.outcome.ok += 1
            elif all(c.skipped for c in planned):
                self.outcome.skipped += 1
                for c in planned:
                    self.progress.step(self.host, "skipped", f"{c.role}: {c.summary}")
            elif self.dry_run:
                self.outcome.changed += 1
        return changes

    def _show_plan(self, changes: list[Change]) -> None:
        for c in changes:
            if c.skipped:
                continue
            self.outcome.changes.append(c)
            self.progress.step(self.host, "would change", f"{c.role}: {c.summary}")
            if c.diff:
                self.outcome.diffs.append(c.diff)
                self.progress.diff(self.host, c.diff)

    def _apply(self, phase: int, changes: list[Change]) -> None:
        steps = apply_steps(changes)
        if not steps:
            return
        mark, events = marker(), ApplyEvents()
        clock = {"t": time.monotonic()}

        def on_line(line: str) -> None:
            event = read_event(line, mark, events)
            if event is None:
                return
            kind, i = event
            if kind == "start":
                clock["t"] = time.monotonic()
            elif kind == "done":
                step = steps[i]
                if step.change is not None:
                    self.outcome.changed += 1
                    self.outcome.changes.append(step.change)
                self.progress.step(self.host, "changed" if step.change else "ran", step.label,
                                   time.monotonic() - clock["t"])

        result = self.session.script(apply_script(steps, mark), on_line=on_line, timeout=3600)
        if events.failed is not None:
            detail = " | ".join(line.strip() for line in events.output if line.strip())[-600:]
            failed = steps[events.failed]
            raise RemoteError(self.host, failed.label, f"exit {events.rc}: {detail or 'no output'}",
                              (failed.change.fix if failed.change else "") or
                              "fix the cause above and re-run; finished steps are not repeated")
        if not events.ended:
            raise RemoteError(self.host, PHASE_NAMES.get(phase, f"phase {phase}"),
                              f"stopped early: {_last_line(result)}",
                              "re-run: every step is idempotent and resumes where it stopped")


def _last_line(result) -> str:
    text = (result.stderr or result.stdout or "").strip().splitlines()
    return text[-1] if text else f"exit {result.rc}"
