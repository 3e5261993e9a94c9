"""Airflow: the image on hosts, DAG releases (import-checked, switched atomically, rolled back),
and the day-to-day tasks (status, dags, trigger, test, backfill, logs) run on the host through
``docker compose exec`` into the running services.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from .. import release as rel
from ..airflow_image import HostBuild, build_image, plan_host_build, planned_tag
from ..dag_errors import fix_for, located_error
from ..engine.model import q
from ..engine.runner import Progress
from ..errors import DropshipError, RemoteError
from ..image_on_host import build_on_host, pull_on_host, ship_image
from ..inventory import Environment
from ..redact import Redactor
from ..roles import airflow_celery
from ..roles.airflow import CONTAINER_DAGS, LAYOUT, services
from ..roles.airflow_celery import WORKER
from ..secrets import redactor_for
from ..transport.hostkeys import KnownHosts
from ..transport.ssh import Session, connect
from .. import hosts as host_selection
from .on_hosts import read_hosts

# As the DAG processor parses a folder: on sys.path (DAGs import their helpers from it), files that do
# not look like DAGs skipped unless [core] dag_discovery_safe_mode is off, .airflowignore honoured.
CHECK_DAGS = r"""
import json, sys
sys.path.append(sys.argv[1])
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
print("DAGBAG " + json.dumps({"errors": {k.split(sys.argv[1] + "/", 1)[-1]: v for k, v in bag.import_errors.items()},
                             "dags": sorted(bag.dags)}))
"""

# Wait (bounded) until the DAG processor has parsed every DAG of the release switched to at ``since``
# (host epoch seconds); print what is still missing and the import errors it recorded for the live folder.
# is_stale (Airflow 3) or is_active (Airflow 2) says whether the DAG is still in the folder.
WAIT_PARSED = r"""
import json, sys, time
from airflow.models.dag import DagModel
from airflow.utils.session import create_session
want, since, deadline = set(json.loads(sys.argv[1])), float(sys.argv[2]), time.time() + float(sys.argv[3])
def parsed(d):
    live = not getattr(d, "is_stale", False) and getattr(d, "is_active", True) is not False
    return live and d.last_parsed_time is not None and d.last_parsed_time.timestamp() >= since
while True:
    errors = {}
    with create_session() as s:
        done = {d.dag_id for d in s.query(DagModel).filter(DagModel.dag_id.in_(want)) if parsed(d)}
        try:
            from airflow.models.errors import ParseImportError
            for e in s.query(ParseImportError):
                if "/dags/current/" in (e.filename or ""):
                    errors[e.filename.split("/dags/current/", 1)[1]] = (e.stacktrace or "").strip()[-4000:]
        except ImportError:
            pass
    if done == want or time.time() > deadline:
        print("PARSED " + json.dumps({"missing": sorted(want - done), "errors": errors}))
        sys.exit(0)
    time.sleep(1)
"""
PARSE_WAIT = 120       # seconds a deploy waits for the DAG processor


def wait_parsed_command(dag_ids: list[str], since: float, seconds: int) -> str:
    """WAIT_PARSED in the scheduler's container (its config and database connection) (pure)."""
    return compose_exec(f"python -c {q(WAIT_PARSED)} {q(json.dumps(sorted(dag_ids)))} {since:.3f} {seconds}",
                        "airflow-scheduler")


_RELEASE_PATH = re.compile(re.escape(f"{CONTAINER_DAGS}/releases/") + r"[^/\"]+/")


def parsed_report(output: str) -> tuple[list[str], dict[str, str]]:
    """(DAG ids not parsed yet, {file: its import error located, on one line}) from WAIT_PARSED's output (pure)."""
    line = next((ln for ln in output.splitlines() if ln.startswith("PARSED ")), None)
    if line is None:
        return ["(no answer from the DAG processor's database)"], {}
    data = json.loads(line[7:])
    current = f"{CONTAINER_DAGS}/current/"          # a frame may name the release the link resolves to
    return list(data["missing"]), {f: located_error(f, _RELEASE_PATH.sub(current, e), current)
                                   for f, e in data["errors"].items()}


def airflow_hosts(env: Environment, names=None):
    if env.settings.airflow is None:
        raise DropshipError(f"environment {env.name} has no airflow settings", "add an 'airflow:' section")
    chosen = [h for h in host_selection.select(env, names) if "airflow" in h.roles]
    if not chosen:
        raise DropshipError(f"no host of {env.name} has the airflow role", "add 'airflow' to a host's roles")
    return chosen


@dataclass(frozen=True)
class ImagePlan:
    """How hosts get the Airflow image; ``tag`` is what the services run."""

    tag: str
    how: str                              # "pull" (airflow.image), "ship" (built here) or "build" (on the host)
    host_build: HostBuild | None = None


def prepare_image(env: Environment, dry_run: bool = False) -> ImagePlan | None:
    """Build the image here, or plan its build on hosts, as the inventory says (None: no Airflow).

    A dry run only names the tag a real run would use: nothing is built, pulled or shipped.
    """
    af = env.settings.airflow
    if af is None:
        return None
    if af.image:
        return ImagePlan(af.image, "pull")
    how = "build" if af.build.where == "host" else "ship"
    if dry_run:
        return ImagePlan(planned_tag(env), how)
    if how == "build":
        plan = plan_host_build(env)
        return ImagePlan(plan.tag, how, plan)
    return ImagePlan(build_image(env), how)


def ensure_image(session: Session, plan: ImagePlan | None, progress: Progress) -> None:
    """Make the host have ``plan.tag``: pull it, ship it, or build it there."""
    if plan is None:
        return
    if plan.how == "pull":
        pull_on_host(session, plan.tag, progress)
    elif plan.how == "build":
        build_on_host(session, plan.host_build, progress)
    else:
        ship_image(session, plan.tag, progress)


def compose_exec(command: str, service: str = "airflow-scheduler") -> str:
    """Run an Airflow command inside the running ``service`` (its image, env and volumes)."""
    return f"{LAYOUT.compose} exec -T -e PYTHONWARNINGS=ignore {q(service)} {command}"


# --- DAG releases ------------------------------------------------------------------------------------

@dataclass
class DagState:
    current: str | None
    releases: list[str]
    manifest: dict | None


def dag_state_command() -> str:
    return rel.state_command(LAYOUT.dags, ("current",))


class HostDags:
    """DAG deploy/rollback steps on one host (shares the release machinery of app deploys)."""

    def __init__(self, env: Environment, session: Session, progress: Progress, redactor: Redactor, step):
        self.env, self.session, self.progress, self.redact, self.step = env, session, progress, redactor, step

    def state(self) -> DagState:
        store = rel.parse_state(self.step("read DAG state", dag_state_command()))
        if not store.present:
            raise RemoteError(self.session.name, "read DAG state", f"{LAYOUT.dags} does not exist",
                              "provision the host with the airflow role first")
        return DagState(store.links.get("current"), [r for r in store.releases if r != "empty"],
                        store.manifests.get("current"))

    def upload(self, ship) -> str | None:
        """Upload ``ship`` as a new release beside ``current`` (not switched); the previous release."""
        state = self.state()
        if ship.id == state.current:
            raise RemoteError(self.session.name, "DAG release id", f"DAG release {ship.id} is already current "
                              "(this commit was deployed within the same second)", "re-run in a second")
        previous = state.current if state.current in state.releases else None
        upload = rel.diff(state.manifest if previous else None, ship.manifest)
        target = LAYOUT.release(ship.id)
        self.step(f"upload DAGs: {len(upload.changed)} changed, {len(upload.removed)} removed",
                  rel.upload_command(f"{LAYOUT.dags}/releases", ship.id, previous, upload,
                                     rel.tarball(ship.source, upload.changed), json.dumps(ship.manifest).encode(),
                                     json.dumps(ship.info).encode()) + f"\nchown -R 50000:0 {q(target)}")
        return previous

    def discard(self, release: str) -> None:
        """Remove an uploaded release that was never switched to."""
        self.session.script(f"rm -rf {q(LAYOUT.release(release))}", timeout=60)

    def prune(self, keep: list[str]) -> None:
        self.step("prune old DAG releases", rel.prune_command(f"{LAYOUT.dags}/releases", keep,
                                                             self.env.settings.app.keep_releases
                                                             if self.env.settings.app else 5))

    def deploy(self, ship) -> None:
        """Upload, check, switch, wait for the parse, prune: the release on this host alone."""
        previous = self.upload(ship)
        try:
            dag_ids = self.check(ship.id)
        except RemoteError:
            self.discard(ship.id)
            raise
        self.wait_parsed(dag_ids, self.switch(ship.id))
        self.prune([ship.id, previous or ""])

    def check(self, release: str) -> list[str]:
        """Parse the new DAG folder inside the Airflow image; any import error refuses the deploy.
        The ids of the DAGs it defines."""
        inside = f"{CONTAINER_DAGS}/releases/{release}"
        out = self.step("check DAGs for import errors",
                        compose_exec(f"python -c {q(CHECK_DAGS)} {q(inside)}", "airflow-dag-processor"), timeout=300)
        line = next((ln for ln in out.splitlines() if ln.startswith("DAGBAG ")), None)
        if line is None:
            raise RemoteError(self.session.name, "check DAGs", "the DAG check printed no result",
                              "see `invoke airflow.logs dag-processor`")
        result = json.loads(line[7:])
        if result["errors"]:
            path, error = next(iter(sorted(result["errors"].items())))
            message = located_error(path, error, inside)
            raise RemoteError(self.session.name, "check DAGs", message
                              + (f" (+{len(result['errors']) - 1} more)" if len(result["errors"]) > 1 else ""),
                              fix_for(message))
        return list(result["dags"])

    def switch(self, release: str) -> float:
        """Point ``current`` at ``release``; the host's clock at the switch."""
        out = self.step(f"switch DAGs to {release}", f"cd {q(LAYOUT.dags)} && ln -sfn releases/{q(release)} "
                        f"current.new && mv -T current.new current && date +%s.%N")
        return float(out.split()[-1])

    def wait_parsed(self, dag_ids: list[str], since: float, seconds: int = PARSE_WAIT) -> None:
        """Return once the DAG processor has parsed every DAG of the release (bounded by ``seconds``);
        say what it did not parse in time and the import errors it found."""
        if not dag_ids:
            return
        out = self.step(f"wait for the DAG processor to parse {len(dag_ids)} DAG(s)",
                        wait_parsed_command(dag_ids, since, seconds), timeout=seconds + 120)
        missing, errors = parsed_report(out)
        if missing:
            self.progress.step(self.session.name, "warning", f"not parsed within {seconds} s: {', '.join(missing)} "
                               "(see `invoke airflow.logs --service dag-processor`)")
        for path in sorted(errors):
            self.progress.step(self.session.name, "warning", f"the DAG processor reports {errors[path]}")

    def rollback_target(self, to: str | None) -> str:
        """The release a rollback switches to: ``to`` or the one before ``current`` (checked here)."""
        state = self.state()
        older = [r for r in state.releases if state.current and r < state.current]
        target = to or (older[-1] if older else None)
        if target is None:
            raise RemoteError(self.session.name, "rollback DAGs", "no earlier DAG release is retained",
                              "pass --to with a release listed by `invoke releases`")
        if target not in state.releases:
            raise RemoteError(self.session.name, "rollback DAGs", f"unknown DAG release {target}",
                              f"use one of: {', '.join(reversed(state.releases)) or 'none retained'}")
        return target

    def rollback(self, to: str | None) -> str:
        target = self.rollback_target(to)
        self.switch(target)           # instant: no wait for the parse (the release was checked when deployed)
        return target


# --- the day-to-day tasks ------------------------------------------------------------------------------

def _session(env: Environment) -> Session:
    """A session to the (first) Airflow host; it masks the environment's secrets."""
    host = airflow_hosts(env)[0]
    target = host_selection.targets(env, [host])[0]
    return connect(target, KnownHosts(env.workspace.known_hosts_path), redactor_for(env))


def run(env: Environment, command: str, on_line=None, timeout: float = 3600) -> tuple[int, str]:
    """Run a shell command on the Airflow host (as root); returns (rc, output).

    Secrets are masked in the output and in every line passed to ``on_line`` (task logs may print them).
    """
    session = _session(env)
    redact = session.redact
    try:
        result = session.script(command, on_line=(lambda line: on_line(redact(line))) if on_line else None,
                                timeout=timeout)
        return result.rc, redact(result.stdout)
    finally:
        session.close()


def status(env: Environment) -> list[dict]:
    """Every Airflow service with its host, state and health: the airflow host's, then the worker of
    each airflow_worker host (a host that does not answer is one row saying so)."""
    ps = f"{LAYOUT.compose} ps -a --format json"
    home = airflow_hosts(env)[0].name
    rc, out = run(env, ps, timeout=60)
    rows = [{"host": home, **r} for r in ps_rows(out, services(env))]
    workers = airflow_celery.worker_hosts(env)
    found = read_hosts(env, workers, lambda h: ps, lambda text, now: {"rows": ps_rows(text, (WORKER,))},
                       "airflow.status") if workers else {}
    for h in workers:
        got = found.get(h.name, {"error": "no answer"})
        rows += [{"host": h.name, **r} for r in got.get("rows", [])] or \
            [{"host": h.name, "service": WORKER, "state": "unreachable", "health": "", "status": got.get("error", "")}]
    return rows


def ps_rows(out: str, expected: tuple[str, ...]) -> list[dict]:
    """``docker compose ps --format json`` as rows (service, state, health, status), the expected
    services that are not there as ``missing``, sorted, without the one-shot init (pure)."""
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith(("{", "[")):
            continue
        data = json.loads(line)
        for row in data if isinstance(data, list) else [data]:
            rows.append({"service": row.get("Service"), "state": row.get("State"), "health": row.get("Health") or "",
                         "status": row.get("Status", "")})
    known = {r["service"] for r in rows}
    rows += [{"service": s, "state": "missing", "health": "", "status": ""} for s in expected if s not in known]
    return sorted((r for r in rows if r["service"] != "airflow-init"), key=lambda r: r["service"])


def dags(env: Environment) -> dict:
    rc, out = run(env, compose_exec("airflow dags list -o json") + "; echo '@@errors'; "
                  + compose_exec("airflow dags list-import-errors -o json"), timeout=300)
    listed, _, errors = out.partition("@@errors")
    return {"dags": _json_rows(listed), "import_errors": _json_rows(errors)}


def _json_rows(text: str) -> list[dict]:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return []


def _failed(env: Environment, what: str, rc: int, out: str, fix: str) -> DropshipError:
    """``<what> failed: <last output line>``, secrets masked (the arguments too: output may echo them)."""
    last = out.strip().splitlines()[-1] if out.strip() else f"exit status {rc}"
    return DropshipError(redactor_for(env)(f"{what} failed: {last}"), fix)


def check_date(flag: str, value: str, day: bool = False) -> str:
    """``value`` if it is a date (YYYY-MM-DD) or, unless ``day``, an ISO date and time (pure)."""
    from datetime import date, datetime

    try:
        if day and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        (date if day else datetime).fromisoformat(value)
    except (TypeError, ValueError):
        like = "2015-06-01" if day else "2015-06-01 or 2015-06-01T12:00:00+00:00"
        raise DropshipError(f"{flag} {value!r} is not a date like {like}", f"pass e.g. {flag} 2015-06-01") from None
    return value


def service_name(env: Environment, service: str) -> str:
    """The compose service ``service`` names on the Airflow host (``scheduler`` or ``airflow-scheduler``)."""
    known = services(env)
    name = service if service.startswith("airflow-") else f"airflow-{service}"
    if name not in known:
        raise DropshipError(f"no Airflow service {service!r} on {airflow_hosts(env)[0].name}",
                            f"use --service with one of: {', '.join(k.removeprefix('airflow-') for k in known)}")
    return name


def json_object(flag: str, value: str) -> str:
    """``value`` (given as ``flag``) as compact JSON if it is a JSON object, else one error line (pure)."""
    import json

    fix = f"""pass an object, e.g. {flag} '{{"day": "2015-06-01"}}'"""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise DropshipError(f"{flag} is not JSON: {exc}", fix) from None
    if not isinstance(parsed, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(parsed), "a number")
        raise DropshipError(f"{flag} is {kind}, not a JSON object", fix)
    return json.dumps(parsed, separators=(",", ":"))


def trigger_command(dag: str, date: str | None, conf: str | None) -> str:
    """``airflow dags trigger`` of ``dag`` at ``date`` with ``conf`` (checked JSON), its run as JSON."""
    return (f"airflow dags trigger {q(dag)}" + (f" --logical-date {q(date)}" if date else "")
            + (f" --conf {q(conf)}" if conf else "") + " -o json")


def trigger(env: Environment, dag: str, date: str | None, wait: bool, on_line=None, conf: str | None = None) -> str:
    """Trigger a run of ``dag`` (at ``date``, with the JSON object ``conf``); its run id, or with
    ``wait`` its final state. The inputs are checked before Airflow's host is contacted."""
    if date is not None:
        check_date("--date", date)
    conf = json_object("--conf", conf) if conf is not None else None
    rc, out = run(env, compose_exec(trigger_command(dag, date, conf)), timeout=300)
    rows = _json_rows(out)
    if rc != 0 or not rows:
        raise _failed(env, f"trigger of {dag}", rc, out, "check the DAG id with `invoke airflow.dags`")
    run_id = rows[0].get("dag_run_id") or rows[0].get("run_id", "")
    if wait:
        return wait_for_runs(env, dag, {run_id}, on_line)[run_id]
    return run_id


def list_runs(env: Environment, dag: str) -> list[dict]:
    rc, out = run(env, compose_exec(f"airflow dags list-runs {q(dag)} -o json"), timeout=300)
    return _json_rows(out)


def wait_for_runs(env: Environment, dag: str, run_ids: set[str] | None, on_line=None, timeout: float = 1800,
                  count: int | None = None, wanted=None) -> dict[str, str]:
    """Poll until the runs (by id, or those ``wanted(run)`` accepts) are finished; {run_id: state}."""
    deadline = time.monotonic() + timeout
    while True:
        runs = list_runs(env, dag)
        chosen = [r for r in runs if (not run_ids or r.get("run_id") in run_ids) and (wanted is None or wanted(r))]
        states = {r["run_id"]: r.get("state", "") for r in chosen}
        done = states and all(s in ("success", "failed") for s in states.values()) and \
            (count is None or len(states) >= count)
        if on_line:
            on_line(f"{dag}: " + ", ".join(f"{s}={sum(1 for v in states.values() if v == s)}"
                                           for s in sorted(set(states.values()))))
        if done:
            return states
        if time.monotonic() > deadline:
            raise DropshipError(f"runs of {dag} not finished after {timeout:.0f} s", "see `invoke airflow.logs`")
        time.sleep(3)


def backfill(env: Environment, dag: str, start: str, end: str, wait: bool, on_line=None) -> dict[str, str]:
    if check_date("--start", start, day=True) > check_date("--end", end, day=True):
        raise DropshipError(f"--start {start} is after --end {end}", "swap them: the range runs from --start to --end")
    rc, out = run(env, compose_exec(f"airflow backfill create --dag-id {q(dag)} --from-date {q(start)} "
                                    f"--to-date {q(end)}"), timeout=600)
    if rc != 0:
        raise _failed(env, f"backfill of {dag}", rc, out, "check the dates (YYYY-MM-DD) and the DAG id")
    if not wait:
        return {}
    from datetime import date as _date

    days = (_date.fromisoformat(end) - _date.fromisoformat(start)).days + 1
    def in_range(run: dict) -> bool:
        day = str(run.get("logical_date", ""))[:10]
        return str(run.get("run_id", "")).startswith("backfill__") and start <= day <= end

    return wait_for_runs(env, dag, None, on_line, count=days, wanted=in_range)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def logs(env: Environment, service: str | None, follow: bool, on_line) -> int:
    svc = f" {q(service_name(env, service))}" if service else ""
    rc, _ = run(env, f"{LAYOUT.compose} logs --no-color --tail 200{' -f' if follow else ''}{svc}",
                on_line=lambda line: on_line(_ANSI.sub("", line)), timeout=24 * 3600 if follow else 120)
    return rc
