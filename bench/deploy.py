"""Median wall time of a one-file-change `invoke deploy` and of `invoke rollback`, and the failed
requests during each under a steady HTTP load.

Creates a throwaway local environment (one droplet with roles base, postgres, nginx, app) that
ships a copy of app_src kept in a git repository of its own; provisions it and makes a first
deploy (which builds the virtualenv). Then, with a load generator sending GET /healthz at
--rate req/s (default 60) through the droplet's nginx, it times the CLI exactly as a user runs
it: --runs deploys (default 5), each of a new commit changing one file, then --runs deploys that
change requirements.txt (each a new requirements hash: a virtualenv built afresh by uv, the
first one downloading the new package), then --runs rollbacks (each back to the release kept
warm). Bars: deploy median <= 5 s, requirement-change deploy median <= 3 s, rollback median
<= 1 s, 0 failed requests. Everything it creates is removed at the end.

    .venv/bin/python bench/deploy.py [--runs 5] [--rate 60] [--json]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.loadgen import LoadGenerator  # noqa: E402
from tests.support import (DEFAULTS, AppRepo, Sandbox, app_settings, droplet_spec, http_base,  # noqa: E402
                           last_json, reap_dead_runs, run_name)

ROLES = ["base", "postgres", "nginx", "app"]
UPLOAD = re.compile(r"upload (\d+) changed, (\d+) removed file\(s\)")


def timed_under_load(url: str, rate: float, run) -> tuple[float, object, object]:
    """(wall seconds of ``run()``, its result, the load's stats); the load starts before and ends
    0.5 s after it."""
    load = LoadGenerator(url, rate=rate, concurrency=8).start()
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - started
        time.sleep(0.5)
    finally:
        stats = load.stop()
    return seconds, result, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=60, help="requests per second during each operation")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    reap_dead_runs()
    deploys, requirement_changes, rollbacks = [], [], []
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
        repo = AppRepo.create(Path(tmp) / "app")
        (Path(tmp) / "env").mkdir()
        box = Sandbox(Path(tmp) / "env", run_name())
        box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES)]}},
                  defaults={**DEFAULTS, "app": app_settings(repo.root)})
        try:
            t0 = time.perf_counter()
            box.create_and_provision()
            first = time.perf_counter()
            deploy_json(box)
            print(f"setup: droplet + provision {first - t0:.1f} s, first deploy (virtualenv build) "
                  f"{time.perf_counter() - first:.1f} s", flush=True)
            url = http_base(box) + "/healthz"

            for i in range(1, args.runs + 1):
                repo.version(f"bench {i}")
                seconds, proc, stats = timed_under_load(url, args.rate, lambda: deploy_json(box))
                uploads = UPLOAD.findall(proc.stderr)
                if uploads != [("1", "0")]:
                    raise SystemExit(f"not a one-file deploy: {uploads}\n{proc.stderr}")
                deploys.append((seconds, stats))
                print(f"deploy {i}: {seconds:.2f} s; load: {stats.summary()}", flush=True)

            requirements = (repo.root / "requirements.txt").read_text().rstrip("\n")
            for i in range(1, args.runs + 1):
                (repo.root / "requirements.txt").write_text(f"{requirements}\nsix==1.17.0  # change {i}\n")
                repo.commit(f"requirements {i}")
                seconds, proc, stats = timed_under_load(url, args.rate, lambda: deploy_json(box))
                if "virtualenv" not in proc.stderr:
                    raise SystemExit(f"no virtualenv step:\n{proc.stderr}")
                requirement_changes.append((seconds, stats))
                print(f"requirement-change deploy {i}: {seconds:.2f} s; load: {stats.summary()}", flush=True)

            for i in range(1, args.runs + 1):
                seconds, _, stats = timed_under_load(
                    url, args.rate, lambda: box.invoke("rollback", "--env", box.env, check=True))
                rollbacks.append((seconds, stats))
                print(f"rollback {i}: {seconds:.2f} s; load: {stats.summary()}", flush=True)
        finally:
            box.invoke("droplet.destroy", "--env", box.env, "--yes")

    result = {"runs": args.runs, "rate": args.rate}
    for name, what, rows, bar in (("deploy", "one-file change", deploys, 5.0),
                                  ("requirement_change_deploy", "new requirements.txt: a new virtualenv",
                                   requirement_changes, 3.0),
                                  ("rollback", "to the warm release", rollbacks, 1.0)):
        times = [s for s, _ in rows]
        med = statistics.median(times)
        failed = sum(st.failed for _, st in rows)
        total = sum(st.total for _, st in rows)
        min_rps = min(st.rps for _, st in rows)
        print(f"{name} ({what}): median {med:.2f} s over {len(times)} runs (min {min(times):.2f}, "
              f"max {max(times):.2f})  bar <= {bar:.0f} s: {'PASS' if med <= bar else 'FAIL'}")
        print(f"  failed requests during {name}s: {failed} of {total} (>= {min_rps:.0f} req/s in every run)  "
              f"bar 0: {'PASS' if failed == 0 else 'FAIL'}")
        result.update({f"{name}_median_s": round(med, 3), f"{name}_min_s": round(min(times), 3),
                       f"{name}_max_s": round(max(times), 3), f"{name}_failed_requests": failed,
                       f"{name}_requests": total, f"{name}_min_rps": round(min_rps, 1)})
        if failed:
            print(f"  first failures: {[f for _, st in rows for f in st.failures][:5]}")
    if args.json:
        print(json.dumps(result))


def deploy_json(box: Sandbox):
    proc = box.invoke("deploy", "--env", box.env, "--json")
    if proc.returncode != 0 or not last_json(proc)["ok"]:
        raise SystemExit(f"deploy failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


if __name__ == "__main__":
    main()
