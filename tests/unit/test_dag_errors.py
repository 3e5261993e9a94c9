"""A DAG's import error as one located line, and the fix for a DAG written for Airflow 2 (pure)."""
import pytest

from provision.dag_errors import DEFAULT_FIX, fix_for, located_error

FOLDER = "/opt/airflow/dags/releases/20261205T180000Z-ab12cd34"
MOVED = ('Traceback (most recent call last):\n  File "<frozen importlib._bootstrap>", line 488, in '
         f'_call_with_frames_removed\n  File "{FOLDER}/etl/load.py", line 2, in <module>\n'
         "    from airflow.operators.bash_operator import BashOperator\n"
         "ModuleNotFoundError: No module named 'airflow.operators.bash_operator'\n")
# Airflow keeps the last frames only ([core] dagbag_import_error_traceback_depth): none in the DAG file.
KWARGS = ('Traceback (most recent call last):\n  File "/opt/airflow-venv/lib/python3.13/site-packages/airflow/sdk/'
          'bases/operator.py", line 1121, in __init__\n    raise TypeError(\n    ...<2 lines>...\n    )\n'
          "TypeError: Invalid arguments were passed to PythonOperator (task_id: t). Invalid arguments were:\n"
          "**kwargs: {'provide_context': True}\n")
HELPER = ('Traceback (most recent call last):\n'
          f'  File "{FOLDER}/report.py", line 4, in <module>\n    from common.sql import QUERY\n'
          f'  File "{FOLDER}/common/sql.py", line 7, in <module>\n    QUERY = open(PATH).read()\n'
          "FileNotFoundError: [Errno 2] No such file or directory: 'q.sql'\n")


def test_the_dag_files_line_and_the_whole_message():
    assert located_error("etl/load.py", MOVED, FOLDER) == \
        "etl/load.py:2: ModuleNotFoundError: No module named 'airflow.operators.bash_operator'"
    assert located_error("x.py", KWARGS, FOLDER + "/") == (
        "x.py: TypeError: Invalid arguments were passed to PythonOperator (task_id: t). Invalid arguments "
        "were: **kwargs: {'provide_context': True}")


def test_an_error_in_a_module_the_dag_imports_names_both():
    assert located_error("report.py", HELPER, FOLDER) == \
        "report.py (common/sql.py:7): FileNotFoundError: [Errno 2] No such file or directory: 'q.sql'"


def test_odd_tracebacks_still_give_a_line():
    assert located_error("a.py", "", FOLDER) == "a.py"
    assert located_error("a.py", "something went wrong\n", FOLDER) == "a.py: something went wrong"
    long = located_error("a.py", "ValueError: " + "x" * 400, FOLDER)
    assert long.startswith("a.py: ValueError: xxx") and long.endswith("...") and len(long) == len("a.py: ") + 300


@pytest.mark.parametrize("message, advice", [
    ("TypeError: DAG.__init__() got an unexpected keyword argument 'schedule_interval'",
     "schedule_interval= is schedule= in Airflow 3"),
    ("TypeError: DAG.__init__() got an unexpected keyword argument 'timetable'", "timetable= is schedule= in Airflow 3"),
    ("TypeError: DAG.__init__() got an unexpected keyword argument 'concurrency'",
     "concurrency= is max_active_tasks= in Airflow 3"),
    ("TypeError: DAG.__init__() got an unexpected keyword argument 'fail_stop'", "fail_stop= is fail_fast= in Airflow 3"),
    ("TypeError: Invalid arguments were passed to PythonOperator (task_id: t). Invalid arguments were: "
     "**kwargs: {'provide_context': True}",
     "Airflow 3 has no provide_context=: a callable gets the context it names (def f(ds, ti) or **context)"),
    ("TypeError: Invalid arguments were passed to BashOperator (task_id: t). Invalid arguments were: "
     "**kwargs: {'task_concurrency': 2}", "task_concurrency= is max_active_tis_per_dag= in Airflow 3"),
    ("ModuleNotFoundError: No module named 'airflow.operators.bash_operator'",
     "import BashOperator from airflow.providers.standard.operators.bash"),
    ("ModuleNotFoundError: No module named 'airflow.operators.python_operator'",
     "import PythonOperator from airflow.providers.standard.operators.python"),
    ("ModuleNotFoundError: No module named 'airflow.operators.dummy'",
     "use EmptyOperator from airflow.providers.standard.operators.empty"),
    ("ModuleNotFoundError: No module named 'airflow.operators.dummy_operator'",
     "use EmptyOperator from airflow.providers.standard.operators.empty"),
    ("ModuleNotFoundError: No module named 'airflow.sensors.external_task_sensor'",
     "import ExternalTaskSensor from airflow.providers.standard.sensors.external_task"),
    ("ModuleNotFoundError: No module named 'airflow.hooks.base_hook'", "import BaseHook from airflow.sdk"),
    ("ModuleNotFoundError: No module named 'airflow.contrib'",
     "airflow.contrib moved to provider packages (apache-airflow-providers-*)"),
    ("ImportError: cannot import name 'days_ago' from 'airflow.utils.dates' (/opt/x/dates.py)",
     "days_ago() is gone: give start_date a fixed date, e.g. pendulum.datetime(2024, 1, 1)"),
    ("ImportError: cannot import name 'apply_defaults' from 'airflow.utils.decorators' (unknown location)",
     "remove @apply_defaults: Airflow 3 applies default_args itself"),
])
def test_a_dag_written_for_airflow_2_gets_airflow_3s_replacement(message, advice):
    assert fix_for("old.py:3: " + message) == (
        f"the DAG was written for Airflow 2: {advice}; `ruff check --select AIR3` on the DAGs lists every "
        "Airflow 2 use; the running DAGs were left as they were")


def test_another_missing_airflow_name_points_at_the_upgrade_check():
    assert fix_for("a.py:1: ImportError: cannot import name 'Dataset' from 'airflow' (unknown location)") == (
        "the DAG uses an Airflow API this version does not have; `ruff check --select AIR3` on the DAGs lists "
        "every Airflow 2 use; the running DAGs were left as they were")
    assert fix_for("a.py:1: ModuleNotFoundError: No module named 'airflow.sensors.sql'") == fix_for(
        "a.py:1: ImportError: cannot import name 'Dataset' from 'airflow.datasets' (x.py)")


def test_a_missing_module_names_the_package_to_add():
    assert fix_for("a.py:1: ModuleNotFoundError: No module named 'airflow.providers.slack'") == (
        "the Airflow image has no airflow.providers.slack: add its provider package (apache-airflow-providers-...) "
        "to the requirements.txt of airflow.build.context, then provision; the running DAGs were left as they were")
    assert fix_for("a.py:1: ModuleNotFoundError: No module named 'pandas'") == (
        "pandas is neither in the Airflow image nor in the DAGs' folder: add its package to the requirements.txt "
        "of airflow.build.context and provision, or ship it with the DAGs (git-ignored files do not ship); "
        "the running DAGs were left as they were")


def test_anything_else_keeps_the_plain_fix():
    for message in ("a.py:2: KeyError: 'timetable'", "a.py:3: NameError: name 'schedule_interval' is not defined",
                    "a.py:4: ZeroDivisionError: division by zero"):
        assert fix_for(message) == DEFAULT_FIX == "fix the DAG and deploy again; the running DAGs were left as they were"
