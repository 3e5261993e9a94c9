"""Airflow's services stopped on every host while its database is replaced (db.copy, db.restore): what
runs on which host, in which order, when the block works, fails, or a host does not stop (fake sessions)."""
import pytest

from provision.errors import RemoteError
from provision.transport.ssh import Result
from provision.workflows.airflow_database import START, STOP, services_stopped

COMPOSE = "docker compose --project-directory /srv/airflow -p airflow"


class FakeSession:
    def __init__(self, name: str, log: list, fail: str | None = None):
        self.name, self.log, self.fail = name, log, fail

    def script(self, text: str, timeout=None) -> Result:
        self.log.append((self.name, text))
        failed = text == self.fail
        return Result(1 if failed else 0, "Error response from daemon: a secret-ish failure" if failed else "", "")

    def redact(self, text: str) -> str:
        return text.replace("secret-ish", "***")


def hosts(log, fail_on=None, fail=STOP):
    return {n: FakeSession(n, log, fail if n == fail_on else None) for n in ("web-1", "worker-1")}


def test_the_commands():
    assert (STOP, START) == (f"{COMPOSE} stop", f"{COMPOSE} start")


def test_stopped_everywhere_for_the_block_then_started_again():
    log, said = [], []
    with services_stopped(hosts(log), said.append):
        log.append(("here", "block"))
    assert log == [("web-1", STOP), ("worker-1", STOP), ("here", "block"), ("web-1", START), ("worker-1", START)]
    assert said == ["airflow: stopping its services on web-1 …", "airflow: stopping its services on worker-1 …",
                    "airflow: starting its services on web-1 again …",
                    "airflow: starting its services on worker-1 again …"]


def test_left_stopped_after_the_block_when_asked():
    log = []
    with services_stopped(hosts(log), lambda _: None, start_after=False):
        log.append(("here", "block"))
    assert log == [("web-1", STOP), ("worker-1", STOP), ("here", "block")]


@pytest.mark.parametrize("start_after", [True, False])
def test_a_failed_block_starts_them_again(start_after):
    log = []
    with pytest.raises(KeyboardInterrupt):
        with services_stopped(hosts(log), lambda _: None, start_after=start_after):
            raise KeyboardInterrupt
    assert log == [("web-1", STOP), ("worker-1", STOP), ("web-1", START), ("worker-1", START)]


def test_a_host_that_does_not_stop_runs_nothing_and_starts_all_again():
    log = []
    with pytest.raises(RemoteError) as info:
        with services_stopped(hosts(log, fail_on="worker-1"), lambda _: None):
            log.append(("here", "block"))
    assert log == [("web-1", STOP), ("worker-1", STOP), ("web-1", START), ("worker-1", START)]
    assert str(info.value) == ("worker-1: stop Airflow: Error response from daemon: a *** failure (fix: check Docker "
                               "there; Airflow was started again and its database left as it was)")
