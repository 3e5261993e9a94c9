"""Several app hosts sharing a database: the lead's release command opens the gate the others wait
at (threads, as a deploy's host pool runs them); a lead that fails closes it with why."""
import threading
import time

import pytest

from provision.errors import RemoteError
from provision.workflows.migration_gate import MigrationGate


def waiter(gate: MigrationGate, app: str, host: str, seen: dict) -> threading.Thread:
    def run():
        try:
            gate.wait(app, host, f"wait for {gate.lead}'s release command")
            seen[host] = "go"
        except RemoteError as exc:
            seen[host] = str(exc)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_others_wait_until_the_lead_ran_the_release_command():
    gate, seen = MigrationGate("api-1"), {}
    threads = [waiter(gate, "shop", h, seen) for h in ("api-2", "api-3")]
    time.sleep(0.2)
    assert seen == {}                                   # still waiting
    gate.open("shop")
    for t in threads:
        t.join(5)
    assert seen == {"api-2": "go", "api-3": "go"}
    gate.settle(["shop"], "api-1 failed before it")     # too late to close what was opened
    gate.wait("shop", "api-4", "wait")


def test_a_lead_that_fails_closes_the_gate_and_the_others_say_why_in_one_line():
    gate, seen = MigrationGate("api-1"), {}
    t = waiter(gate, "shop", "api-2", seen)
    gate.open("blog")                                   # another app's release command went through
    gate.settle(["shop", "blog"], "api-1 failed before it")
    t.join(5)
    assert seen["api-2"] == ("api-2: wait for api-1's release command: api-1 did not run the release command "
                             "(api-1 failed before it); this host was left on its old release (fix: fix the lead "
                             "host's failure, then deploy again)")
    gate.wait("blog", "api-2", "wait")                  # blog stays open


def test_a_lead_that_never_decides_ends_the_wait_at_its_bound():
    gate = MigrationGate("api-1", wait=0.2)
    with pytest.raises(RemoteError, match="no word from api-1 within 0 s"):
        gate.wait("shop", "api-2", "wait for api-1's release command")
