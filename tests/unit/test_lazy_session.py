"""A host's session to the database host logs in on its first script, once, and only then closes."""
from pathlib import Path

from provision.transport import ssh
from provision.transport.ssh import LazySession, Result, Target

DB = Target("db-1", "10.0.0.5", 22, ("deploy",), Path("/nonexistent/key"))


class Opened:
    def __init__(self, log):
        self.log = log

    def script(self, text, on_line=None, timeout=None):
        self.log.append(("script", text, timeout))
        return Result(0, "out\n", "")

    def close(self):
        self.log.append(("close",))


def test_logs_in_on_first_script_only(monkeypatch):
    log = []
    monkeypatch.setattr(ssh, "connect", lambda target, known, redactor: log.append(("connect", target.name)) or
                        Opened(log))
    lazy = LazySession(DB, known=None, redactor=None)
    assert lazy.name == "db-1" and log == []
    assert lazy.script("pg_dump", timeout=5).stdout == "out\n"
    lazy.script("psql")
    lazy.close()
    assert log == [("connect", "db-1"), ("script", "pg_dump", 5), ("script", "psql", None), ("close",)]


def test_never_used_never_connects(monkeypatch):
    monkeypatch.setattr(ssh, "connect", lambda *a: (_ for _ in ()).throw(AssertionError("connected")))
    lazy = LazySession(DB, known=None, redactor=None)
    lazy.close()
