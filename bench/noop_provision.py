"""Median wall time of a no-op `invoke provision` for 1 host and for N hosts (default 10).

Creates a throwaway local environment: one droplet provisioned from scratch, then N-1 more
started from a snapshot of it, all settled by one provision; then times the CLI exactly as a
user runs it (interpreter start, SSH handshakes, fact gathering, recap). Bar: 1 host <= 1.5 s,
N hosts <= 2x the 1-host time. Everything it creates is removed at the end.

    .venv/bin/python bench/noop_provision.py [--hosts 10] [--runs 7] [--json]
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

from tests.support import Sandbox, droplet_spec, reap_dead_runs, run_name  # noqa: E402

ROLES = ["base", "postgres", "docker", "nginx"]
SIZE = "s-1vcpu-2gb"


def timed(box: Sandbox, *args: str) -> float:
    started = time.perf_counter()
    report, proc = box.provision_json(*args)
    seconds = time.perf_counter() - started
    changed = sum(h["changed"] for h in report["hosts"].values())
    if not report["ok"] or changed:
        raise SystemExit(f"not a no-op run (changed={changed}):\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--keep", metavar="DIR", help="keep the droplets, with their inventory in DIR")
    args = parser.parse_args()
    reap_dead_runs()
    names = [f"h{i:02d}" for i in range(1, args.hosts + 1)]
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        box = Sandbox(root, run_name() if not args.keep else "bench")
        box.write({box.env: {"provider": "local", "droplets": [droplet_spec(names[0], ROLES, SIZE)]}})
        snapshot = None
        try:
            t0 = time.perf_counter()
            box.invoke("droplet.create", "--env", box.env, check=True)
            first = timed_first(box)
            print(f"first provision of 1 host: {first:.1f} s (setup {time.perf_counter() - t0:.1f} s)", flush=True)
            from provision.workflows.droplets import provider_for

            snapshot = provider_for(box.environment()).snapshot(names[0], "bench")
            box.write({box.env: {"provider": "local", "droplets": [droplet_spec(names[0], ROLES, SIZE)] + [
                droplet_spec(n, ROLES, SIZE, image=snapshot) for n in names[1:]]}})
            box.invoke("droplet.create", "--env", box.env, check=True)
            box.provision_json()                      # settle: host names in the placeholder page
            one = [timed(box, "--hosts", names[0]) for _ in range(args.runs)]
            many = [timed(box) for _ in range(args.runs)]
        finally:
            if args.keep:
                print(f"kept: DROPSHIP_INVENTORY={box.inventory} invoke provision --env {box.env}")
            else:
                box.invoke("droplet.destroy", "--env", box.env, "--yes")
            if snapshot and not args.keep:
                from provision.providers.docker_engine import docker

                docker("image", "rm", "-f", snapshot, check=False)
    m1, mn = statistics.median(one), statistics.median(many)
    print(f"no-op provision, 1 host:   median {m1:.2f} s over {args.runs} runs "
          f"(min {min(one):.2f}, max {max(one):.2f})  bar <= 1.5 s: {'PASS' if m1 <= 1.5 else 'FAIL'}")
    print(f"no-op provision, {args.hosts} hosts: median {mn:.2f} s over {args.runs} runs "
          f"(min {min(many):.2f}, max {max(many):.2f})  ratio {mn / m1:.2f}x  bar <= 2x: "
          f"{'PASS' if mn <= 2 * m1 else 'FAIL'}")
    if args.json:
        print(json.dumps({"one_host_median_s": round(m1, 3), "hosts": args.hosts,
                          "many_hosts_median_s": round(mn, 3), "ratio": round(mn / m1, 2),
                          "first_provision_s": round(first, 1)}))


def timed_first(box: Sandbox) -> float:
    started = time.perf_counter()
    report, proc = box.provision_json()
    if not report["ok"]:
        raise SystemExit(f"first provision failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
