"""A lost client never blocks the next deploy: `invoke deploy` SIGKILLed at a moment of its run, then
run again at once, must succeed every time, and the site must serve a whole release throughout.

The kill moments are spread over a typical deploy: one at a random point of each of ROUNDS equal
slices, so every phase (lock, upload, venv, release command, slot start, health gate, switch,
prune) is hit whatever the seed.

The host's watchdog ends the killed run's remote step when its SSH session goes away, so the lock
it leaves is stale (taken over) or, for a moment, held by a step being stopped (waited for).
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.support import (DEFAULTS, INVOKE, AppRepo, Sandbox, app_settings, droplet_spec, heading, http_base,
                           run_name)

pytestmark = pytest.mark.integration

ROLES = ["base", "postgres", "nginx", "app"]
ROUNDS = 12
SEED = int(os.environ.get("DROPSHIP_LOST_CLIENT_SEED", "20261202"))


def page_heading(url: str) -> tuple[int | None, str]:
    """(status, h1) of GET / through nginx; (None, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url + "/", timeout=10) as resp:
            found = re.search(r"<h1>([^<]*)</h1>", resp.read().decode())
            return resp.status, found.group(1) if found else "no heading"
    except urllib.error.HTTPError as exc:
        return exc.code, exc.reason
    except OSError as exc:
        return None, str(exc)


def kill_slice(n: int, typical: float) -> tuple[float, float]:
    """The n-th (1-based) of ROUNDS equal slices of [0.2 s, the typical deploy's length]."""
    step = (max(typical, 0.4) - 0.2) / ROUNDS
    return 0.2 + (n - 1) * step, 0.2 + n * step


def deploy(box: Sandbox) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = box.invoke("deploy", "--env", box.env, timeout=600)
    return proc, time.monotonic() - started


def test_killed_deploy_then_rerun_succeeds_every_time(tmp_path):
    repo = AppRepo.create(tmp_path / "app")
    (tmp_path / "env").mkdir()
    box = Sandbox(tmp_path / "env", run_name())
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES, warm=True)]}},
              defaults={**DEFAULTS, "app": app_settings(repo.root)})
    env = dict(os.environ, DROPSHIP_INVENTORY=str(box.inventory), PYTHONUNBUFFERED="1")
    rng = random.Random(SEED)
    try:
        box.create_and_provision()
        url = http_base(box)
        first, _ = deploy(box)
        assert first.returncode == 0, first.stdout + first.stderr
        repo.version("warm")
        warm, typical = deploy(box)
        assert warm.returncode == 0, warm.stdout + warm.stderr
        committed = {heading("v1"), heading("warm")}
        kills, reruns, ok, stale, waited = [], [], 0, 0, 0
        for n in range(1, ROUNDS + 1):
            label = f"k{n}"
            repo.version(label)
            committed.add(heading(label))
            delay = round(rng.uniform(*kill_slice(n, typical)), 2)
            killed = subprocess.Popen(INVOKE + ["deploy", "--env", box.env], cwd=box.root, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(delay)
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(10)
            kills.append(delay)
            status, h1 = page_heading(url)
            assert status == 200 and h1 in committed, f"round {n}, after the kill at {delay} s: {status} {h1!r}"

            again, seconds = deploy(box)
            reruns.append(round(seconds, 1))
            out = again.stdout + again.stderr
            assert again.returncode == 0, f"round {n} (killed at {delay} s): re-run failed:\n{out}"
            stale += "took over a stale lock" in out
            waited += bool(re.search(r"\b(WAIT|ENDING)\b|waiting for", out))
            deadline = time.monotonic() + 5
            while (answer := page_heading(url)) != (200, heading(label)) and time.monotonic() < deadline:
                assert answer[0] == 200 and answer[1] in committed, f"round {n}, after the re-run: {answer}"
                time.sleep(0.2)
            assert answer == (200, heading(label)), f"round {n}, after the re-run: {answer}"
            ok += 1
        print(f"\nlost client (seed {SEED}, typical deploy {typical:.1f} s): {ok}/{ROUNDS} re-runs succeeded; "
              f"{stale} took over a stale lock, {waited} waited for the lost client's step")
        print(f"  killed after (s): {kills}")
        print(f"  re-run took (s):  {reruns}")
        assert ok == ROUNDS
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
