"""A first `invoke provision` of roles split over hosts: a PostgreSQL host and N app hosts, every
one a new droplet of the plain image (nothing installed). The app hosts install their packages
while the database host converges, and configure themselves once it is done.

    .venv/bin/python bench/split_provision.py [--web 2] [--runs 1] [--json]

Prints, per run, the provision's wall time and each host's own time (from the --json report);
everything it creates is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scale import timed  # noqa: E402
from tests.support import DEFAULTS, AppRepo, Sandbox, app_settings, droplet_spec, reap_dead_runs, run_name  # noqa: E402


def droplets(web: int) -> list[dict]:
    """The database host and ``web`` app hosts (pure)."""
    return [droplet_spec("db-1", ["base", "postgres"], "s-1vcpu-1gb")] + \
        [droplet_spec(f"web-{i}", ["base", "nginx", "app"], "s-1vcpu-1gb") for i in range(1, web + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web", type=int, default=2, help="app hosts beside the database host")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    reap_dead_runs()
    walls, hosts = [], {}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
            repo = AppRepo.create(Path(tmp) / "app")
            (Path(tmp) / "env").mkdir()
            box = Sandbox(Path(tmp) / "env", run_name())
            box.write({box.env: {"provider": "local", "droplets": droplets(args.web)}},
                      defaults={**DEFAULTS, "app": app_settings(repo.root)})
            try:
                box.invoke("droplet.create", "--env", box.env, check=True, timeout=3600)
                wall, report, _ = timed(box, "provision")
            finally:
                box.invoke("droplet.destroy", "--env", box.env, "--yes", timeout=3600)
        walls.append(wall)
        for name, outcome in report["hosts"].items():
            hosts.setdefault(name, []).append(outcome["seconds"])
        print(f"run {run + 1}: provision {wall:.1f} s; " +
              ", ".join(f"{n} {o['seconds']:.1f} s" for n, o in report["hosts"].items()), flush=True)
    print(f"median provision of db-1 + {args.web} app host(s), new droplets: {statistics.median(walls):.1f} s")
    if args.json:
        print(json.dumps({"runs": args.runs, "web": args.web, "provision_s": round(statistics.median(walls), 2),
                          "hosts_s": {n: round(statistics.median(s), 2) for n, s in hosts.items()}}))


if __name__ == "__main__":
    main()
