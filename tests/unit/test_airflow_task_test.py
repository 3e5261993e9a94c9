"""airflow.test's commands, the markers it reads back and the line it ends with (pure)."""
import shlex

import pytest

from provision.errors import DropshipError
from provision.workflows.airflow_task_test import (MARKERS, TASK_TEST, Outcome, check_map_index, label, marked,
                                                    summary, task_test_command)

EXEC = "docker compose --project-directory /srv/airflow -p airflow exec -T -e PYTHONWARNINGS=ignore airflow-scheduler"
RUN = "__airflow_temporary_run_2026-12-06T12:40:22.090826+00:00__"


def test_inputs_are_arguments_of_the_snippet_never_code():
    dag, task, date = "etl'; rm -rf / #", "it's", "2024-02-29T13:30:00+00:00"
    assert task_test_command(dag, task, date) == \
        f"{EXEC} python -c {shlex.quote(TASK_TEST)} {shlex.quote(dag)} 'it'\"'\"'s' {date} '' -1"
    assert shlex.split(task_test_command(dag, task, date))[-5:] == [dag, task, date, "", "-1"]
    params = '{"rows":"$(id) it\'s"}'
    assert task_test_command(dag, task, date, params, 3) == \
        f"{EXEC} python -c {shlex.quote(TASK_TEST)} {shlex.quote(dag)} 'it'\"'\"'s' {date} {shlex.quote(params)} 3"


def test_a_map_index_is_a_number():
    assert (check_map_index(None), check_map_index("0"), check_map_index("12")) == (-1, 0, 12)
    assert (label("shard", -1), label("shard", 2)) == ("shard", "shard[2]")
    for bad in ("-1", "1; id", "", "1\n", "x" * 9, "12345678"):
        with pytest.raises(DropshipError) as info:
            check_map_index(bad)
        assert info.value.message.startswith("--map-index ") and info.value.message.endswith(" is not a number like 0")
        assert "\n" not in str(info.value)


def test_the_snippet_is_python_and_runs_the_task_through_airflows_own_cli():
    compile(TASK_TEST, "task_test", "exec")
    assert '["tasks", "test", dag_id, task_id, run_id, "--map-index", map_index]' in TASK_TEST
    assert all(m.endswith(" ") and f'say("{m.strip()}"' in TASK_TEST for m in MARKERS)


def test_markers_are_read_from_their_own_line():
    out = ("[info] Created dag run. PREPARED {\"run_id\": \"no\"}\n"
           f"PREPARED {{\"run_id\": \"{RUN}\", \"created\": true}}\nbye\n")
    assert marked(out, "PREPARED") == {"run_id": RUN, "created": True}
    assert marked("Traceback ...\nImportError: x\n", "PREPARED") is None
    assert marked('FINISHED {"state": null}', "FINISHED") == {"state": None}


@pytest.mark.parametrize("outcome,ok", [
    (Outcome(0, "success"), True), (Outcome(0, "skipped"), True), (Outcome(0, "failed"), False),
    (Outcome(0, "up_for_retry"), False), (Outcome(1, "success"), False), (Outcome(0, None), False),
    (Outcome(0, "success", RUN), True),
])
def test_only_a_task_that_succeeded_or_skipped_passes(outcome, ok):
    assert outcome.ok is ok


def test_the_last_line_says_the_tasks_state():
    assert summary("etl", "load", Outcome(0, "success")) == "etl.load: success"
    assert summary("etl", "load", Outcome(0, "failed")) == "etl.load: failed"
    assert summary("etl", "load", Outcome(1, "success")) == "etl.load: success, but `airflow tasks test` exited 1"
    assert summary("etl", "nope", Outcome(1, None)) == "etl.nope: no outcome recorded (`airflow tasks test` exited 1)"
    assert summary("etl", "load", Outcome(0, "success", RUN)) == (
        f"etl.load: success; its test run {RUN} could not be removed: the next test of etl removes it, "
        "or delete it in the UI")
