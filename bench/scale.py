"""Median no-op `invoke provision` and one-file `invoke deploy` for a web tier of 1, 5, 10 and 20 hosts.

Creates a throwaway local environment from the warm droplet image: h01 holds PostgreSQL and the
names app; every other host holds the app only and reaches h01's database over the private
network. For each size (growing the same environment) it creates the new droplets, provisions
and deploys once to settle, then times the CLI exactly as a user runs it: --runs no-op
provisions and --runs deploys of a new commit changing one file. Bar: the largest size <= 2x the
1-host time, for both. Everything it creates is removed at the end.

    .venv/bin/python bench/scale.py [--sizes 1,5,10,20] [--runs 3] [--json]
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

from tests.support import (DEFAULTS, AppRepo, Sandbox, app_settings, droplet_spec, last_json,  # noqa: E402
                           reap_dead_runs, run_name)

DB_ROLES = ["base", "postgres", "nginx", "app"]
WEB_ROLES = ["base", "nginx", "app"]
SIZE = "s-1vcpu-1gb"


def droplets(count: int) -> list[dict]:
    """The environment's droplets for a web tier of ``count`` hosts (pure)."""
    return [droplet_spec("h01", DB_ROLES, SIZE, warm=True)] + \
        [droplet_spec(f"h{i:02d}", WEB_ROLES, SIZE, warm=True) for i in range(2, count + 1)]


def timed(box: Sandbox, task: str) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = box.invoke(task, "--env", box.env, "--json", timeout=3600)
    seconds = time.perf_counter() - started
    report = last_json(proc)
    if proc.returncode != 0 or not report.get("ok"):
        raise SystemExit(f"{task} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, report


def changed(report: dict) -> int:
    return sum(h.get("changed", 0) for h in report.get("hosts", {}).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,10,20", help="web tier sizes, comma-separated, ascending")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    reap_dead_runs()
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
        repo = AppRepo.create(Path(tmp) / "app")
        (Path(tmp) / "env").mkdir()
        box = Sandbox(Path(tmp) / "env", run_name())
        try:
            for n in sizes:
                box.write({box.env: {"provider": "local", "droplets": droplets(n)}},
                          defaults={**DEFAULTS, "app": app_settings(repo.root)})
                t0 = time.perf_counter()
                box.invoke("droplet.create", "--env", box.env, check=True, timeout=3600)
                timed(box, "provision")
                repo.version(f"settle {n}")
                timed(box, "deploy")
                print(f"{n} host(s): created, provisioned and deployed in {time.perf_counter() - t0:.0f} s",
                      flush=True)
                noop, deploys = [], []
                for i in range(args.runs):
                    seconds, report = timed(box, "provision")
                    if changed(report):
                        raise SystemExit(f"not a no-op provision at {n} hosts: changed={changed(report)}")
                    noop.append(seconds)
                    repo.version(f"bench {n}.{i}")
                    deploys.append(timed(box, "deploy")[0])
                rows[n] = {"noop_provision_s": statistics.median(noop), "deploy_s": statistics.median(deploys)}
                print(f"{n:>3} host(s): no-op provision median {rows[n]['noop_provision_s']:.2f} s, "
                      f"one-file deploy median {rows[n]['deploy_s']:.2f} s ({args.runs} runs each)", flush=True)
        finally:
            box.invoke("droplet.destroy", "--env", box.env, "--yes", timeout=3600)

    first, last = sizes[0], sizes[-1]
    print(f"\n{'hosts':>5}  {'no-op provision':>16}  {'one-file deploy':>16}")
    for n, row in rows.items():
        print(f"{n:>5}  {row['noop_provision_s']:>14.2f} s  {row['deploy_s']:>14.2f} s")
    verdicts = {}
    for key, what in (("noop_provision_s", "no-op provision"), ("deploy_s", "one-file deploy")):
        ratio = rows[last][key] / rows[first][key]
        verdicts[key] = round(ratio, 2)
        print(f"{what}: {last} hosts / {first} host = {ratio:.2f}x  bar <= 2x: {'PASS' if ratio <= 2 else 'FAIL'}")
    if args.json:
        print(json.dumps({"runs": args.runs, "sizes": {str(n): {k: round(v, 3) for k, v in r.items()}
                                                      for n, r in rows.items()},
                          "ratio": verdicts}))


if __name__ == "__main__":
    main()
