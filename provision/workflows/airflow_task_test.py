"""``airflow.test``: one task run alone, on a run Airflow's scheduler leaves alone, and its outcome.

Where no run exists at the date, Airflow's ``tasks test`` makes a temporary *running* run: the scheduler
then runs the DAG's other tasks on it too (apache/airflow#35994) and can deadlock with its removal. Here
that run is made beforehand, already finished, so the scheduler never looks at it; the task's state is
read from the database afterwards (``tasks test`` exits 0 when the task fails); the run is then removed,
by the same process in the scheduler's container (also when it is told to stop). A run left anyway
(the process killed) is removed by the next test at its date, or by any test an hour later.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..engine.model import q
from ..errors import DropshipError, one_line
from ..inventory import Environment
from ..secrets import redactor_for
from .airflow import check_date, compose_exec, json_object, run

TEMPORARY = "__airflow_temporary_run_"       # Airflow's own prefix: its `tasks test` leftovers go too

# argv: dag id, task id, date, params (a JSON object, or ""), map index (-1: not mapped). Prints
# PREPARED {"run_id", "created"} or {"error"}, the task's log, then FINISHED {"rc", "state"[, "left", "error"]}: one process, so Airflow is imported once.
TASK_TEST = r"""
import json, signal, sys, time, traceback
from datetime import datetime, timedelta, timezone
from airflow.cli import cli_parser
from airflow.cli.commands import task_command
from airflow.models.dagrun import DagRun
from airflow.models.serialized_dag import SerializedDagModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
TEMPORARY = "__airflow_temporary_run_"
dag_id, task_id, when, params, map_index = sys.argv[1:6]
def say(marker, **kw):
    print(marker + " " + json.dumps(kw), flush=True)
def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[-1]
def made(run_id):
    try:
        at = datetime.fromisoformat(run_id[len(TEMPORARY):].rstrip("_"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
def prepare():
    with create_session() as s:
        dag = SerializedDagModel.get_dag(dag_id, session=s)
        if dag is None:
            return {"error": "not found"}
        old = datetime.now(timezone.utc) - timedelta(hours=1)
        for dr in s.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id.startswith(TEMPORARY)).all():
            if dr.state != DagRunState.RUNNING and (made(dr.run_id) is None or made(dr.run_id) < old):
                s.delete(dr)
        s.flush()
        def run():
            return task_command._get_dag_run(dag=dag, create_if_necessary="db", logical_date_or_run_id=when,
                                             session=s)
        try:
            dr, created = run()
            if not created and dr.run_id.startswith(TEMPORARY) and dr.state != DagRunState.RUNNING:
                s.delete(dr)                    # a killed test's, at this date
                s.flush()
                dr, created = run()
        except Exception as e:
            return {"error": first_line(e)}
        if created:
            dr.state = DagRunState.SUCCESS      # finished: the scheduler never examines it
        s.commit()
        return {"run_id": dr.run_id, "created": created}
prepared = prepare()
say("PREPARED", **prepared)
if "error" in prepared:
    sys.exit(0)
run_id = prepared["run_id"]
def ended(signum, frame):
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, ended)
signal.signal(signal.SIGHUP, ended)
rc = 0
try:
    args = cli_parser.get_parser().parse_args(["tasks", "test", dag_id, task_id, run_id, "--map-index", map_index]
                                              + (["-t", params] if params else []))
    args.func(args)
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except BaseException:
    traceback.print_exc()
    rc = 1
with create_session() as s:
    ti = s.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=int(map_index)).one_or_none()
    state = None if ti is None or ti.state is None else getattr(ti.state, "value", str(ti.state))
result = {"rc": rc, "state": state}
for attempt in range(6 if prepared["created"] else 0):
    try:
        with create_session() as s:
            for dr in s.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).all():
                s.delete(dr)
        break
    except Exception as e:
        if attempt == 5:
            result.update(left=run_id, error=first_line(e))
        time.sleep(1 + attempt)
say("FINISHED", **result)
"""
MARKERS = ("PREPARED ", "FINISHED ")

PASSED = ("success", "skipped")


@dataclass(frozen=True)
class Outcome:
    rc: int                   # of `airflow tasks test`
    state: str | None         # the task instance's, from the database
    left: str | None = None   # the run that could not be removed

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.state in PASSED


def task_test_command(dag: str, task: str, date: str, params: str | None = None, map_index: int = -1) -> str:
    """The test in the scheduler's container; ``params``: checked JSON, the task's params;
    ``map_index``: which instance of a mapped task (-1: the task is not mapped)."""
    return compose_exec(f"python -c {q(TASK_TEST)} {q(dag)} {q(task)} {q(date)} {q(params or '')} {int(map_index)}")


def check_map_index(value: str | None) -> int:
    """``--map-index`` as a number (-1 where it is not given), else one error line (pure)."""
    if value is None:
        return -1
    if not re.fullmatch(r"\d{1,7}", value):
        raise DropshipError(f"--map-index {one_line(value)!r} is not a number like 0",
                            "pass the index of the mapped task's instance (0 for the first), as the UI shows it")
    return int(value)


def label(task: str, map_index: int) -> str:
    """``task``, or ``task[2]`` for one instance of a mapped task (pure)."""
    return task if map_index < 0 else f"{task}[{map_index}]"


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


def run_task_test(env: Environment, dag: str, task: str, date: str, on_line=None, params: str | None = None,
                  map_index: int = -1) -> Outcome:
    """Run ``task`` of ``dag`` at ``date`` in isolation (with ``params``, a JSON object, as its
    params; ``map_index`` from ``check_map_index``: one instance of a mapped task), streaming its log
    to ``on_line`` (secrets masked). The inputs are checked before Airflow's host is contacted."""
    check_date("--date", date)
    params = json_object("--params", params) if params is not None else None
    shown = (lambda line: None if line.startswith(MARKERS) else on_line(line)) if on_line else None
    rc, out = run(env, task_test_command(dag, task, date, params, map_index), on_line=shown, timeout=900)
    prepared = marked(out, "PREPARED")
    if prepared is None or "error" in prepared:
        why = prepared["error"] if prepared else (out.strip().splitlines() or ["no answer"])[-1]
        redact = redactor_for(env)
        if why == "not found":
            raise DropshipError(redact(f"airflow.test: Airflow has no DAG {dag!r}"),
                                "check the DAG id with `invoke airflow.dags` (it lists the DAGs Airflow parsed)")
        raise DropshipError(redact(f"airflow.test: could not make a run of {dag} at {date}: {why}"),
                            "check the date against the DAG's schedule; `invoke airflow.logs` shows Airflow's side")
    done = marked(out, "FINISHED") or {"rc": rc or 1, "state": None}
    return Outcome(done["rc"], done["state"], done.get("left"))
