"""Several app hosts sharing a database deploy at once: the lead host runs each app's release
command (the migrations) while the others ship and prepare their release; they wait here before
starting it, and give up (leaving their old release serving) when the lead's did not succeed."""
from __future__ import annotations

import threading

from ..errors import RemoteError

WAIT = 3600.0          # the lead's pg_dump and release command can be long; a bound all the same


class MigrationGate:
    """Per app: opened once the lead's release command succeeded, closed (with why) when it cannot."""

    def __init__(self, lead: str, wait: float = WAIT):
        self.lead, self.wait_limit = lead, wait
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._why: dict[str, str] = {}          # app -> why it is closed ("" while open or undecided)

    def _event(self, app: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(app, threading.Event())

    def _decide(self, app: str, why: str) -> None:
        event = self._event(app)
        with self._lock:
            if event.is_set():
                return              # the first word stands
            self._why[app] = why
            event.set()

    def open(self, app: str) -> None:
        """The lead ran ``app``'s release command: the others may start the release."""
        self._decide(app, "")

    def settle(self, apps, why: str) -> None:
        """The lead is done: every app it did not open stays closed, for ``why``."""
        for app in apps:
            self._decide(app, why or "it failed")

    def wait(self, app: str, host: str, step: str) -> None:
        """Block until the lead decides for ``app``; a RemoteError naming ``host`` and ``step`` when it
        closed the gate or did not decide in time."""
        if not self._event(app).wait(self.wait_limit):
            why = f"no word from {self.lead} within {self.wait_limit:.0f} s"
        else:
            why = self._why.get(app, "")
        if why:
            raise RemoteError(host, step, f"{self.lead} did not run the release command ({why}); this host was "
                              "left on its old release", "fix the lead host's failure, then deploy again")
