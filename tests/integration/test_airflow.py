"""The Airflow stack end to end on a real local droplet: services, DAGs, tasks, runs, the UI behind
nginx, DAG deploys that refuse import errors, and DAG rollbacks.

The module's droplet (s-4vcpu-8gb; roles base, postgres, docker, nginx, airflow; no app) runs the
airflow settings of the repository's inventory.yaml, with the image built from app_src/airflow (cached
by tag: only the first run ever builds it) and the DAGs shipped from a copy of app_src/airflow/dags
kept in a git repository of its own. It is created, provisioned and deployed once; the tests then run
in order and share its state. The REST API is reached as a browser reaches it: through the droplet's
nginx on its published port, with a JWT from POST /airflow/auth/token.
"""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest
import yaml

from provision.state import load_droplets
from provision.workflows import airflow_database as af_db
from provision.workflows.airflow import compose_exec
from provision.workflows.airflow_task_test import TEMPORARY
from tests.browser import airflow_login
from tests.support import (AIRFLOW_SOURCE, DEFAULTS, AirflowAPI, DagRepo, Sandbox, airflow_settings, docker_exec,
                           droplet_spec, http_base, last_json, poll, run_name, sandbox_secret)

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "docker", "nginx", "airflow"]
SIZE = "s-4vcpu-8gb"
DAG = "Helloworld"
SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
HEALTH = ("metadatabase", "scheduler", "triggerer", "dag_processor")
AIRFLOW_PORTS = {8080, 8793, 8794, 8974}        # api-server, log server, triggerer logs, scheduler health
DAGS_DIR = "/srv/airflow/dags"
# How long a deployed or rolled back DAG change may take to show. The dag-processor looks at the
# folder every 5 s (AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL); task-level changes (the serialized DAG)
# are written at most every [core] min_serialized_dag_update_interval (30 s by default) and the
# api-server revalidates its cached copy as often, so a task change right after another one takes
# longer than DAG attributes (tags, owners), which are updated at every parse.
VISIBLE_WITHIN = 30.0
RECIPIENTS = 'data@example.org #team "ops" $HOME'      # an Airflow variable of the inventory: read back as is
TASKS_VISIBLE_WITHIN = 90.0


@dataclass
class Stack:
    box: Sandbox
    repo: DagRepo
    api: AirflowAPI
    container: str
    releases: list[str] = field(default_factory=list)    # DAG releases deployed, oldest first
    timings: dict[str, float] = field(default_factory=dict)
    first_dags: dict = field(default_factory=dict)        # `airflow.dags` right after the first deploy

    @property
    def env(self) -> str:
        return self.box.env

    def invoke(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        started = time.monotonic()
        proc = self.box.invoke(*args, timeout=timeout)
        self.timings[args[0] + (" (refused)" if proc.returncode and args[0] == "deploy" else "")] = \
            round(time.monotonic() - started, 1)
        return proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow")
    repo = DagRepo.create(root / "dags")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    airflow = {**airflow_settings(repo.root), "env": {"AIRFLOW_VAR_REPORT_RECIPIENTS": RECIPIENTS,
                                                      "AIRFLOW_CONN_WAREHOUSE": {"secret": "warehouse_uri"}}}
    defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"}, "airflow": airflow}
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, SIZE, warm=True)]}}, defaults)
    secrets = box.environment().workspace.secrets_path(box.env)       # a connection URI is never generated
    secrets.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secrets.write_text(yaml.safe_dump({"warehouse_uri": "postgresql://etl:p%40ss%23w0rd@warehouse.internal:5432/dw"}))
    secrets.chmod(0o600)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        box.preload_airflow("web-1")              # shipping the image is test_airflow_image_build's
        box.invoke("droplet.create", "--env", box.env, check=True)
        t1 = time.monotonic()
        report, proc = box.provision_json()
        assert report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
        t2 = time.monotonic()
        proc = box.invoke("deploy", "--env", box.env, "--only", "airflow", "--json")
        report = last_json(proc)
        assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
        timings.update({"droplet.create": round(t1 - t0, 1), "provision (incl. image build/ship)": round(t2 - t1, 1),
                        "first deploy --only airflow": round(time.monotonic() - t2, 1)})
        assert "wait for the DAG processor to parse 1 DAG(s)" in proc.stderr, proc.stderr[-3000:]
        stack = Stack(box, repo, AirflowAPI.of(box), f"dropship-{box.env}-web-1", [report["release"]], timings)
        stack.first_dags = dags_json(stack)        # asked at once: the deploy returned once they were parsed
        yield stack
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        print("\nairflow module timings (s): " + json.dumps(timings))


# --- helpers -----------------------------------------------------------------------------------------

def dags_json(stack: Stack) -> dict:
    proc = stack.invoke("airflow.dags", "--env", stack.env, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return last_json(proc)


def listed(found: dict) -> dict[str, dict]:
    return {d["dag_id"]: d for d in found["dags"]}


def current_release(stack: Stack) -> str:
    """The DAG release ``/srv/airflow/dags/current`` points at (read through docker, not SSH)."""
    target = docker_exec(stack.container, f"readlink {DAGS_DIR}/current").strip()
    assert target.startswith("releases/"), target
    return target.split("/", 1)[1]


def retained(stack: Stack) -> set[str]:
    return set(docker_exec(stack.container, f"ls -1 {DAGS_DIR}/releases").split()) - {"empty"}


def dag_attrs(stack: Stack) -> tuple[set[str], set[str]]:
    """(tags, task ids) of Helloworld as the REST API reports them."""
    dag = stack.api.get(f"/api/v2/dags/{DAG}")
    tasks = stack.api.get(f"/api/v2/dags/{DAG}/tasks")
    return {t["name"] for t in dag["tags"]}, {t["task_id"] for t in tasks["tasks"]}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


def deploy_dags(stack: Stack) -> str:
    proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow", "--json")
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    stack.releases.append(report["release"])
    assert current_release(stack) == report["release"]
    return report["release"]


# --- 1. services -------------------------------------------------------------------------------------

def test_services_are_running_and_healthy(stack):
    proc = stack.invoke("airflow.status", "--env", stack.env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = last_json(proc)
    assert {r["service"] for r in rows} == SERVICES, rows
    # Every service has its own health check (Docker runs it with `exec` in the container).
    assert all(r["state"] == "running" and r["health"] == "healthy" for r in rows), rows

    def healthy():
        status, body = stack.api.call("GET", "/api/v2/monitor/health")
        ok = status == 200 and all(body.get(k, {}).get("status") == "healthy" for k in HEALTH)
        return body if ok else None

    health = poll("the api-server's /monitor/health through nginx reports all healthy", healthy, 60, every=2)
    assert set(HEALTH) <= set(health), health


# --- 2. DAGs -----------------------------------------------------------------------------------------

def test_dags_lists_helloworld_without_import_errors(stack):
    # `deploy` returns once the dag-processor has parsed the release: listed at once, no polling
    found = stack.first_dags
    assert DAG in listed(found), found
    assert found["import_errors"] == [], found
    assert listed(found)[DAG]["fileloc"].endswith("/helloworld.py")
    assert str(listed(found)[DAG]["is_paused"]).lower() == "false"


# --- 3. one task -------------------------------------------------------------------------------------

def task_test(stack: Stack, dag: str, task: str, date: str = "2015-06-01", rc: int = 0, *more: str) -> str:
    """`airflow.test` of one task of an active DAG: its output, which ends with the task's state."""
    proc = stack.invoke("airflow.test", "--env", stack.env, "--dag", dag, "--task", task, "--date", date, *more)
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "invalid_state" not in proc.stdout, proc.stdout[-3000:]
    return proc.stdout


def test_task_test_prints_the_greeting(stack):
    out = task_test(stack, DAG, "task_1")
    assert "Hello World from Task 1" in out and out.strip().splitlines()[-1] == f"{DAG}.task_1: success", out[-3000:]


# --- 4. backfill -------------------------------------------------------------------------------------

def test_backfill_of_a_week_succeeds(stack):
    proc = stack.invoke("airflow.backfill", "--env", stack.env, "--dag", DAG, "--start", "2015-06-01",
                        "--end", "2015-06-07", "--wait", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines and lines[-1] == "7 of 7 runs succeeded", proc.stdout[-3000:]


# --- 5. a run through the REST API --------------------------------------------------------------------

def test_run_triggered_through_the_rest_api_succeeds(stack):
    # Airflow 3: logical_date is required in the body; null makes a run without one (run_after = now).
    status, run = stack.api.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None})
    assert status == 200, (status, run)
    assert run["dag_id"] == DAG and run["run_type"] == "manual" and run["triggered_by"] == "rest_api", run
    path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
    started = time.monotonic()

    def finished():
        state = stack.api.get(path)["state"]
        return state if state in ("success", "failed") else None

    assert poll(f"run {run['dag_run_id']} finished", finished, 180, every=2) == "success"
    stack.timings["REST run to success"] = round(time.monotonic() - started, 1)
    tis = stack.api.get(path + "/taskInstances")["task_instances"]
    assert sorted((t["task_id"], t["state"]) for t in tis) == [(f"task_{n}", "success") for n in range(1, 5)], tis


def test_trigger_passes_a_conf_on_as_data(stack):
    conf = {"who": "it's $(id) `id`", "rows": [1, 2.5, None], "nested": {"ok": True}}
    proc = stack.invoke("airflow.trigger", "--env", stack.env, "--dag", DAG, "--conf", json.dumps(conf), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(proc.stdout.splitlines()[-1], safe='')}"
    assert stack.api.get(path)["conf"] == conf
    assert poll("the run finished", lambda: stack.api.get(path)["state"] in ("success", "failed"), 180, every=2)
    bad = stack.invoke("airflow.trigger", "--env", stack.env, "--dag", DAG, "--conf", "{'who': 1}")
    assert one_error_line(bad).startswith("error: --conf is not JSON: Expecting property name")


# --- 6. the UI behind nginx and Airflow's login; nothing else published ---------------------------------

def test_api_needs_a_token(stack):
    status, body = stack.api.call("GET", "/api/v2/dags")
    assert status == 401, (status, body)
    status, body = stack.api.call("GET", "/api/v2/dags", token="not-a-jwt")
    assert status in (401, 403), (status, body)
    status, body = stack.api.call("POST", "/auth/token", {"username": "admin", "password": "wrong"})
    assert status in (401, 403), (status, body)
    status, body = stack.api.call("GET", "/api/v2/dags", token=stack.api.token())
    assert status == 200, (status, body)
    assert DAG in {d["dag_id"] for d in body["dags"]}, body
    # The UI's page itself is served under the url_path.
    status, page = stack.api.call("GET", "/")
    assert status == 200 and "<html" in str(page).lower(), (status, str(page)[:300])


# --- 7. accounts (FAB auth manager): exactly the inventory's users ------------------------------------------

# Another team's accounts: other names and roles, and names that would break a shell or SQL if used raw.
USERS = [{"name": "ops.anna", "role": "Viewer", "email": "Anna.Ops@example.org",
          "first_name": "Anna'; DROP TABLE ab_user;--", "last_name": "$(touch /tmp/pwned) `id` \"x\""},
         {"name": "ci-bot", "role": "Op", "email": "ci-bot@example.org"}]


def accounts(stack: Stack) -> dict[str, tuple[str, str]]:
    """{username: (email, roles)} straight from Airflow's database."""
    out = docker_exec(stack.container, "runuser -u postgres -- psql -X -A -t -d airflow -c \"select u.username || "
                      "'|' || u.email || '|' || string_agg(r.name, ',') from ab_user u join ab_user_role ur on "
                      "ur.user_id = u.id join ab_role r on r.id = ur.role_id group by u.id\"")
    return {ln.split("|")[0]: tuple(ln.split("|")[1:]) for ln in out.split()}


def provision_airflow(stack: Stack) -> dict:
    report, proc = stack.box.provision_json("--roles", "airflow")
    assert report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    return report


def changes_of(report: dict) -> list[str]:
    return [c["summary"] for c in report.get("changes", []) if c.get("action") != "skip"]


def test_only_the_admin_exists_and_the_login_page_has_no_development_banner(stack):
    assert accounts(stack) == {"admin": ("admin@localhost", "Admin")}
    status, page = stack.api.call("GET", "/auth/login/")
    assert status == 200 and 'name="password"' in str(page), (status, str(page)[:300])
    assert "development" not in str(page).lower() and "simple auth" not in str(page).lower(), str(page)[:2000]


def test_listed_users_are_created_and_log_in_through_the_ui_and_the_api(stack):
    edit_airflow(stack, users=USERS)
    report = provision_airflow(stack)
    assert any("airflow accounts: create ci-bot, ops.anna" in c for c in changes_of(report)), changes_of(report)
    assert accounts(stack) == {"admin": ("admin@localhost", "Admin"), "ops.anna": ("Anna.Ops@example.org", "Viewer"),
                               "ci-bot": ("ci-bot@example.org", "Op")}
    assert docker_exec(stack.container, "ls /tmp/pwned 2>/dev/null; true").strip() == ""
    # The sync's seal: later runs trust the passwords while it matches.
    assert docker_exec(stack.container, "stat -c '%a %u' /srv/airflow/config/.dropship-accounts").strip() == "600 50000"
    password = sandbox_secret(stack.box, "airflow_user_ops_anna_password")
    assert password not in report_text(report)
    base = stack.api.base
    login = airflow_login(base, "ops.anna", password, then="/dags", wait_for=DAG)
    assert "/auth/login" not in login.url and DAG in login.text, (login.url, login.text[:500])
    anna = AirflowAPI(base, "ops.anna", password)
    assert DAG in {d["dag_id"] for d in anna.get("/api/v2/dags")["dags"]}
    # A Viewer reads, and may not trigger.
    status, body = anna.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None}, token=anna.token())
    assert status == 403, (status, body)
    bot = AirflowAPI(base, "ci-bot", sandbox_secret(stack.box, "airflow_user_ci_bot_password"))
    assert bot.get("/api/v2/version")["version"]


def test_a_wrong_password_is_refused(stack):
    status, body = stack.api.call("POST", "/auth/token", {"username": "ops.anna", "password": "not-her-password"})
    assert status in (401, 403), (status, body)
    login = airflow_login(stack.api.base, "ops.anna", "not-her-password")
    assert "/auth/login" in login.url and "_token" not in login.cookies, (login.url, login.cookies)


def test_a_second_provision_changes_no_account(stack):
    report = provision_airflow(stack)
    assert not [c for c in changes_of(report) if "airflow accounts" in c], changes_of(report)


def test_a_changed_password_role_and_a_removed_user(stack):
    secrets = stack.box.environment().workspace.secrets_path(stack.env)
    values = yaml.safe_load(secrets.read_text())
    old = values["airflow_user_ci_bot_password"]
    values["airflow_user_ci_bot_password"] = "a new 'pass word' $(id)"
    secrets.write_text(yaml.safe_dump(values))
    edit_airflow(stack, users=[{**USERS[0], "role": "User"}, USERS[1]])
    report = provision_airflow(stack)
    assert any("update ci-bot (password), ops.anna (role)" in c for c in changes_of(report)), changes_of(report)
    status, _ = AirflowAPI(stack.api.base, "ci-bot", old).call("POST", "/auth/token",
                                                               {"username": "ci-bot", "password": old})
    assert status in (401, 403)
    assert AirflowAPI(stack.api.base, "ci-bot", "a new 'pass word' $(id)").get("/api/v2/version")

    edit_airflow(stack, users=[USERS[1]])
    report = provision_airflow(stack)
    assert any("airflow accounts: remove ops.anna" in c for c in changes_of(report)), changes_of(report)
    assert set(accounts(stack)) == {"admin", "ci-bot"}
    status, body = stack.api.call("POST", "/auth/token", {"username": "ops.anna",
                                                          "password": sandbox_secret(stack.box,
                                                                                     "airflow_user_ops_anna_password")})
    assert status in (401, 403), (status, body)
    edit_airflow(stack, users=None)
    report = provision_airflow(stack)
    assert any("airflow accounts: remove ci-bot" in c for c in changes_of(report)), changes_of(report)
    assert set(accounts(stack)) == {"admin"}


def report_text(report: dict) -> str:
    return json.dumps(report)


def test_no_airflow_port_listens_publicly(stack):
    sockets = []
    for line in docker_exec(stack.container, "ss -ltnH").splitlines():
        local = line.split()[3]                                # 127.0.0.1:8080, [::]:22, *:80
        address, _, port = local.rpartition(":")
        sockets.append((address.strip("[]"), int(port)))
    wildcard = {port for address, port in sockets if address in ("0.0.0.0", "::", "*")}
    assert wildcard <= {22, 80, 443}, sockets
    assert {a for a, p in sockets if p == 8080} == {"127.0.0.1"}, sockets
    assert not [(a, p) for a, p in sockets if p in AIRFLOW_PORTS and not a.startswith("127.")], sockets
    # From the controller: the droplet publishes 22/80/443 only, and its own address does not
    # answer on the api-server's port (while nginx's answers).
    info = json.loads(subprocess.run(["docker", "inspect", stack.container], capture_output=True, text=True,
                                     check=True).stdout)[0]
    published = {k for k, v in info["NetworkSettings"]["Ports"].items() if v}
    assert published == {"22/tcp", "80/tcp", "443/tcp"}, info["NetworkSettings"]["Ports"]
    addresses = [n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
    assert addresses, info["NetworkSettings"]["Networks"]
    assert connects(addresses[0], 80)
    assert not connects(addresses[0], 8080)


def connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


# --- 7. an import error refuses the deploy -------------------------------------------------------------

def test_dag_with_an_import_error_is_refused(stack):
    before = current_release(stack)
    assert before == stack.releases[-1]
    kept = retained(stack)
    stack.repo.write("broken.py", "from airflow.sdk import DAG\nimport no_such_module\n", "a DAG file that cannot be imported")
    try:
        proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
        error = one_error_line(proc)
        assert "broken.py:2: ModuleNotFoundError: No module named 'no_such_module'" in error, error
        assert "no_such_module is neither in the Airflow image nor in the DAGs' folder" in error, error
        assert current_release(stack) == before
        assert retained(stack) == kept                        # the refused release was removed
        found = dags_json(stack)
        assert DAG in listed(found) and found["import_errors"] == [], found
        assert listed(found)[DAG]["fileloc"] == "/opt/airflow/dags/current/helloworld.py", found
    finally:
        stack.repo.remove("broken.py", "remove the broken DAG")


# --- 8. a DAG change, deployed and rolled back -----------------------------------------------------------

CHANGE = [  # one edit of helloworld.py: a fifth task, a tag and a new owner
    ('"owner": "airflow"', '"owner": "dropship"'),
    ('tags=["example"]', 'tags=["example", "v2"]'),
    ("range(1, 5)", "range(1, 6)"),
]


def test_dag_change_is_deployed_and_rolled_back(stack):
    before = current_release(stack)
    path = stack.repo.root / "helloworld.py"
    text = path.read_text()
    for old, new in CHANGE:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    stack.repo.commit("task_5, tag v2, owner dropship")

    started = time.monotonic()
    changed = deploy_dags(stack)
    assert changed != before
    owners = lambda: listed(dags_json(stack)).get(DAG, {}).get("owners")    # noqa: E731
    poll("the new owner in `airflow.dags --json`", lambda: owners() == ["dropship"], VISIBLE_WITHIN, every=0)
    poll("tag v2 and task_5 in the REST API", lambda: dag_attrs(stack) == ({"example", "v2"},
                                                                          {f"task_{n}" for n in range(1, 6)}),
         TASKS_VISIBLE_WITHIN)
    stack.timings["deploy of a DAG change -> visible"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    proc = stack.invoke("rollback", "--env", stack.env, "--json")
    assert proc.returncode == 0 and last_json(proc)["ok"], proc.stdout + proc.stderr
    assert current_release(stack) == before
    poll("the old owner back in `airflow.dags --json`", lambda: owners() == ["airflow"], VISIBLE_WITHIN, every=0)
    poll("tag v2 gone from the REST API", lambda: dag_attrs(stack)[0] == {"example"}, VISIBLE_WITHIN)
    stack.timings["rollback -> change gone (tags, owner)"] = round(time.monotonic() - started, 1)
    poll("task_5 gone from the REST API", lambda: dag_attrs(stack)[1] == {f"task_{n}" for n in range(1, 5)},
         TASKS_VISIBLE_WITHIN)
    stack.timings["rollback -> task_5 gone"] = round(time.monotonic() - started, 1)
    found = dags_json(stack)
    assert found["import_errors"] == [], found


# --- 9. an edit that keeps the file's size is seen (no stale bytecode from the previous release) ----------

def test_dag_edit_of_the_same_size_is_seen(stack):
    assert dag_attrs(stack)[0] == {"example"}
    # The live release (rolled back above) has the original helloworld.py: rename its tag.
    original = (AIRFLOW_SOURCE / "dags" / "helloworld.py").read_text()
    assert original.count('tags=["example"]') == 1
    stack.repo.write("helloworld.py", original.replace('tags=["example"]', 'tags=["samples"]'),
                     "rename the tag (same length)")
    deploy_dags(stack)
    poll("tag 'samples' (a same-size edit) in the REST API", lambda: dag_attrs(stack)[0] == {"samples"},
         VISIBLE_WITHIN, every=2)


# --- 9b. DAGs of another shape: written for Airflow 2, importing a module of their own folder -------------

TEAM_DAG = '''"""A team's nightly job, as written for Airflow 2: airflow.operators imports, default_args."""
import time
from datetime import datetime, timedelta

from airflow import DAG
from airflow.hooks.base import BaseHook
from airflow.models import Variable
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

from common.greetings import GREETING


def greet():
    print(GREETING)
    print("recipients:", Variable.get("report_recipients"))
    print("warehouse:", BaseHook.get_connection("warehouse").host)
    time.sleep(3)


default_args = {"owner": "data-team", "retries": 1, "retry_delay": timedelta(minutes=5)}

with DAG(dag_id="team_etl", default_args=default_args, start_date=datetime(2023, 1, 1), schedule=None,
         catchup=False, tags=["etl"]) as dag:
    PythonOperator(task_id="greet", python_callable=greet) >> BashOperator(
        task_id="load", bash_command="echo loaded {{ params.rows }} rows", params={"rows": 0})
    # runnable at once in any run: its mark says the scheduler ran it
    BashOperator(task_id="notify", bash_command="echo sent >> /opt/airflow/logs/notified-{{ run_id }}")
    BashOperator(task_id="check", bash_command="echo 'rows: 0'; exit 3", retries=0)
    BashOperator.partial(task_id="shard", retries=0).expand(bash_command=["echo shard a", "echo shard b"])
'''
OLD_API_DAG = '''from datetime import datetime

from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("nightly_report", start_date=datetime(2022, 6, 1), schedule_interval="@daily") as dag:
    EmptyOperator(task_id="start")
'''
# The run a killed `airflow.test` leaves: made for the task, finished, not removed.
LEFTOVER = """
import sys
from airflow.cli.commands import task_command
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
with create_session() as s:
    dag = SerializedDagModel.get_dag(sys.argv[1], session=s)
    run, _ = task_command._get_dag_run(dag=dag, create_if_necessary="db", logical_date_or_run_id=sys.argv[2], session=s)
    run.state = DagRunState.SUCCESS
"""
FILES = ("common/__init__.py", "common/greetings.py", "team_etl.py", "scripts/transform.py", "nightly_report.py")


def test_dags_written_elsewhere_deploy_and_run_with_their_own_modules(stack):
    repo = stack.repo
    for folder in ("common", "scripts"):
        (repo.root / folder).mkdir(exist_ok=True)
    (repo.root / "common" / "__init__.py").write_text("")
    (repo.root / "common" / "greetings.py").write_text('GREETING = "greetings from a module of the DAGs, v1"\n')
    (repo.root / "team_etl.py").write_text(TEAM_DAG)
    # Not a DAG file (no "dag" in it): Airflow's processor does not import it, and neither does the check.
    (repo.root / "scripts" / "transform.py").write_text("import pandas_not_in_this_image  # run by cron elsewhere\n")
    repo.commit("a team's DAG with a helper module and a script")
    try:
        deploy_dags(stack)
        found = dags_json(stack)                  # the deploy returned once the processor had parsed the release
        assert "team_etl" in listed(found) and found["import_errors"] == [], found
        out = task_test(stack, "team_etl", "greet")
        assert "greetings from a module of the DAGs, v1" in out, out[-3000:]
        # the inventory's airflow.env: a variable (hostile string) and a connection (a secret) reach the task
        assert f"recipients: {RECIPIENTS}" in out and "warehouse: warehouse.internal" in out, out[-3000:]

        # The check and the tasks import the release's module, not the one of the release before.
        repo.write("common/greetings.py", 'GREETING = "greetings from a module of the DAGs, v2"\n', "helper v2")
        live = deploy_dags(stack)
        assert "greetings from a module of the DAGs, v2" in task_test(stack, "team_etl", "greet")
        # A failing task fails the command (Airflow's `tasks test` exits 0); no test run is left behind, and
        # the scheduler ran none of the DAG's other tasks on one (the DAG is active, its `notify` runnable).
        out = task_test(stack, "team_etl", "check", "2024-02-29T13:30:00+00:00", rc=1)
        assert "rows: 0" in out and out.strip().splitlines()[-1] == "team_etl.check: failed", out[-3000:]
        assert str(listed(dags_json(stack))["team_etl"]["is_paused"]).lower() == "false"
        assert stack.api.get("/api/v2/dags/team_etl/dagRuns")["dag_runs"] == []
        marks = docker_exec(stack.container, "ls /srv/airflow/logs").split()
        assert not [m for m in marks if m.startswith("notified-")], marks
        # What a test killed after its run was made leaves: the next test at that date removes it.
        docker_exec(stack.container, compose_exec(f"python -c {shlex.quote(LEFTOVER)} team_etl 2024-03-01"))
        left = stack.api.get("/api/v2/dags/team_etl/dagRuns")["dag_runs"]
        assert [(r["dag_run_id"][:len(TEMPORARY)], r["state"]) for r in left] == [(TEMPORARY, "success")], left
        out = task_test(stack, "team_etl", "load", "2024-03-01", 0, "--params", '{"rows": 42}')
        assert "loaded 42 rows" in out and out.strip().endswith("team_etl.load: success"), out[-3000:]
        out = task_test(stack, "team_etl", "shard", "2024-03-02", 0, "--map-index", "1")   # a mapped task's 2nd
        assert "shard b" in out and "shard a" not in out, out[-3000:]
        assert out.strip().splitlines()[-1] == "team_etl.shard[1]: success", out[-3000:]
        assert stack.api.get("/api/v2/dags/team_etl/dagRuns")["dag_runs"] == []

        repo.write("nightly_report.py", OLD_API_DAG, "a DAG using schedule_interval, gone in Airflow 3")
        proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
        error = one_error_line(proc)
        assert "nightly_report.py:6: TypeError: DAG.__init__() got an unexpected keyword argument " \
               "'schedule_interval'" in error, error
        assert "the DAG was written for Airflow 2: schedule_interval= is schedule= in Airflow 3" in error, error
        assert current_release(stack) == live
        repo.remove("nightly_report.py", "drop the old DAG")
    finally:
        for name in FILES:
            (repo.root / name).unlink(missing_ok=True)
        repo.commit("back to Helloworld alone")
    deploy_dags(stack)
    assert set(listed(dags_json(stack))) >= {DAG}


# --- 10. a settings change migrates and recreates the services; an unchanged deploy restarts nothing --------

def service_containers(stack: Stack) -> set[str]:
    return set(docker_exec(stack.container, "cd /srv/airflow && docker compose -p airflow ps -q").split())


def test_settings_change_recreates_services_and_unchanged_deploy_restarts_nothing(stack):
    before = service_containers(stack)
    assert len(before) == 4
    proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "compose airflow up" not in proc.stdout
    assert service_containers(stack) == before                    # nothing restarted

    original = stack.box.inventory.read_text()
    inventory = yaml.safe_load(original)
    inventory["defaults"]["airflow"]["env"] = {"AIRFLOW__CORE__PARALLELISM": "16"}
    stack.box.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    try:
        proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "compose airflow up (configuration changed)" in proc.stdout   # after `airflow db migrate`
        after = service_containers(stack)
        assert len(after) == 4 and not after & before
        env = docker_exec(stack.container, f"docker inspect --format '{{{{json .Config.Env}}}}' {sorted(after)[0]}")
        assert "AIRFLOW__CORE__PARALLELISM=16" in env
        status = stack.invoke("airflow.status", "--env", stack.env, "--json")
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        stack.box.inventory.write_text(original)
        restored = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
        assert restored.returncode == 0, restored.stdout + restored.stderr


# --- 11. a version change, the image built on the host ------------------------------------------------------

OTHER_VERSION = "3.3.1"      # same migration head as 3.3.2: `db migrate` works both ways


def edit_airflow(stack: Stack, **changes) -> None:
    """Change ``defaults.airflow`` of the test inventory (None removes a key)."""
    inventory = yaml.safe_load(stack.box.inventory.read_text())
    af = inventory["defaults"]["airflow"]
    for key, value in changes.items():
        if value is None:
            af.pop(key, None)
        else:
            af[key] = value
    stack.box.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))


def running_images(stack: Stack) -> set[str]:
    ids = " ".join(sorted(service_containers(stack)))
    return set(docker_exec(stack.container, f"docker inspect --format '{{{{.Config.Image}}}}' {ids}").split())


def assert_stack_healthy_at(stack: Stack, version: str) -> None:
    proc = stack.invoke("airflow.status", "--env", stack.env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = last_json(proc)
    assert {r["service"] for r in rows} == SERVICES and all(r["health"] == "healthy" for r in rows), rows
    assert stack.api.get("/api/v2/version")["version"] == version
    found = poll("Helloworld in `airflow.dags`", lambda: (lambda f: f if DAG in listed(f) else None)(dags_json(stack)),
                 60, every=2)
    assert found["import_errors"] == [], found


def test_version_change_built_on_the_host_migrates_and_recreates(stack):
    before = service_containers(stack)
    edit_airflow(stack, version=OTHER_VERSION,
                 build={**yaml.safe_load(stack.box.inventory.read_text())["defaults"]["airflow"]["build"],
                        "where": "host"})
    proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = [ln for ln in proc.stdout.splitlines() if "built image dropship/airflow:" in ln]
    assert len(built) == 1 and "on the host" in built[0], proc.stdout
    tag = built[0].split("built image ", 1)[1].split()[0]
    assert tag.startswith(f"dropship/airflow:{OTHER_VERSION}-")
    assert subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0   # not here
    assert "compose airflow up (configuration changed)" in proc.stdout        # after `airflow db migrate`
    assert running_images(stack) == {tag} and not service_containers(stack) & before
    assert_stack_healthy_at(stack, OTHER_VERSION)
    leftovers = docker_exec(stack.container, "ls /var/tmp | grep 'dropship-airflow-build-' || true")
    assert leftovers.split() == []                                            # context and log cleaned up
    again = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
    assert again.returncode == 0 and "built image" not in again.stdout and "compose airflow up" not in again.stdout


# --- 12. a registry image, pulled on the host ---------------------------------------------------------------

REGISTRY = "127.0.0.1:5000"    # a real Docker registry (Debian's docker-registry) on the droplet itself


def start_registry(stack: Stack) -> None:
    docker_exec(stack.container, """
set -e
DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null 2>&1 || \
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null; }
cat > /etc/docker/registry/config.yml <<'YAML'
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
http:
  addr: 127.0.0.1:5000
YAML
systemctl restart docker-registry
for i in $(seq 60); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && exit 0; sleep 1; done
echo "no registry"; exit 1
""")


def test_registry_image_is_pulled_and_a_missing_one_refused(stack):
    start_registry(stack)
    local = docker_exec(stack.container, "docker images --format '{{.Repository}}:{{.Tag}}' dropship/airflow"
                                         " | grep ':3.3.2-'").split()[0]
    image = f"{REGISTRY}/dropship/airflow:3.3.2"
    # Pushed, then removed from the host's images: the deploy must really pull it.
    docker_exec(stack.container, f"docker tag {local} {image} && docker push -q {image} >/dev/null && "
                                 f"docker rmi {image} {local} >/dev/null")
    edit_airflow(stack, version="3.3.2", build=None, image=image)
    proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"pulled image {image}" in proc.stdout, proc.stdout
    assert "compose airflow up (configuration changed)" in proc.stdout
    assert running_images(stack) == {image}
    assert_stack_healthy_at(stack, "3.3.2")

    running = service_containers(stack)
    missing = f"{REGISTRY}/dropship/airflow:9.9.9"
    edit_airflow(stack, image=missing)
    error = one_error_line(stack.invoke("deploy", "--env", stack.env, "--only", "airflow"))
    assert "web-1" in error and f"docker pull {missing}" in error and "manifest unknown" in error, error
    assert service_containers(stack) == running and running_images(stack) == {image}   # nothing touched
    assert stack.api.get("/api/v2/version")["version"] == "3.3.2"
    edit_airflow(stack, image=image)


# --- 13. the UI on a server name of its own ---------------------------------------------------------------

def test_ui_on_a_server_name_of_its_own(stack):
    name = "airflow.dropship.test"
    edit_airflow(stack, server_name=name, url_path=None)                      # at the root of its server
    proc = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "compose airflow up (configuration changed)" in proc.stdout        # the base URL changed
    af = stack.box.environment().settings.airflow
    own = AirflowAPI(http_base(stack.box), af.admin_user, stack.api.password, host_header=name)
    status, page = own.call("GET", "/")
    assert status == 200 and "<title>Airflow</title>" in str(page), (status, str(page)[:300])
    assert own.call("GET", "/api/v2/dags")[0] == 401                         # Airflow's login still guards it
    assert own.get("/api/v2/version")["version"]
    assert DAG in {d["dag_id"] for d in own.get("/api/v2/dags")["dags"]}
    assert stack.api.call("GET", "/api/v2/version")[0] == 404                 # gone from the app's server
    assert docker_exec(stack.container, "ls /etc/nginx/dropship/locations/").split() == []


# --- 13b. PostgreSQL moves to a host of its own ----------------------------------------------------------

def test_moving_postgres_off_the_airflow_host_keeps_airflows_history(stack):
    """The postgres role moves from web-1 to a new db-1: provision refuses to start Airflow on db-1's
    empty database (web-1's Airflow keeps serving its own); `db.copy --from web-1` copies it with
    Airflow stopped; the next provision starts Airflow on db-1 with its runs and variables."""
    af = stack.box.environment().settings.airflow
    api = AirflowAPI(http_base(stack.box) + af.url_path, af.admin_user, stack.api.password,
                     host_header=af.server_name or None)
    key, value = "kept_across_the_move", 'rows & runs "quoted" $HOME'
    assert api.post("/api/v2/variables", {"key": key, "value": value})[0] in (200, 201)
    runs = api.get(f"/api/v2/dags/{DAG}/dagRuns")["total_entries"]
    assert runs > 0
    inventory = yaml.safe_load(stack.box.inventory.read_text())
    droplets = inventory["environments"][stack.env]["droplets"]
    droplets[0]["roles"] = [r for r in ROLES if r != "postgres"]
    droplets.append(droplet_spec("db-1", ["base", "postgres"], "s-1vcpu-1gb", warm=True))
    stack.box.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    assert stack.invoke("droplet.create", "--env", stack.env).returncode == 0
    address = load_droplets(stack.box.environment())["db-1"].private_address
    reads_now = af_db.reads_now_command()

    refused = stack.invoke("provision", "--env", stack.env)
    error = one_error_line(refused)
    assert error.startswith(f"error: web-1: airflow database move: Airflow's database {af.database.name} moves "
                            f"from PostgreSQL on web-1 (where Airflow reads it now) to PostgreSQL on db-1 "
                            f"({address}), where it has no tables"), refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"`invoke db.copy --env {stack.env} --from web-1`" in error and "--empty-database" in error, error
    assert docker_exec(stack.container, reads_now).strip() == "host.docker.internal"
    assert api.get(f"/api/v2/variables/{key}")["value"] == value            # still served from web-1
    deployed = stack.invoke("deploy", "--env", stack.env, "--only", "airflow")     # lays Airflow out too
    assert one_error_line(deployed).startswith("error: web-1: airflow database move: "), deployed.stdout[-3000:]
    assert docker_exec(stack.container, reads_now).strip() == "host.docker.internal"

    copied = stack.invoke("db.copy", "--env", stack.env, "--from", "web-1", "--yes")
    assert copied.returncode == 0, copied.stdout[-3000:] + copied.stderr[-3000:]
    assert f"{af.database.name}: copied from web-1 to db-1 (" in copied.stdout, copied.stdout
    assert "Airflow's services stay stopped" in copied.stdout, copied.stdout
    assert "recap: 1 database(s) copied from web-1 to db-1 in " in copied.stdout, copied.stdout
    assert service_containers(stack) == set()                                # nothing left running

    report, proc = stack.box.provision_json()
    assert report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert docker_exec(stack.container, reads_now).strip() == address
    docker_exec(stack.container, "systemctl stop postgresql")                # web-1's old copy is not read
    assert api.get(f"/api/v2/variables/{key}")["value"] == value
    assert api.get(f"/api/v2/dags/{DAG}/dagRuns")["total_entries"] == runs
    secret = sandbox_secret(stack.box, af.database.password.name)
    for proc in (refused, deployed, copied, proc):
        assert secret not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


# --- 14. no secret in any output -------------------------------------------------------------------------

def test_no_secret_appears_in_any_output(stack):
    """Day-to-day commands print remote output (service status, scheduler logs, errors): secrets masked."""
    path = stack.box.environment().workspace.secrets_path(stack.env)
    names = sorted(yaml.safe_load(path.read_text()))
    assert {"airflow_admin_password", "airflow_fernet_key", "airflow_db_password"} <= set(names), names
    forms = {name: {v, urllib.parse.quote(v, safe="")} for name in names for v in [sandbox_secret(stack.box, name)]}
    commands = [("airflow.status",), ("airflow.dags",), ("airflow.logs", "--service", "scheduler"), ("db.backups",),
                ("releases",),
                # Remote output that echoes a secret: the DAG id comes back in Airflow's error line.
                ("airflow.trigger", "--dag", sandbox_secret(stack.box, "airflow_admin_password"))]
    for args in commands:
        proc = stack.invoke(args[0], "--env", stack.env, *args[1:], timeout=600)
        leaked = sorted(name for name, values in forms.items() if any(v in proc.stdout + proc.stderr for v in values))
        assert not leaked, f"invoke {args[0]} printed the value of {', '.join(leaked)} (exit {proc.returncode})"
        assert "Traceback" not in proc.stderr, f"invoke {args[0]}: {proc.stderr[-300:]}"


def test_module_timings(stack):
    """Not a check: prints where the module's time went (see with -s)."""
    print("\n" + "\n".join(f"  {k:<48} {v:>6.1f} s" for k, v in stack.timings.items()))
