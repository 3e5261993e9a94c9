"""airflow.test's commands, the markers it reads back and the line it ends with (pure)."""
import shlex

import pytest

from provision.workflows.airflow_task_test import (FINISH, PREPARE, Outcome, finish_command, marked, prepare_command,
                                                   summary, tasks_test_command)

EXEC = "docker compose --project-directory /srv/airflow -p airflow exec -T -e PYTHONWARNINGS=ignore airflow-scheduler"
RUN = "__airflow_temporary_run_2026-12-06T12:40:22.090826+00:00__"


def test_the_task_runs_on_the_prepared_run_by_its_id():
    assert tasks_test_command("team etl", "it's", RUN) == \
        f"{EXEC} airflow tasks test 'team etl' 'it'\"'\"'s' {RUN}"


def test_prepare_and_finish_pass_their_inputs_as_arguments_never_as_code():
    dag, date = "etl'; rm -rf / #", "2024-02-29T13:30:00+00:00"
    assert prepare_command(dag, date) == f"{EXEC} python -c {shlex.quote(PREPARE)} {shlex.quote(dag)} {date}"
    assert shlex.split(prepare_command(dag, date))[-2:] == [dag, date]
    assert finish_command(dag, RUN, "load", True) == \
        f"{EXEC} python -c {shlex.quote(FINISH)} {shlex.quote(dag)} {RUN} load 1"
    assert shlex.split(finish_command("d", RUN, "t", False))[-4:] == ["d", RUN, "t", "0"]


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
