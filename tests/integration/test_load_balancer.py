"""A load balancer in front of two web hosts: lb-1 [base, nginx, lb] proxies to web-1 and web-2
[base, nginx, app] over the private network, db-1 [base, postgres] holds the database.

The tests run in order and share the environment: a rolling deploy and a rollback under load
through the lb (0 failed requests), a deploy whose new release fails its health check (stops after
the first batch, nothing changes), and a third web host that joins after its gate and, once
removed from the inventory, is drained by the next deploy.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pytest

from provision.providers.local import reap
from tests.loadgen import LoadGenerator
from tests.support import (DEFAULTS, AppRepo, Browser, Sandbox, app_settings, droplet_spec, heading, http_base,
                           last_json, run_name, ssh_script)

pytestmark = pytest.mark.integration

LB, WEB, DB = "lb-1", ["web-1", "web-2"], "db-1"
VIEWS = "names/views.py"
HEALTHY = 'return {"status": "ok", "release": release}'


@dataclass
class Farm:
    box: Sandbox
    repo: AppRepo
    releases: dict[str, str] = field(default_factory=dict)     # version label -> release id

    @property
    def url(self) -> str:
        return http_base(self.box, LB)

    def write(self, web: list[str]) -> None:
        droplets = [droplet_spec(LB, ["base", "nginx", "lb"], "s-1vcpu-1gb", warm=True)]
        droplets += [droplet_spec(w, ["base", "nginx", "app"], "s-1vcpu-2gb", warm=True) for w in web]
        droplets += [droplet_spec(DB, ["base", "postgres"], "s-1vcpu-1gb", warm=True)]
        app = {k: v for k, v in app_settings(self.repo.root).items() if k != "health_path"}
        self.box.write({self.box.env: {"provider": "local", "droplets": droplets, "deploy": {"batch_size": 1}}},
                       {**DEFAULTS, "app": {**app, "health": {"path": "/healthz", "timeout": 10}}})

    def deploy(self, label: str | None, check: bool = True):
        if label and label != "v1":
            self.repo.version(label)
        proc = self.box.invoke("deploy", "--env", self.box.env, "--json", timeout=1800)
        if check:
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
            self.releases[label] = last_json(proc)["release"]
        return proc

    def live(self, host: str) -> str:
        """The release the host's own nginx serves (/healthz on its published port 80)."""
        return Browser(http_base(self.box, host)).health()["release"]

    def through_lb(self, n: int = 6) -> set[str]:
        return {Browser(self.url).health()["release"] for _ in range(n)}

    def upstream(self) -> str:
        return ssh_script(self.box, "cat /etc/nginx/dropship/lb-upstream.conf", host=LB)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    repo = AppRepo.create(root / "names")
    (root / "env").mkdir()
    farm = Farm(Sandbox(root / "env", run_name()), repo)
    farm.write(WEB)
    try:
        report = farm.box.create_and_provision()
        assert set(report["hosts"]) == {LB, *WEB, DB}
        farm.deploy("v1")
        yield farm
    finally:
        farm.box.invoke("droplet.destroy", "--env", farm.box.env, "--yes")
        reap({"dropship.env": farm.box.env})


def under_load(farm: Farm, action, what: str):
    """Run ``action`` with /healthz and / loaded through the lb; no request may fail."""
    health = LoadGenerator(farm.url + "/healthz", rate=40, concurrency=6).start()
    page = LoadGenerator(farm.url + "/", rate=10, concurrency=3, keepalive=True).start()
    try:
        time.sleep(0.5)
        result = action()
        time.sleep(1.0)
    finally:
        stats = health.stop(), page.stop()
    for s in stats:
        print(f"{what}: {s.summary()}")
        assert s.total > 0 and s.failed == 0, f"{what}: {s.summary()}"
    return result, stats[0]


def test_the_lb_serves_both_web_hosts(farm):
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1}
    assert farm.through_lb() == {v1}
    upstream = farm.upstream()
    assert len(re.findall(r"^server \S+:80 max_fails=1 fail_timeout=5s;   # web-\d$", upstream, re.M)) == 2, upstream
    heading_v1 = heading("v1")
    assert heading_v1 in Browser(farm.url).open("/")[2]


def test_a_rolling_deploy_under_load_fails_no_request(farm):
    proc, load = under_load(farm, lambda: farm.deploy("v2"), "deploy v2")
    v2 = farm.releases["v2"]
    assert {farm.live(w) for w in WEB} == {v2}
    assert farm.through_lb() == {v2}
    assert heading("v2") in Browser(farm.url).open("/")[2]
    out = proc.stdout + proc.stderr
    assert "batch 1/2: web-1" in out and "batch 2/2: web-2" in out, out
    assert "drain web-1" in out and "put back web-2" in out, out
    assert out.count("release command: flask --app wsgi db upgrade") == 1, out      # on the first host only
    assert set(load.releases) <= {farm.releases["v1"], v2}


def test_a_rolling_rollback_under_load_fails_no_request(farm):
    def back():
        proc = farm.box.invoke("rollback", "--env", farm.box.env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        return proc

    proc, _ = under_load(farm, back, "rollback")
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1} and farm.through_lb() == {v1}
    assert "RECAP rollback" in proc.stdout and all(h in proc.stdout for h in (LB, *WEB))


def test_a_release_failing_its_health_check_stops_after_the_first_batch(farm):
    views = farm.repo.root / VIEWS
    views.write_text(views.read_text().replace(HEALTHY, 'return {"status": "broken", "release": release}, 500'))
    farm.repo.commit("broken health")
    try:
        proc, _ = under_load(farm, lambda: farm.deploy(None, check=False), "broken deploy")
    finally:
        views.write_text(views.read_text().replace('return {"status": "broken", "release": release}, 500', HEALTHY))
        farm.repo.commit("healthy again")
    assert proc.returncode != 0
    report = last_json(proc)
    assert report["hosts"]["web-1"]["failed"] == 1 and report["hosts"]["web-2"]["skipped"] == 1, report
    error = report["hosts"]["web-1"]["error"]
    assert "web-1: health check" in error and "deploy stopped at batch 1/2" in error, error
    assert "web-2 untouched" in error and "invoke deploy --env" in error, error
    v1 = farm.releases["v1"]
    assert {farm.live(w) for w in WEB} == {v1} and farm.through_lb() == {v1}
    assert " down" not in farm.upstream() and "\n" not in error


def test_a_third_web_host_joins_after_its_gate_and_is_drained_when_removed(farm):
    farm.write(WEB + ["web-3"])
    farm.box.invoke("droplet.create", "--env", farm.box.env, check=True)
    report, proc = farm.box.provision_json()
    assert report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "web-3" not in farm.upstream()
    proc, _ = under_load(farm, lambda: farm.deploy("v3"), "deploy v3 with web-3")
    out = proc.stdout + proc.stderr
    assert out.index("gate web-3") < out.index("put back web-3"), out
    v3 = farm.releases["v3"]
    assert {farm.live(w) for w in WEB + ["web-3"]} == {v3}
    assert "# web-3" in farm.upstream() and farm.through_lb(9) == {v3}

    farm.write(WEB)
    proc, _ = under_load(farm, lambda: farm.deploy("v4"), "deploy v4 without web-3")
    assert "# web-3" not in farm.upstream(), farm.upstream()
    assert farm.through_lb(9) == {farm.releases["v4"]}
    assert "upstream: web-1, web-2 (" in proc.stderr + proc.stdout      # web-3 drained first


def test_provision_drains_a_server_no_longer_in_the_inventory(farm):
    gone = "server 10.254.254.254:80 down;   # web-9\n"
    ssh_script(farm.box, f"printf '%s' '{gone}' >> /etc/nginx/dropship/lb-upstream.conf && nginx -t -q", host=LB)
    report, proc = farm.box.provision_json()
    assert report["ok"], proc.stdout[-3000:] + proc.stderr[-5000:]
    assert report["hosts"][LB]["changed"] >= 1
    upstream = farm.upstream()
    assert "10.254.254.254" not in upstream and upstream.count("max_fails=1") == 2, upstream
    assert farm.through_lb() == {farm.releases["v4"]}
