"""Median no-op `invoke provision` and one-file `invoke deploy` for a web tier of 1, 5, 10 and 20 hosts.

Creates a throwaway local environment from the warm droplet image: h01 holds PostgreSQL and the
names app; every other host holds the app only and reaches h01's database over the private
network. For each size (growing the same environment) it creates the new droplets, provisions
and deploys once to settle, then times the CLI exactly as a user runs it: --runs no-op
provisions and --runs deploys of a new commit changing one file, and the CPU time the droplets
used for each deploy (their cgroups): local droplets share this machine's CPUs, so that time over
the CPU count is a floor no controller can beat. Bar: the largest size <= 2x the 1-host time, for
both. Everything it creates is removed at the end.

    .venv/bin/python bench/scale.py [--sizes 1,5,10,20] [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


def droplets_cpu(env: str) -> float | None:
    """CPU seconds the environment's local droplets have used (their cgroups), None where unreadable."""
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=dropship.env={env}"],
                         capture_output=True, text=True).stdout.split()
    total = 0.0
    for cid in ids:
        for path, scale in ((f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", 1e-9),
                            (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", 1e-6),
                            (f"/sys/fs/cgroup/unified/docker/{cid}/cpu.stat", 1e-6)):
            try:
                text = Path(path).read_text()
            except OSError:
                continue
            usage = text.split()[0] if path.endswith(".usage") else dict(
                line.split() for line in text.splitlines())["usage_usec"]
            total += int(usage) * scale
            break
        else:
            return None
    return total


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
                noop, deploys, cpu = [], [], []
                for i in range(args.runs):
                    seconds, report = timed(box, "provision")
                    if changed(report):
                        raise SystemExit(f"not a no-op provision at {n} hosts: changed={changed(report)}")
                    noop.append(seconds)
                    repo.version(f"bench {n}.{i}")
                    before = droplets_cpu(box.env)
                    deploys.append(timed(box, "deploy")[0])
                    after = droplets_cpu(box.env)
                    if before is not None and after is not None:
                        cpu.append(after - before)
                rows[n] = {"noop_provision_s": statistics.median(noop), "deploy_s": statistics.median(deploys)}
                used = (f"; the droplets used {statistics.median(cpu):.1f} CPU-s per deploy, {os.cpu_count()} "
                        f"CPU(s) here") if cpu else ""
                if cpu:
                    rows[n]["deploy_droplet_cpu_s"] = statistics.median(cpu)
                print(f"{n:>3} host(s): no-op provision median {rows[n]['noop_provision_s']:.2f} s, "
                      f"one-file deploy median {rows[n]['deploy_s']:.2f} s ({args.runs} runs each){used}", flush=True)
        finally:
            box.invoke("droplet.destroy", "--env", box.env, "--yes", timeout=3600)

    first, last = sizes[0], sizes[-1]
    print(f"\n{'hosts':>5}  {'no-op provision':>16}  {'one-file deploy':>16}")
    for n, row in rows.items():
        print(f"{n:>5}  {row['noop_provision_s']:>14.2f} s  {row['deploy_s']:>14.2f} s")
    verdicts = {}
    if all("deploy_droplet_cpu_s" in r for r in rows.values()):
        floor = rows[last]["deploy_droplet_cpu_s"] / (os.cpu_count() or 1)
        print(f"the droplets share this machine's {os.cpu_count()} CPU(s): {last} hosts' deploy needs >= {floor:.1f} s "
              f"of their CPU time alone; on DigitalOcean each droplet has CPUs of its own")
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
