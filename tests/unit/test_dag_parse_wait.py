"""A DAG deploy returns once the DAG processor has parsed the release: the command and its report."""
import json

from provision.engine.model import q
from provision.workflows.airflow import WAIT_PARSED, parsed_report, wait_parsed_command


def test_wait_parsed_command_exact():
    assert wait_parsed_command(["b", "a'; reboot"], 1764700000.5, 120) == (
        "docker compose --project-directory /srv/airflow -p airflow exec -T -e PYTHONWARNINGS=ignore "
        f"airflow-scheduler python -c {q(WAIT_PARSED)} " + q('["a\'; reboot", "b"]') + " 1764700000.500 120")


def test_the_parse_wait_report():
    assert parsed_report('x\nPARSED {"missing": [], "errors": {}}\n') == ([], {})
    trace = ('Traceback (most recent call last):\n  File "/opt/airflow/dags/current/b.py", line 3, in <module>\n'
             "    x\nNameError: name 'x' is not defined")
    assert parsed_report('PARSED ' + json.dumps({"missing": ["b"], "errors": {"b.py": trace, "c.py": ""}})) == (
        ["b"], {"b.py": "b.py:3: NameError: name 'x' is not defined", "c.py": "c.py"})
    resolved = trace.replace("/current/", "/releases/20261205T101010Z-ab12cd34/")     # the link resolved
    assert parsed_report('PARSED ' + json.dumps({"missing": [], "errors": {"b.py": resolved}}))[1] == \
        {"b.py": "b.py:3: NameError: name 'x' is not defined"}
    assert parsed_report("Traceback ...")[0] == ["(no answer from the DAG processor's database)"]
