"""Sessions logged in before a rollout are used for each host's work once, and one dropped while it
waited is replaced by a new login (fakes for the SSH sessions)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from provision.engine.runner import HostOutcome
from provision.transport.ssh import Target
from provision.workflows import on_hosts


class Kept:
    def __init__(self, name: str, alive: bool, log: list):
        self.name, self._alive, self.log = name, alive, log

    def alive(self) -> bool:
        return self._alive

    def close(self) -> None:
        self.log.append(("close", self.name, self._alive))


def target(name: str) -> Target:
    return Target(name, "10.0.0.1", 22, ("deploy",), Path("/nonexistent/key"))


def test_a_kept_session_is_used_and_a_dropped_one_replaced(tmp_path, monkeypatch):
    log: list = []
    monkeypatch.setattr(on_hosts, "connect", lambda t, known, redactor: log.append(("connect", t.name)) or
                        Kept(t.name + " (new)", True, log))
    env = SimpleNamespace(name="prod", workspace=SimpleNamespace(known_hosts_path=tmp_path / "known_hosts"))
    hosts = [SimpleNamespace(name=n) for n in ("web-1", "web-2", "web-3")]
    kept = {"web-1": Kept("web-1", True, log), "web-2": Kept("web-2", False, log)}

    def work(host, session):
        log.append(("work", host.name, session.name))
        return HostOutcome(host.name, ok=1)

    report = on_hosts.run_on_hosts(env, hosts, [target(h.name) for h in hosts], lambda s: s, 1, work, "deploy",
                                   sessions=kept)
    assert [h.ok for h in report.hosts.values()] == [1, 1, 1] and kept == {}
    assert log == [("work", "web-1", "web-1"), ("close", "web-1", True),
                   ("close", "web-2", False), ("connect", "web-2"), ("work", "web-2", "web-2 (new)"),
                   ("close", "web-2 (new)", True),
                   ("connect", "web-3"), ("work", "web-3", "web-3 (new)"), ("close", "web-3 (new)", True)]
