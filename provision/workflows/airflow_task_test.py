"""``airflow.test``: one task run alone, on a run Airflow's scheduler leaves alone, and its outcome.

Where no run exists at the date, Airflow's ``tasks test`` makes a temporary *running* run: the scheduler
then runs the DAG's other tasks on it too (apache/airflow#35994) and can deadlock with its removal. Here
that run is made beforehand, already finished, so the scheduler never looks at it; the task's state is
read from the database afterwards (``tasks test`` exits 0 when the task fails); the run is then removed.
A run left by a killed client is removed by the next test at its date, or by any test after an hour.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..engine.model import q
from ..errors import DropshipError
from ..inventory import Environment
from .airflow import _session, check_date, compose_exec

TEMPORARY = "__airflow_temporary_run_"       # Airflow's own prefix: its `tasks test` leftovers go too

# argv: dag id, date. Prints PREPARED {"run_id", "created"} or {"error"}.
PREPARE = r"""
import json, sys
from datetime import datetime, timedelta, timezone
from airflow.cli.commands import task_command
from airflow.models.dagrun import DagRun
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
TEMPORARY = "__airflow_temporary_run_"
dag_id, when = sys.argv[1], sys.argv[2]
def made(run_id):
    try:
        return datetime.fromisoformat(run_id[len(TEMPORARY):].rstrip("_"))
    except ValueError:
        return None
def out(**kw):
    print("PREPARED " + json.dumps(kw))
    sys.exit(0)
with create_session() as s:
    dag = SerializedDagModel.get_dag(dag_id, session=s)
    if dag is None:
        out(error="not found")
    old = datetime.now(timezone.utc) - timedelta(hours=1)
    at_date, _ = task_command.fetch_dag_run_from_run_id_or_logical_date_string(dag_id=dag_id, value=when, session=s)
    for dr in s.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id.startswith(TEMPORARY)).all():
        if dr.state != DagRunState.RUNNING and (dr is at_date or made(dr.run_id) is None or made(dr.run_id) < old):
            s.delete(dr)
    s.flush()
    try:
        dr, created = task_command._get_dag_run(dag=dag, create_if_necessary="db", logical_date_or_run_id=when,
                                                session=s)
    except Exception as e:
        out(error=str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
    if created:
        dr.state = DagRunState.SUCCESS
    s.commit()
    out(run_id=dr.run_id, created=created)
"""

# argv: dag id, run id, task id, 1 to remove the run. Prints FINISHED {"state", ["left", "error"]}.
FINISH = r"""
import json, sys, time
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
dag_id, run_id, task_id, remove = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
with create_session() as s:
    ti = s.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1).one_or_none()
    state = None if ti is None or ti.state is None else getattr(ti.state, "value", str(ti.state))
result = {"state": state}
for attempt in range(6 if remove else 0):
    try:
        with create_session() as s:
            for dr in s.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).all():
                s.delete(dr)
        break
    except Exception as e:
        if attempt == 5:
            result.update(left=run_id, error=(str(e).strip().splitlines() or [type(e).__name__])[0])
        time.sleep(1 + attempt)
print("FINISHED " + json.dumps(result))
"""

PASSED = ("success", "skipped")


@dataclass(frozen=True)
class Outcome:
    rc: int                   # of `airflow tasks test`
    state: str | None         # the task instance's, from the database
    left: str | None = None   # the run that could not be removed

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.state in PASSED


def prepare_command(dag: str, date: str) -> str:
    return compose_exec(f"python -c {q(PREPARE)} {q(dag)} {q(date)}")


def tasks_test_command(dag: str, task: str, run: str) -> str:
    return compose_exec(f"airflow tasks test {q(dag)} {q(task)} {q(run)}")


def finish_command(dag: str, run_id: str, task: str, remove: bool) -> str:
    return compose_exec(f"python -c {q(FINISH)} {q(dag)} {q(run_id)} {q(task)} {1 if remove else 0}")


def marked(output: str, marker: str) -> dict | None:
    """The JSON after ``marker`` on its line of ``output``, or None (pure)."""
    line = next((ln for ln in output.splitlines() if ln.startswith(marker + " ")), None)
    return json.loads(line[len(marker) + 1:]) if line else None


def summary(dag: str, task: str, outcome: Outcome) -> str:
    """The line ``airflow.test`` ends with (pure)."""
    if outcome.state is None:
        text = f"{dag}.{task}: no outcome recorded (`airflow tasks test` exited {outcome.rc})"
    else:
        text = f"{dag}.{task}: {outcome.state}"
        if outcome.rc != 0:
            text += f", but `airflow tasks test` exited {outcome.rc}"
    if outcome.left:
        text += (f"; its test run {outcome.left} could not be removed: the next test of {dag} "
                 "removes it, or delete it in the UI")
    return text


def run_task_test(env: Environment, dag: str, task: str, date: str, on_line=None) -> Outcome:
    """Run ``task`` of ``dag`` at ``date`` in isolation, streaming its log to ``on_line`` (secrets masked)."""
    check_date("--date", date)
    session = _session(env)
    redact = session.redact
    try:
        out = session.script(prepare_command(dag, date), timeout=300).stdout
        prepared = marked(out, "PREPARED")
        if prepared is None or "error" in prepared:
            why = prepared["error"] if prepared else (out.strip().splitlines() or ["no answer"])[-1]
            if why == "not found":
                raise DropshipError(redact(f"airflow.test: Airflow has no DAG {dag!r}"),
                                    "check the DAG id with `invoke airflow.dags` (it lists the DAGs Airflow parsed)")
            raise DropshipError(redact(f"airflow.test: could not make a run of {dag} at {date}: {why}"),
                                "check the date against the DAG's schedule; `invoke airflow.logs` shows Airflow's side")
        run_id, created = prepared["run_id"], prepared["created"]
        rc = 1
        try:
            rc = session.script(tasks_test_command(dag, task, run_id), timeout=900,
                                on_line=(lambda line: on_line(redact(line))) if on_line else None).rc
        finally:
            done = marked(session.script(finish_command(dag, run_id, task, created), timeout=300).stdout,
                          "FINISHED") or {}
        return Outcome(rc, done.get("state"), done.get("left"))
    finally:
        session.close()
