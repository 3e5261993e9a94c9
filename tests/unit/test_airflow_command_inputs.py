"""What airflow.trigger, airflow.test, airflow.backfill, airflow.logs and the --app of rollback,
releases and unlock accept, checked before any host is contacted (pure)."""
import pytest

from provision.errors import DropshipError
from provision.workflows.airflow import check_date, json_object, service_name, trigger_command
from provision.workflows.deploy import chosen_apps
from tests.unit.test_airflow_workers_rules import load

ONE_HOST = """\
environments:
  e:
    provider: local
    droplets:
      - name: box
        size: s-2vcpu-4gb
        roles: [base, postgres, docker, nginx, airflow]
    airflow:
      version: 3.3.2
      image: apache/airflow:3.3.2
"""


@pytest.mark.parametrize("value", ["2015-06-01", "2015-06-01T12:00:00", "2015-06-01T12:00:00+02:00"])
def test_dates_and_times(value):
    assert check_date("--date", value) == value


@pytest.mark.parametrize("value", ["notadate", "2015-13-01", "2015-06-01; rm -rf /", "", "$(id)", "2015-06-01\n"])
def test_not_dates(value):
    with pytest.raises(DropshipError) as info:
        check_date("--date", value)
    assert str(info.value) == (f"--date {value!r} is not a date like 2015-06-01 or 2015-06-01T12:00:00+00:00 "
                               "(fix: pass e.g. --date 2015-06-01)")


@pytest.mark.parametrize("value", ["2015-06-01T00:00:00", "20150601", "2015-6-1"])
def test_a_range_takes_days(value):
    with pytest.raises(DropshipError) as info:
        check_date("--start", value, day=True)
    assert str(info.value) == f"--start {value!r} is not a date like 2015-06-01 (fix: pass e.g. --start 2015-06-01)"


def test_trigger_command_keeps_the_conf_one_argument():
    conf = json_object("--conf", '{"who": "it\'s $(id)", "n": [1, 2.5, null],\n "nested": {"a": true}}')
    assert conf == '{"who":"it\'s $(id)","n":[1,2.5,null],"nested":{"a":true}}'
    assert trigger_command("team_etl", "2015-06-01", conf) == (
        "airflow dags trigger team_etl --logical-date 2015-06-01 --conf "
        "'{\"who\":\"it'\"'\"'s $(id)\",\"n\":[1,2.5,null],\"nested\":{\"a\":true}}' -o json")
    assert trigger_command("x; reboot", None, None) == "airflow dags trigger 'x; reboot' -o json"


@pytest.mark.parametrize("value, message", [
    ("{'a': 1}", "--conf is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("", "--conf is not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("[1, 2]", "--conf is an array, not a JSON object"),
    ('"day"', "--conf is a string, not a JSON object"),
    ("null", "--conf is null, not a JSON object"),
    ("2.5", "--conf is a number, not a JSON object"),
])
def test_a_conf_is_a_json_object(value, message):
    with pytest.raises(DropshipError) as info:
        json_object("--conf", value)
    assert info.value.message == message and info.value.fix == """pass an object, e.g. --conf '{"day": "2015-06-01"}'"""


def test_services_by_short_or_compose_name(tmp_path):
    env = load(tmp_path, ONE_HOST)
    assert service_name(env, "scheduler") == "airflow-scheduler"
    assert service_name(env, "airflow-dag-processor") == "airflow-dag-processor"
    with pytest.raises(DropshipError) as info:
        service_name(env, "worker")         # local executor: no worker
    assert str(info.value) == ("no Airflow service 'worker' on box (fix: use --service with one of: apiserver, "
                               "scheduler, dag-processor, triggerer)")


def test_workers_and_flower_are_services_where_they_run(tmp_path):
    env = load(tmp_path, ONE_HOST.replace("version: 3.3.2", "version: 3.3.2\n      executor: celery\n"
                                                            "      flower: true"))
    assert service_name(env, "worker") == "airflow-worker"
    assert service_name(env, "flower") == "airflow-flower"


def test_the_app_flag_is_named_as_given(tmp_path):
    env = load(tmp_path, ONE_HOST)
    with pytest.raises(DropshipError) as info:
        chosen_apps(env, "nope", "--app")
    assert str(info.value).startswith("unknown --app 'nope' (fix: use --app app, --app airflow or an app's name: ")
    with pytest.raises(DropshipError) as info:
        chosen_apps(env, "nope")
    assert str(info.value).startswith("unknown --only 'nope' (fix: use --only app, ")
