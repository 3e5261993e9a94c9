"""Median downtime of `invoke droplet.resize` on the local provider, next to the droplet's
boot-to-healthy time, measured by a prober outside the droplet at 25 requests per second.

Creates a throwaway local environment (one droplet with roles base, postgres, nginx, app; with
--airflow also docker and airflow) shipping a copy of app_src, provisions and deploys it, adds
names through the form. Boot-to-healthy: the container is stopped, then started, and timed from
the start to the prober's first good answer (--runs times). Then --runs resizes alternate between
s-4vcpu-8gb and the inventory's s-2vcpu-4gb, each timed by the prober as first failed request to
first good answer. Bar: median downtime <= median boot-to-healthy + 5 s, and 0 rows lost.
Everything it creates is removed at the end.

    .venv/bin/python bench/resize.py [--runs 3] [--airflow] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.prober import Prober  # noqa: E402
from provision.providers.local import reap  # noqa: E402
from tests.support import (DEFAULTS, AppRepo, Browser, DagRepo, Sandbox, airflow_settings,  # noqa: E402
                           app_settings, docker_exec, droplet_spec, http_base, last_json, reap_dead_runs, run_name)

SMALL, BIG = "s-2vcpu-4gb", "s-4vcpu-8gb"
ROWS = "select count(*), md5(string_agg(name, ',' order by id)) from name"


def boot_to_healthy(container: str, url: str) -> float:
    """Seconds from `docker start` to the first good answer from outside."""
    subprocess.run(["docker", "stop", "-t", "30", container], check=True, capture_output=True)
    with Prober(url) as prober:
        started = time.monotonic()
        subprocess.run(["docker", "start", container], check=True, capture_output=True)
        while not prober.good_since(1.0):
            if time.monotonic() - started > 300:
                raise SystemExit("the droplet did not come back within 300 s")
            time.sleep(0.1)
    return next(t for t, ok in prober.samples if ok and t > started) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--airflow", action="store_true", help="run Airflow on the droplet too")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    reap_dead_runs()
    boots, downs, lost = [], [], 0
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
        repo = AppRepo.create(Path(tmp) / "app")
        (Path(tmp) / "env").mkdir()
        box = Sandbox(Path(tmp) / "env", run_name())
        roles = ["base", "postgres", "nginx", "app"] + (["docker", "airflow"] if args.airflow else [])
        defaults = {**DEFAULTS, "app": app_settings(repo.root)}
        if args.airflow:
            defaults["airflow"] = airflow_settings(DagRepo.create(Path(tmp) / "dags").root)
        box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", roles, SMALL)]}}, defaults)
        container = f"dropship-{box.env}-web-1"
        try:
            box.create_and_provision()
            box.invoke("deploy", "--env", box.env, check=True, timeout=1800)
            browser = Browser(http_base(box))
            for i in range(20):
                browser.add_name(f"row {i}")
            rows = docker_exec(container, f"runuser -u postgres -- psql -d names -Atc {ROWS!r}")
            url = http_base(box) + "/healthz"
            for i in range(1, args.runs + 1):
                boots.append(boot_to_healthy(container, url))
                print(f"boot-to-healthy {i}: {boots[-1]:.1f} s", flush=True)
            for i in range(1, args.runs + 1):
                size = BIG if i % 2 else SMALL
                with Prober(url) as prober:
                    proc = box.invoke("droplet.resize", "--env", box.env, "--size", size, "--no-snapshot",
                                      "--json", timeout=1800)
                    time.sleep(1.0)
                report = last_json(proc)
                if proc.returncode != 0 or not report["ok"]:
                    raise SystemExit(f"resize failed:\n{proc.stdout}\n{proc.stderr}")
                down = prober.result()
                downs.append(down.seconds)
                after = docker_exec(container, f"runuser -u postgres -- psql -d names -Atc {ROWS!r}")
                lost += after != rows
                print(f"resize {i} to {size}: downtime {down.describe()} at {prober.rate():.0f} req/s; "
                      "the workflow's own prober: "
                      f"{report['downtime']['web-1']['seconds']} s; rows {'unchanged' if after == rows else 'CHANGED'}",
                      flush=True)
        finally:
            box.invoke("droplet.destroy", "--env", box.env, "--yes")
            reap({"dropship.env": box.env})

    boot, down = statistics.median(boots), statistics.median(downs)
    ok = down <= boot + 5 and not lost
    print(f"resize downtime: median {down:.1f} s over {len(downs)} runs (min {min(downs):.1f}, max {max(downs):.1f}); "
          f"boot-to-healthy median {boot:.1f} s")
    print(f"  bar downtime <= boot-to-healthy + 5 s and 0 rows lost: {'PASS' if ok else 'FAIL'} "
          f"({lost} of {len(downs)} resizes changed the rows)")
    if args.json:
        print(json.dumps({"runs": args.runs, "airflow": args.airflow, "downtime_median_s": round(down, 2),
                          "downtime_s": [round(d, 2) for d in downs], "boot_to_healthy_median_s": round(boot, 2),
                          "boot_to_healthy_s": [round(b, 2) for b in boots], "resizes_with_rows_changed": lost}))


if __name__ == "__main__":
    main()
