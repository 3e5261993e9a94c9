"""Every host converges at once: a host of a later wave installs its packages at once, and changes
its configuration only after the hosts of the earlier waves finished (not at all when one failed);
a run without changes never waits. The gate with threads, and Converge run for real against this
machine's /bin/sh."""
import subprocess
import threading
import time
from pathlib import Path

import pytest

from provision.engine.files import File
from provision.engine.model import PHASE_CONFIG, PHASE_PACKAGES, PHASE_SERVICES, PHASE_TRUST
from provision.engine.runner import Converge, Progress
from provision.errors import RemoteError
from provision.transport.ssh import Result, Target
from provision.workflows.provision import WaveGate


def targets(*names):
    return [Target(n, "127.0.0.1", 22, ("deploy",), Path("k")) for n in names]


def test_a_later_wave_waits_for_the_earlier_hosts():
    gate = WaveGate([targets("db-1"), targets("web-1", "web-2"), targets("worker-1")])
    gate.wait("db-1", PHASE_SERVICES)                  # the first wave never waits
    gate.wait("worker-1", PHASE_TRUST)                 # nor does anyone for trust and packages
    gate.wait("worker-1", PHASE_PACKAGES)
    passed = []
    waiter = threading.Thread(target=lambda: (gate.wait("worker-1", PHASE_CONFIG), passed.append("worker-1")))
    waiter.start()
    gate.finished("db-1", failed=False)
    gate.wait("web-2", PHASE_SERVICES)
    gate.finished("web-1", failed=False)
    time.sleep(0.2)
    assert passed == []                                # web-2 is still running
    gate.finished("web-2", failed=False)
    waiter.join(5)
    assert passed == ["worker-1"]


def test_a_failed_earlier_host_stops_the_later_ones_before_any_change():
    gate = WaveGate([targets("db-1"), targets("web-1")])
    gate.finished("db-1", failed=True)
    gate.wait("web-1", PHASE_PACKAGES)
    with pytest.raises(RemoteError) as failed:
        gate.wait("web-1", PHASE_CONFIG)
    assert str(failed.value) == ("web-1: wait for db-1: db-1, which it depends on, failed: stopped before its "
                                 "configuration (fix: fix db-1 and run provision again)")


class LocalShell:
    """A Session stand-in running scripts with this machine's /bin/sh (as Session.script does)."""

    name = "here"

    def redact(self, text):
        return text

    def script(self, text, on_line=None, timeout=None):
        proc = subprocess.run(["/bin/sh", "-c", f"(\n{text}\n) </dev/null 2>&1"], capture_output=True, text=True,
                              timeout=timeout)
        for line in proc.stdout.splitlines():
            if on_line:
                on_line(line)
        return Result(proc.returncode, proc.stdout, "")


def test_converge_calls_before_changes_only_when_a_phase_changes_something(tmp_path):
    owner = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    files = [File(str(tmp_path / name), b"hello\n", owner, group, 0o600) for name in ("a", "b")]
    calls = []

    def run():
        return Converge(LocalShell(), lambda facts: files, Progress(), before_changes=calls.append).run()

    first = run()
    assert (first.changed, first.failed, calls) == (2, 0, [PHASE_CONFIG])     # one phase, one call
    again = run()
    assert (again.changed, again.failed, calls) == (0, 0, [PHASE_CONFIG])     # nothing to change: no wait


def test_converge_makes_no_change_when_the_wait_fails(tmp_path):
    owner = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    path = tmp_path / "never"

    def refuse(phase):
        raise RemoteError("here", "wait for db-1", "not provisioned: db-1, which it depends on, failed")

    outcome = Converge(LocalShell(), lambda facts: [File(str(path), b"x", owner, group, 0o600)], Progress(),
                       before_changes=refuse).run()
    assert outcome.failed == 1 and outcome.error.startswith("here: wait for db-1: not provisioned")
    assert not path.exists()
