"""DAG releases over several hosts (pure parts): which hosts and in what order they switch, --hosts
leaving one out, and a failed switch switching back the hosts already switched."""
from pathlib import Path

import pytest

from provision.errors import DropshipError, RemoteError
from provision.workflows.dag_release import Member, dag_hosts, switch_all
from provision.workflows.deploy import check_dag_hosts, deployed_roles
from tests.unit.test_airflow_workers_rules import WORKERS, load


class FakeDags:
    def __init__(self, name: str, log: list, fail: bool = False):
        self.name, self.log, self.fail = name, log, fail

    def switch(self, release: str) -> float:
        if self.fail:
            raise RemoteError(self.name, f"switch DAGs to {release}", "disk full")
        self.log.append((self.name, release))
        return 1.5


def with_dags(tmp_path: Path):
    (tmp_path / "dags").mkdir(exist_ok=True)
    return load(tmp_path, WORKERS.replace("      executor: celery\n", "      executor: celery\n      dags: dags\n"))


def test_workers_switch_first_and_the_airflow_host_last(tmp_path):
    env = with_dags(tmp_path)
    assert [h.name for h in dag_hosts(env, list(env.hosts))] == ["worker-1", "airflow-1"]
    assert deployed_roles(env, env.host("worker-1")) == ("airflow_worker",)
    assert [h.name for h in check_dag_hosts(env, list(env.hosts))] == ["worker-1", "airflow-1"]
    assert check_dag_hosts(env, list(env.hosts), "app") == []


def test_hosts_may_not_leave_a_dag_host_out(tmp_path):
    env = with_dags(tmp_path)
    with pytest.raises(DropshipError) as info:
        check_dag_hosts(env, [env.host("airflow-1")])
    assert "leaves out worker-1" in str(info.value) and "add worker-1 to --hosts" in info.value.fix


def test_a_failed_switch_switches_back_the_hosts_already_switched():
    log: list = []
    members = [Member("worker-1", None, FakeDags("worker-1", log), previous="20260101T000000Z"),
               Member("airflow-1", None, FakeDags("airflow-1", log, fail=True), previous="20260101T000000Z")]
    with pytest.raises(RemoteError):
        switch_all(members, "20260202T000000Z")
    assert log == [("worker-1", "20260202T000000Z"), ("worker-1", "20260101T000000Z")]
    log.clear()
    members[1].dags.fail = False
    members[0].previous = None
    assert switch_all(members, "20260303T000000Z") == 1.5
    assert log == [("worker-1", "20260303T000000Z"), ("airflow-1", "20260303T000000Z")]
