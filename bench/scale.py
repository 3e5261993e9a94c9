"""Median no-op `invoke provision` and one-file `invoke deploy` for a web tier of 1, 5, 10 and 20 hosts.

Creates a throwaway local environment from the warm droplet image: h01 holds PostgreSQL and the
names app; every other host holds the app only and reaches h01's database over the private
network. For each size (growing the same environment) it creates the new droplets, provisions
and deploys once to settle, then times the CLI exactly as a user runs it: --runs no-op
provisions and --runs deploys of a new commit changing one file. For each it also reads the CPU
time the droplets used (their cgroups) and the CLI used (this process's children): local
droplets share this machine's CPUs with the controller, so their sum over the CPU count is a
floor no controller can beat (what the droplets use idle, measured before the runs, is shown
apart: their daemons and gunicorns run on these CPUs too). Bar: the largest size <= 2x the 1-host
time, for both. Everything it creates is removed at the end.

    .venv/bin/python bench/scale.py [--sizes 1,5,10,20] [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.roles.app import AppLayout  # noqa: E402
from tests.support import (DEFAULTS, AppRepo, Sandbox, app_settings, droplet_spec, last_json,  # noqa: E402
                           reap_dead_runs, run_name)

DB_ROLES = ["base", "postgres", "nginx", "app"]
WEB_ROLES = ["base", "nginx", "app"]
SIZE = "s-1vcpu-1gb"


def droplets(count: int) -> list[dict]:
    """The environment's droplets for a web tier of ``count`` hosts (pure)."""
    return [droplet_spec("h01", DB_ROLES, SIZE, warm=True)] + \
        [droplet_spec(f"h{i:02d}", WEB_ROLES, SIZE, warm=True) for i in range(2, count + 1)]


def containers(env: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=dropship.env={env}"],
                          capture_output=True, text=True).stdout.split()


def droplets_cpu(env: str) -> float | None:
    """CPU seconds the environment's local droplets have used (their cgroups), None where unreadable."""
    total = 0.0
    for cid in containers(env):
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


def live_slot_cpu_command(app: str) -> str:
    """Shell printing the CPU seconds the processes of ``app``'s live slot (its gunicorn master and
    workers) have used since they started (pure): utime and stime, the 12th and 13th fields after
    the command name, which may hold spaces."""
    lay = AppLayout(app)
    return (f"main=$(systemctl show -p MainPID --value {lay.app}@$(cat {lay.live_file}).service); "
            "[ \"${main:-0}\" -gt 0 ] || exit 1; "
            "for p in $main $(pgrep -P $main); do sed 's/.*) //' /proc/$p/stat | cut -d' ' -f12,13; done | "
            "awk -v hz=$(getconf CLK_TCK) '{t += $1 + $2} END {printf \"%.3f\\n\", t / hz}'")


def app_start_cpu(env: str, app: str) -> float | None:
    """CPU seconds ``app``'s live slots (started by the last deploy) have used on all the droplets: the
    app's own start, which no deploy tool saves, None where unreadable."""
    total = 0.0
    for cid in containers(env):
        done = subprocess.run(["docker", "exec", cid, "sh", "-c", live_slot_cpu_command(app)],
                              capture_output=True, text=True)
        try:
            total += float(done.stdout)
        except ValueError:
            return None
    return total


def cli_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(box: Sandbox, task: str) -> tuple[float, dict, dict[str, float]]:
    """Seconds, report, and the CPU seconds the droplets and the CLI used (droplets absent when unreadable)."""
    droplets_before, cli_before = droplets_cpu(box.env), cli_cpu()
    started = time.perf_counter()
    proc = box.invoke(task, "--env", box.env, "--json", timeout=3600)
    seconds = time.perf_counter() - started
    droplets_after, cli = droplets_cpu(box.env), cli_cpu() - cli_before
    report = last_json(proc)
    if proc.returncode != 0 or not report.get("ok"):
        raise SystemExit(f"{task} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = {"cli": cli}
    if droplets_before is not None and droplets_after is not None:
        cpu["droplets"] = droplets_after - droplets_before
    return seconds, report, cpu


def idle_rate(env: str, seconds: float = 5) -> float | None:
    """CPU seconds per second the environment's droplets use while nothing is run on them."""
    before = droplets_cpu(env)
    time.sleep(seconds)
    after = droplets_cpu(env)
    return None if before is None or after is None else (after - before) / seconds


def floor(cpu: list[dict[str, float]], seconds: float, idle: float | None) -> str:
    """The median CPU seconds of droplets (with what they use idle over ``seconds`` and, for deploys,
    what the app's new slots used starting) and CLI, and the wall time they need at least here."""
    if not all("droplets" in c for c in cpu):
        return f"the CLI used {statistics.median(c['cli'] for c in cpu):.2f} CPU-s"
    droplets, cli = statistics.median(c["droplets"] for c in cpu), statistics.median(c["cli"] for c in cpu)
    cpus = os.cpu_count() or 1
    parts = [f"{idle * seconds:.2f} of it idle"] if idle is not None else []
    app = statistics.median(c["app_start"] for c in cpu) if all(c.get("app_start") is not None for c in cpu) else None
    if app is not None:
        parts.append(f"{app:.2f} the app's new gunicorns starting, alone >= {app / cpus:.2f} s")
    of_it = f" ({'; '.join(parts)})" if parts else ""
    return (f"droplets {droplets:.2f}{of_it} + CLI {cli:.2f} CPU-s, so >= "
            f"{(droplets + cli) / cpus:.2f} s on {os.cpu_count()} CPU(s)")


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
        app = app_settings(repo.root)["name"]
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
                idle = idle_rate(box.env)
                print(f"{n} host(s): created, provisioned and deployed in {time.perf_counter() - t0:.0f} s"
                      + (f"; idle, the droplets use {idle:.3f} CPU-s a second" if idle is not None else ""),
                      flush=True)
                noop, deploys, noop_cpu, deploy_cpu = [], [], [], []
                for i in range(args.runs):
                    seconds, report, cpu = timed(box, "provision")
                    if changed(report):
                        raise SystemExit(f"not a no-op provision at {n} hosts: changed={changed(report)}")
                    noop.append(seconds)
                    noop_cpu.append(cpu)
                    repo.version(f"bench {n}.{i}")
                    seconds, _, cpu = timed(box, "deploy")
                    cpu["app_start"] = app_start_cpu(box.env, app)
                    deploys.append(seconds)
                    deploy_cpu.append(cpu)
                rows[n] = {"noop_provision_s": statistics.median(noop), "deploy_s": statistics.median(deploys)}
                if idle is not None:
                    rows[n]["idle_droplet_cpu_per_s"] = idle
                for key, runs in (("noop_provision", noop_cpu), ("deploy", deploy_cpu)):
                    rows[n][f"{key}_cli_cpu_s"] = statistics.median(c["cli"] for c in runs)
                    if all("droplets" in c for c in runs):
                        rows[n][f"{key}_droplet_cpu_s"] = statistics.median(c["droplets"] for c in runs)
                    if all(c.get("app_start") is not None for c in runs):
                        rows[n][f"{key}_app_start_cpu_s"] = statistics.median(c["app_start"] for c in runs)
                print(f"{n:>3} host(s), medians of {args.runs} runs:\n"
                      f"      no-op provision {rows[n]['noop_provision_s']:.2f} s "
                      f"({floor(noop_cpu, rows[n]['noop_provision_s'], idle)})\n"
                      f"      one-file deploy {rows[n]['deploy_s']:.2f} s "
                      f"({floor(deploy_cpu, rows[n]['deploy_s'], idle)})", flush=True)
        finally:
            box.invoke("droplet.destroy", "--env", box.env, "--yes", timeout=3600)

    first, last = sizes[0], sizes[-1]
    print(f"\n{'hosts':>5}  {'no-op provision':>16}  {'one-file deploy':>16}")
    for n, row in rows.items():
        print(f"{n:>5}  {row['noop_provision_s']:>14.2f} s  {row['deploy_s']:>14.2f} s")
    verdicts = {}
    for key, what in (("noop_provision", "no-op provision"), ("deploy", "one-file deploy")):
        ratio = rows[last][f"{key}_s"] / rows[first][f"{key}_s"]
        verdicts[f"{key}_s"] = round(ratio, 2)
        print(f"{what}: {last} hosts / {first} host = {ratio:.2f}x  bar <= 2x: {'PASS' if ratio <= 2 else 'FAIL'}")
    if "deploy_app_start_cpu_s" in rows[last]:
        cpus = os.cpu_count() or 1
        print(f"at {last} hosts the app's new gunicorns alone need >= "
              f"{rows[last]['deploy_app_start_cpu_s'] / cpus:.2f} s of this machine's {cpus} CPU(s) to start; "
              f"the bar allows {2 * rows[first]['deploy_s']:.2f} s for the whole deploy")
    if "deploy_droplet_cpu_s" in rows[last]:
        print(f"the droplets share this machine's {os.cpu_count()} CPU(s) with the CLI; on DigitalOcean each has "
              "CPUs of its own")
    if args.json:
        print(json.dumps({"runs": args.runs, "sizes": {str(n): {k: round(v, 3) for k, v in r.items()}
                                                      for n, r in rows.items()},
                          "ratio": verdicts}))


if __name__ == "__main__":
    main()
