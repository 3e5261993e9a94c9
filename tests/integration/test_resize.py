"""``droplet.resize`` end to end on a real local droplet, a real power cycle each time.

One droplet (s-2vcpu-4gb) runs the names app, the guestbook app (another shape) and Airflow. Names
and guestbook entries are added through their forms; then the droplet is resized to s-4vcpu-8gb
with --size (a size not in the inventory), then back to the inventory's size by a plain
``droplet.resize``. After each: the container really restarted, the rows are unchanged and listed,
PostgreSQL, gunicorn and Airflow run the settings of the new size (read over SSH), Helloworld
still runs, the downtime was measured from outside and printed. A shrink the disk cannot follow
is refused before anything stops.
"""
from __future__ import annotations

import html
import json
import os

import pytest

from provision import sizing
from provision.providers.sizes import BASIC_SIZES
from tests.integration.conftest import AppStack
from tests.support import Browser, guestbook_page, http_base, last_json

pytestmark = pytest.mark.integration

SMALL, BIG = AppStack.SIZE, "s-4vcpu-8gb"
NAMES, ENTRIES = AppStack.NAMES, AppStack.ENTRIES


def expected(size: str) -> dict[str, str]:
    vcpus, memory_mb, _ = BASIC_SIZES[size]
    derived = sizing.derived(min(vcpus, os.cpu_count()), memory_mb, {"names": None, "guestbook": None}, True,
                             celery=True)
    pg = {k: v for k, v in derived.items() if k.startswith("postgres")}
    # PostgreSQL shows sizes in its own units (2048MB is "2GB")
    pg = {k: (f"{int(v[:-2]) // 1024}GB" if int(v[:-2]) % 1024 == 0 else v) for k, v in pg.items()}
    return {**derived, **pg}


def resize(d: AppStack, *args: str) -> dict:
    proc = d.box.invoke("droplet.resize", "--env", d.box.env, "--json", *args, timeout=1800)
    report = last_json(proc)
    assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "downtime: " in proc.stderr, proc.stderr           # printed, as well as in the JSON
    down = report["downtime"]["web-1"]
    assert down["seconds"] is not None and down["requests"] > down["failed_requests"] > 0, down
    return report


def check_after(d: AppStack, size: str, rows: str, started_before: str) -> None:
    assert d.container_started() != started_before            # a real power cycle
    assert d.info.size == size
    assert d.rows() == rows
    browser = Browser(http_base(d.box))
    assert [html.unescape(n) for n in browser.page()[1]] == NAMES
    entries = guestbook_page(browser)[2]
    assert all(any(m in e for e in entries) for _, m in ENTRIES), entries
    running = d.settings()
    want = expected(size)
    assert {k: running[k] for k in want} == want
    proc = d.box.invoke("airflow.test", "--env", d.box.env, "--dag", "Helloworld", "--task", "task_1",
                        "--date", "2015-06-01", timeout=600)
    assert proc.returncode == 0 and "Hello World from Task 1" in proc.stdout, proc.stdout[-2000:] + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "Helloworld.task_1: success", proc.stdout[-2000:]


def test_preflight_refuses_a_plan_before_anything_stops(app_stack):
    started = app_stack.container_started()
    proc = app_stack.box.invoke("droplet.resize", "--env", app_stack.box.env, "--size", "s-1vcpu-1gb")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stdout + proc.stderr
    assert "has a 25 GB disk, smaller than the droplet's 80 GB" in lines[0] and "s-2vcpu-4gb" in lines[0]
    proc = app_stack.box.invoke("droplet.resize", "--env", app_stack.box.env, "--size", "s-3vcpu-5gb")
    assert proc.returncode == 1 and "is not offered" in proc.stderr, proc.stderr
    proc = app_stack.box.invoke("droplet.resize", "--env", app_stack.box.env, "--size", BIG, "--disk",
                                env={"CI": ""})       # (CI=true answers yes, as --yes)
    assert proc.returncode == 1 and "--disk is permanent" in proc.stderr and "pass --yes" in proc.stderr
    dry = app_stack.box.invoke("droplet.resize", "--env", app_stack.box.env, "--size", BIG, "--dry-run", "--json")
    plan = last_json(dry)["plan"]["web-1"]
    assert (plan["from"], plan["to"]) == (SMALL, BIG)
    assert {s["setting"] for s in plan["settings"]} >= {"postgres shared_buffers", "gunicorn workers (names)"}
    assert "expected downtime" in dry.stderr
    assert app_stack.container_started() == started


def test_resize_up_then_back_to_the_inventory(app_stack):
    rows = app_stack.rows()
    assert all(n in rows for n in ("Ada", "Grace O'Hara"))
    before = app_stack.settings()
    assert {k: before[k] for k in expected(SMALL)} == expected(SMALL)

    started = app_stack.container_started()
    up = resize(app_stack, "--size", BIG)
    assert up["plan"]["web-1"]["to"] == BIG
    check_after(app_stack, BIG, rows, started)
    listing = app_stack.box.invoke("droplet.list", "--env", app_stack.box.env)
    assert f"the inventory says {SMALL}, the droplet is {BIG}" in listing.stdout, listing.stdout

    started = app_stack.container_started()
    back = resize(app_stack, "--no-snapshot")                  # the inventory's size again
    assert back["plan"]["web-1"]["to"] == SMALL
    check_after(app_stack, SMALL, rows, started)
    listed = json.loads(app_stack.box.invoke("droplet.list", "--env", app_stack.box.env, "--json").stdout)
    assert [(d["size"], d["inventory_size"]) for d in listed] == [(SMALL, SMALL)]
