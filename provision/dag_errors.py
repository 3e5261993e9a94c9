"""A DAG file's import error as one located line, and its fix (pure).

Airflow records a traceback per file. ``located_error`` makes it ``file.py:LINE: Error: message``
(the DAG file's own frame, the whole exception message); ``fix_for`` says what to change: Airflow 3's
replacement when the DAG was written for Airflow 2 (the commonest case for a team that brings its
DAGs along), the package to add when a module is missing.
"""
from __future__ import annotations

import re

LEFT = "the running DAGs were left as they were"
DEFAULT_FIX = f"fix the DAG and deploy again; {LEFT}"
RUFF_AIRFLOW3 = "`ruff check --select AIR3` on the DAGs lists every Airflow 2 use"

# (what the error says, what Airflow 3 wants instead); the first match wins.
_STD = "airflow.providers.standard"
AIRFLOW2: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), fix) for p, fix in (
    (r"keyword argument 'schedule_interval'", "schedule_interval= is schedule= in Airflow 3"),
    (r"keyword argument 'timetable'", "timetable= is schedule= in Airflow 3"),
    (r"keyword argument 'concurrency'", "concurrency= is max_active_tasks= in Airflow 3"),
    (r"keyword argument 'fail_stop'", "fail_stop= is fail_fast= in Airflow 3"),
    (r"Invalid arguments were.*'provide_context'", "Airflow 3 has no provide_context=: a callable gets the "
                                                   "context it names (def f(ds, ti) or **context)"),
    (r"Invalid arguments were.*'task_concurrency'", "task_concurrency= is max_active_tis_per_dag= in Airflow 3"),
    (r"'airflow\.operators\.bash(?:_operator)?'", f"import BashOperator from {_STD}.operators.bash"),
    (r"'airflow\.operators\.python(?:_operator)?'", f"import PythonOperator from {_STD}.operators.python"),
    (r"'airflow\.operators\.(?:dummy|dummy_operator|empty)'", f"use EmptyOperator from {_STD}.operators.empty"),
    (r"'airflow\.sensors\.external_task(?:_sensor)?'", f"import ExternalTaskSensor from {_STD}.sensors.external_task"),
    (r"'airflow\.hooks\.base(?:_hook)?'", "import BaseHook from airflow.sdk"),
    (r"'airflow\.contrib", "airflow.contrib moved to provider packages (apache-airflow-providers-*)"),
    (r"'days_ago'", "days_ago() is gone: give start_date a fixed date, e.g. pendulum.datetime(2024, 1, 1)"),
    (r"'apply_defaults'", "remove @apply_defaults: Airflow 3 applies default_args itself"),
))
_PROVIDER = re.compile(r"No module named '(airflow\.providers\.[\w.]+)'")
# A module or name of airflow that is not there (not a provider's): likely another release's API.
_AIRFLOW_API = re.compile(r"No module named 'airflow\.|cannot import name '\w+' from 'airflow[.']")
_MISSING = re.compile(r"No module named '([\w.]+)'")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*: ")


def located_error(path: str, traceback: str, folder: str) -> str:
    """``path[:line]: <exception and message>`` from ``traceback``: the line of the last frame in the DAG
    file, or ``path (helper.py:line)`` when that frame is in another file of ``folder`` (a module the DAG
    imports); the message runs from the last exception line to the end, on one line."""
    lines = [ln for ln in str(traceback).strip().splitlines() if ln.strip()]
    root = folder.rstrip("/") + "/"
    frames = [m for m in map(_FRAME.match, lines) if m and m["file"].startswith(root)]
    where = path
    if frames:
        file, line = frames[-1]["file"][len(root):], frames[-1]["line"]
        where = f"{path}:{line}" if file == path else f"{path} ({file}:{line})"
    starts = [i for i, ln in enumerate(lines) if _EXCEPTION.match(ln)]
    message = " ".join(ln.strip() for ln in lines[starts[-1]:]) if starts else (lines[-1].strip() if lines else "")
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{where}: {message}" if message else where


def fix_for(message: str) -> str:
    """What to change: Airflow 3's replacement when ``message`` shows an Airflow 2 API, the package to add
    when a module is missing, else ``DEFAULT_FIX``."""
    for pattern, fix in AIRFLOW2:
        if pattern.search(message):
            return f"the DAG was written for Airflow 2: {fix}; {RUFF_AIRFLOW3}; {LEFT}"
    if provider := _PROVIDER.search(message):
        return (f"the Airflow image has no {provider[1]}: add its provider package (apache-airflow-providers-...) "
                f"to the requirements.txt of airflow.build.context, then provision; {LEFT}")
    if _AIRFLOW_API.search(message):
        return f"the DAG uses an Airflow API this version does not have; {RUFF_AIRFLOW3}; {LEFT}"
    if missing := _MISSING.search(message):
        return (f"{missing[1]} is neither in the Airflow image nor in the DAGs' folder: add its package to the "
                "requirements.txt of airflow.build.context and provision, or ship it with the DAGs (git-ignored "
                f"files do not ship); {LEFT}")
    return DEFAULT_FIX
