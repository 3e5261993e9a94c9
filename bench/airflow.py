"""Median time from `invoke deploy --only airflow` of a one-line DAG change to the change being live.

Creates a throwaway local environment (one s-4vcpu-8gb droplet with roles base, postgres, docker,
nginx, airflow; the image is built from app_src/airflow, cached by tag) that ships a copy of
app_src/airflow/dags kept in a git repository of its own; provisions it and makes a first DAG
deploy. Then, --runs times (default 3), it commits a one-line change of helloworld.py (a tag added
to the DAG's `tags=[...]` line) and measures, from the moment `invoke deploy --env E --only airflow`
starts (run as a user runs it) until the tag shows in the REST API: GET /airflow/api/v2/dags/Helloworld
through the droplet's nginx, with a JWT, polled every 0.25 s. That is what the UI shows: the deploy's
upload, import check in the Airflow image and switch of /srv/airflow/dags/current, then the
dag-processor noticing and parsing the new file and the database update. The deploy command's own
wall time is reported too. Bar: median <= 15 s. Everything it creates is removed at the end.

Each run's edit adds a tag, so the file's size changes every time (see the report of the stale
__pycache__ of DAG releases: an edit keeping the size is not seen at all).

    .venv/bin/python bench/airflow.py [--runs 3] [--json]      # --json: one JSON line on stdout, the rest on stderr
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import (DEFAULTS, AirflowAPI, DagRepo, Sandbox, airflow_settings, droplet_spec,  # noqa: E402
                           last_json, reap_dead_runs, run_name)

ROLES = ["base", "postgres", "docker", "nginx", "airflow"]
SIZE = "s-4vcpu-8gb"
DAG = "Helloworld"
BAR = 15.0
GIVE_UP = 120.0


def deploy(box: Sandbox) -> dict:
    proc = box.invoke("deploy", "--env", box.env, "--only", "airflow", "--json")
    report = last_json(proc)
    if proc.returncode != 0 or not report["ok"]:
        raise SystemExit(f"deploy failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return report


def tags(api: AirflowAPI) -> set[str]:
    status, body = api.call("GET", f"/api/v2/dags/{DAG}", token=api.token())
    if status == 401:
        status, body = api.call("GET", f"/api/v2/dags/{DAG}", token=api.token(refresh=True))
    return {t["name"] for t in body.get("tags", [])} if status == 200 and isinstance(body, dict) else set()


def wait_for(api: AirflowAPI, tag: str | None, since: float) -> float:
    """Seconds from ``since`` until ``tag`` is among the DAG's tags (None: until the DAG is there)."""
    while True:
        found = tags(api)
        if found and (tag is None or tag in found):
            return time.perf_counter() - since
        if time.perf_counter() - since > GIVE_UP:
            raise SystemExit(f"{tag or DAG} not visible after {GIVE_UP:.0f} s (tags: {sorted(found)})")
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    reap_dead_runs()
    out = sys.stderr if args.json else sys.stdout        # with --json, stdout holds the JSON line only
    visible, commands = [], []
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
        repo = DagRepo.create(Path(tmp) / "dags")
        (Path(tmp) / "env").mkdir()
        box = Sandbox(Path(tmp) / "env", run_name())
        defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"}, "airflow": airflow_settings(repo.root)}
        box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, SIZE)]}}, defaults)
        try:
            t0 = time.perf_counter()
            box.create_and_provision()
            t1 = time.perf_counter()
            deploy(box)
            api = AirflowAPI.of(box)
            first = wait_for(api, None, t1)
            print(f"setup: droplet + provision {t1 - t0:.1f} s, first DAG deploy until {DAG} shows {first:.1f} s",
                  file=out, flush=True)
            line = 'tags=["example"]'
            for i in range(1, args.runs + 1):
                tag = f"bench-{i}"
                new = line[:-1] + f', "{tag}"]'
                repo.edit("helloworld.py", line, new, f"bench: tag {tag}")
                line = new
                started = time.perf_counter()
                report = deploy(box)
                command = time.perf_counter() - started
                seconds = wait_for(api, tag, started)
                visible.append(seconds)
                commands.append(command)
                print(f"run {i}: deploy {report['release']} returned after {command:.1f} s, tag {tag} visible after "
                      f"{seconds:.1f} s", file=out, flush=True)
        finally:
            box.invoke("droplet.destroy", "--env", box.env, "--yes")
    median = statistics.median(visible)
    print(f"deploy of a one-line DAG change -> visible in GET /api/v2/dags/{DAG}: median {median:.1f} s over "
          f"{args.runs} runs (min {min(visible):.1f}, max {max(visible):.1f}); deploy command median "
          f"{statistics.median(commands):.1f} s  bar <= {BAR:.0f} s: {'PASS' if median <= BAR else 'FAIL'}", file=out)
    if args.json:
        print(json.dumps({"visible_median_s": round(median, 2), "visible_s": [round(s, 2) for s in visible],
                          "deploy_command_median_s": round(statistics.median(commands), 2),
                          "runs": args.runs, "bar_s": BAR, "pass": median <= BAR}))


if __name__ == "__main__":
    main()
