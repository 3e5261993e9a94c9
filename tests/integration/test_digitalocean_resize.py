"""``droplet.resize`` through pydo against the local DigitalOcean API, whose droplets are real local
droplets: the actions really stop, resize and start a container, and the app on it is checked from
outside and over SSH.

One droplet (s-1vcpu-2gb, roles base, postgres, nginx, app: the names app) is created, provisioned
and deployed; names are added through the form. In order: the preflight refuses each case the API
would answer with 422 (unknown, unavailable, not in the region, a disk that would shrink, an action
in progress) before any action, a bad token is one line, a 429 is waited out, a resize action that
fails in the middle leaves the droplet on at its old size and names the step and the snapshot, then
the resize up and back to the inventory's size keeps the rows and retunes PostgreSQL and gunicorn.
"""
from __future__ import annotations

import html
import json
import os
import secrets
import subprocess
import urllib.request

import pytest

from provision import sizing
from provision.providers.sizes import BASIC_SIZES
from provision.state import load_droplets
from tests.fakes.do_api import fake_do_api
from tests.fakes.local_backend import LocalDropletBackend
from tests.integration.test_digitalocean_e2e import ENV, HOST, DoSandbox, do_environment
from tests.support import (DEFAULTS, AppRepo, Browser, app_settings, last_json, one_error_line, run_name,
                           warm_image)

pytestmark = pytest.mark.integration

SMALL, BIG = "s-1vcpu-2gb", "s-2vcpu-4gb"
ROLES = ["base", "postgres", "nginx", "app"]
NAMES = ["Ada", "Brian O'Neil"]


class Bed:
    def __init__(self, box: DoSandbox, api, backend: LocalDropletBackend, token: str):
        self.box, self.api, self.backend, self.token = box, api, backend, token

    @property
    def droplet(self):
        return load_droplets(self.box.environment())[HOST]

    @property
    def url(self) -> str:
        return f"http://{self.backend.address(HOST)}:80"

    def started(self) -> str:
        return subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", self.backend.container(HOST)],
                              capture_output=True, text=True, check=True).stdout.strip()

    def on_host(self, script: str) -> str:
        return subprocess.run(["docker", "exec", "-i", self.backend.container(HOST), "sh", "-s"], input=script,
                              capture_output=True, text=True, check=True, timeout=120).stdout

    def rows(self) -> str:
        return self.on_host("runuser -u postgres -- psql -d names -Atc 'select * from name order by 1'")

    def actions(self) -> list[str]:
        return [r.json["type"] for r in self.api.calls("POST", r"^/v2/droplets/\d+/actions$")]

    def resize(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.box.invoke("droplet.resize", "--env", ENV, *args, timeout=1800, env=env)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    root = tmp_path_factory.mktemp("do-resize")
    token = f"dop_v1_{secrets.token_hex(32)}"
    repo = AppRepo.create(root / "names")
    backend = LocalDropletBackend(run_name(), root / "backend", boot_image=warm_image())   # not a first provision
    try:
        with fake_do_api(token=token, backend=backend) as api:
            box = DoSandbox(root, ENV, extra_env={"DIGITALOCEAN_TOKEN": token, "DIGITALOCEAN_API_URL": api.url})
            box.write(do_environment(SMALL, ROLES), {**DEFAULTS, "app": app_settings(repo.root)})
            box.invoke("droplet.create", "--env", ENV, check=True)
            report, proc = box.provision_json()
            assert report["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
            box.invoke("deploy", "--env", ENV, check=True, timeout=1800)
            bed = Bed(box, api, backend, token)
            browser = Browser(bed.url)
            for name in NAMES:
                browser.add_name(name)
            yield bed
    finally:
        backend.destroy_all()


def refused(bed: Bed, size: str, *extra: str) -> str:
    before, started = len(bed.actions()), bed.started()
    line = one_error_line(bed.resize("--size", size, *extra))
    assert bed.actions()[before:] == [] and bed.started() == started      # nothing was asked to change
    return line


def test_the_preflight_refuses_what_the_api_would(bed):
    line = refused(bed, "s-3vcpu-3gb")
    assert "s-3vcpu-3gb" in line and "fix:" in line
    regions = list(bed.api.sizes[BIG]["regions"])
    bed.api.set_size(BIG, available=False)
    assert "not available" in refused(bed, BIG)
    bed.api.set_size(BIG, available=True, regions=["nyc3", "ams3"])
    assert "fra1" in refused(bed, BIG)
    bed.api.set_size(BIG, regions=regions)
    line = refused(bed, "s-1vcpu-1gb")
    assert "25 GB" in line and "50 GB" in line and "fix:" in line
    # an action in progress: another one would get a 422
    bed.api.action_delay = 600
    request = urllib.request.Request(f"{bed.api.url}/v2/droplets/{bed.droplet.id}/actions", method="POST",
                                     data=json.dumps({"type": "enable_ipv6"}).encode(),
                                     headers={"Authorization": f"Bearer {bed.token}",
                                              "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    try:
        assert "in progress" in refused(bed, BIG)
    finally:
        bed.api.action_delay = 0.05
        bed.api.finish_actions()


def test_a_bad_token_is_one_line_and_a_rate_limit_is_waited_out(bed):
    proc = bed.resize("--size", BIG, "--dry-run", env={"DIGITALOCEAN_TOKEN": "dop_v1_" + "0" * 64})
    line = one_error_line(proc)
    assert "401" in line and "fix:" in line and bed.token not in proc.stdout + proc.stderr
    bed.api.fail_next(429, method="GET", path=r"^/v2/sizes", headers={"retry-after": "1"})
    proc = bed.resize("--size", BIG, "--dry-run", "--json")
    assert proc.returncode == 0 and last_json(proc)["plan"][HOST]["to"] == BIG, proc.stdout + proc.stderr
    assert len(bed.api.calls("GET", r"^/v2/sizes")) >= 2


def test_a_resize_failing_in_the_middle_leaves_it_serving_at_the_old_size(bed):
    rows = bed.rows()
    bed.api.fail_action("resize")
    before = len(bed.actions())
    line = one_error_line(bed.resize("--size", BIG))
    assert bed.actions()[before:] == ["snapshot", "shutdown", "resize", "power_on"]
    assert f"resize to {BIG} failed" in line and "at the old size" in line and "snapshot " in line, line
    d = bed.droplet
    assert (d.size, d.status) == (SMALL, "active")
    assert bed.rows() == rows
    assert [html.unescape(n) for n in Browser(bed.url).page()[1]] == NAMES


def test_resize_up_then_back_to_the_inventory(bed):
    rows = bed.rows()
    for args, size in ((("--size", BIG), BIG), (("--no-snapshot",), SMALL)):
        before, started = len(bed.actions()), bed.started()
        proc = bed.resize(*args, "--json")
        report = last_json(proc)
        assert proc.returncode == 0 and report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
        want = (["snapshot"] if size == BIG else []) + ["shutdown", "resize", "power_on"]
        assert bed.actions()[before:] == want
        assert bed.started() != started and bed.droplet.size == size
        assert report["downtime"][HOST]["seconds"] is not None and "downtime: " in proc.stderr
        assert bed.rows() == rows
        assert [html.unescape(n) for n in Browser(bed.url).page()[1]] == NAMES
        vcpus, memory_mb, _ = BASIC_SIZES[size]
        pg = sizing.memory_settings(memory_mb)
        shown = bed.on_host("runuser -u postgres -- psql -Atc 'show shared_buffers'").strip()
        assert shown == (f"{pg.shared_buffers_mb // 1024}GB" if pg.shared_buffers_mb % 1024 == 0
                         else f"{pg.shared_buffers_mb}MB")
        live = bed.on_host("cat /srv/names/live").strip()
        workers = bed.on_host(f"pgrep -c -P $(systemctl show -p MainPID --value names@{live})").strip()
        assert int(workers) == sizing.gunicorn_workers(min(vcpus, os.cpu_count()), memory_mb)
