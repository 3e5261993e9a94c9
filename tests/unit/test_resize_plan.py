"""The pure parts of droplet.resize: settings derived from a size, the plan (preflight through a
provider double that keeps the interface's rules), the prober's downtime, where it probes."""
import textwrap
from pathlib import Path

import pytest

from provision import sizing
from provision.errors import ProviderError
from provision.inventory import load_inventory
from provision.prober import downtime
from provision.providers.base import Droplet, SizeInfo
from provision.providers.sizes import BASIC_SIZES, table_size
from provision.workflows.resize import ResizeOptions, plan, plan_lines, probe_target, size_settings

INVENTORY = """\
environments:
  prod_eu:
    provider: digitalocean
    token: {env: DO_TOKEN_FOR_TESTS}
    droplets:
      - name: api
        size: s-4vcpu-8gb
        region: fra1
        image: ubuntu-24-04-x64
        roles: [base, postgres, nginx, docker, app, airflow]
      - name: jobs-box
        size: s-1vcpu-1gb
        region: fra1
        image: ubuntu-24-04-x64
        roles: [base, docker]
    apps:
      - name: shop
        server_name: shop.example.org
        health: {path: /up}
      - name: blog
        path: /blog
        workers: 3
    airflow:
      version: 3.3.2
      image: apache/airflow:3.3.2
      dags: dags
"""


@pytest.fixture
def env(tmp_path: Path):
    (tmp_path / "dags").mkdir()
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(INVENTORY))
    return load_inventory(path)["prod_eu"]


class Provider:
    """The provider interface on a table: check_resize refuses as the real ones do."""

    def __init__(self, sizes: dict[str, str]):
        self.droplets = {n: Droplet(n, n, "active", "203.0.113.7", size=s, vcpus=BASIC_SIZES[s][0],
                                    memory_mb=BASIC_SIZES[s][1], disk_gb=BASIC_SIZES[s][2], ports={80: 80})
                         for n, s in sizes.items()}
        self.checked = []

    def get(self, name):
        return self.droplets.get(name)

    def check_resize(self, name, size, disk=False) -> SizeInfo:
        self.checked.append((name, size, disk))
        try:
            target = table_size(size)
        except ValueError as e:
            raise ProviderError(f"{name}: {e}") from None
        if target.disk_gb < self.droplets[name].disk_gb:
            raise ProviderError(f"{name}: {size} has a smaller disk")
        return target


def test_settings_follow_cpus_and_memory():
    assert sizing.gunicorn_workers(1, 1024) == 2
    assert sizing.gunicorn_workers(2, 4096) == 5
    assert sizing.gunicorn_workers(4, 8192, apps=2) == 8          # memory caps 2 × 4 + 1
    assert sizing.airflow_parallelism(2, 4096) == 8
    assert sizing.airflow_parallelism(4, 8192) == 16
    assert sizing.airflow_parallelism(1, 512) == 2
    small, big = sizing.derived(1, 1024, {"a": None}, True), sizing.derived(4, 8192, {"a": None}, True)
    assert sizing.changes(small, big) == [
        ("postgres shared_buffers", "256MB", "2048MB"), ("postgres effective_cache_size", "768MB", "6144MB"),
        ("postgres maintenance_work_mem", "64MB", "512MB"), ("postgres work_mem", "4MB", "20MB"),
        ("gunicorn workers (a)", "2", "9"), ("airflow parallelism", "2", "16")]
    assert sizing.derived(2, 2048, {}, False, postgres=False) == {}


def test_plan_is_the_inventory_against_reality(env):
    provider = Provider({"api": "s-2vcpu-4gb", "jobs-box": "s-1vcpu-1gb"})
    plans, same = plan(env, ResizeOptions(), provider)
    assert same == ["jobs-box"] and provider.checked == [("api", "s-4vcpu-8gb", False)]
    [p] = plans
    assert (p.droplet.size, p.target.slug) == ("s-2vcpu-4gb", "s-4vcpu-8gb")
    settings = {k: (a, b) for k, a, b in p.settings}
    assert settings["postgres shared_buffers"] == ("1024MB", "2048MB")
    assert settings["gunicorn workers (shop)"] == ("4", "8")
    assert "gunicorn workers (blog)" not in settings           # fixed in the inventory
    assert settings["airflow parallelism"] == ("8", "16")
    lines = plan_lines(env, p, ResizeOptions())
    assert lines[0] == "s-2vcpu-4gb -> s-4vcpu-8gb (4 vCPU, 8192 MB, 160 GB disk)"
    assert "postgres shared_buffers: 1024MB -> 2048MB" in lines and lines[-1].startswith("expected downtime: about")
    assert p.to_dict()["settings"][0] == {"setting": "postgres shared_buffers", "old": "1024MB", "new": "2048MB"}


def test_size_override_and_refusals_stop_before_anything(env):
    provider = Provider({"api": "s-4vcpu-8gb", "jobs-box": "s-1vcpu-1gb"})
    plans, same = plan(env, ResizeOptions(size="s-1vcpu-2gb", hosts=("jobs-box",)), provider)
    assert [p.target.slug for p in plans] == ["s-1vcpu-2gb"] and same == []
    with pytest.raises(ProviderError, match="smaller disk"):
        plan(env, ResizeOptions(size="s-2vcpu-4gb"), provider)      # api cannot shrink its 160 GB disk
    with pytest.raises(ProviderError, match="is not offered"):
        plan(env, ResizeOptions(size="s-3vcpu-7gb; reboot"), provider)


def test_size_settings_only_for_the_hosts_roles(env):
    jobs = env.host("jobs-box")
    assert size_settings(env, jobs, 1, 1024) == {}       # docker: nothing sized (PostgreSQL is api's)
    api = env.host("api")
    assert set(size_settings(env, api, 1, 1024)) >= {"postgres shared_buffers", "postgres effective_cache_size",
                                                     "postgres maintenance_work_mem", "postgres work_mem"}


def test_downtime_is_first_failure_to_first_good_answer_after_the_last_failure():
    assert downtime([(0, True), (1, True)]).seconds == 0.0
    d = downtime([(0, True), (1, False), (2, True), (3, False), (4, False), (6.5, True), (7, True)])
    assert (d.seconds, d.failed, d.total) == (5.5, 3, 7)
    assert "5.5 s" in d.describe()
    still = downtime([(0, True), (1, False)])
    assert still.seconds is None and still.describe().startswith("still down")


def test_the_prober_asks_the_first_app_through_nginx(env):
    d = Droplet("api", "1", "active", "203.0.113.7", ports={80: 8080})
    assert probe_target(env, env.host("api"), d) == ("http://203.0.113.7:8080/up", "shop.example.org")
    assert probe_target(env, env.host("jobs-box"), d) is None


def test_a_resize_that_did_not_end_is_finished_by_the_next_run(env):
    from provision.state import mark_resizing

    provider = Provider({"api": "s-4vcpu-8gb", "jobs-box": "s-1vcpu-1gb"})
    assert plan(env, ResizeOptions(), provider)[0] == []            # at size, nothing pending
    mark_resizing(env, "api", "s-4vcpu-8gb")                          # a killed client got this far
    [p], _ = plan(env, ResizeOptions(), provider)
    assert p.resume and p.target.slug == "s-4vcpu-8gb"
    assert plan_lines(env, p, ResizeOptions())[1].startswith("steps: finish a resize that did not end")
    mark_resizing(env, "api", None)
    provider.droplets["jobs-box"].status = "off"                      # left off after its shutdown
    [p], _ = plan(env, ResizeOptions(), provider)
    assert (p.name, p.resume) == ("jobs-box", True)


WEB_TIER = """\
environments:
  shop_live:
    provider: digitalocean
    token: {env: DO_TOKEN_FOR_TESTS}
    droplets:
      - {name: front, size: s-1vcpu-1gb, region: ams3, image: ubuntu-24-04-x64, roles: [base, nginx, lb]}
      - {name: app-a, size: s-1vcpu-2gb, region: ams3, image: ubuntu-24-04-x64, roles: [base, nginx, app]}
      - {name: app-b, size: s-1vcpu-2gb, region: ams3, image: ubuntu-24-04-x64, roles: [base, nginx, app]}
      - {name: pg, size: s-2vcpu-4gb, region: ams3, image: ubuntu-24-04-x64, roles: [base, postgres]}
    apps:
      - name: store
        server_name: store.example.net www.store.example.net
        health: {path: /-/alive}
"""


def test_a_web_host_behind_the_lb_is_drained_and_probed_through_the_lb(tmp_path: Path):
    from provision.state import save_droplets
    from provision.workflows.resize import behind_lb

    path = tmp_path / "inventory.yaml"
    path.write_text(WEB_TIER)
    env = load_inventory(path)["shop_live"]
    assert [behind_lb(env, env.host(n)) for n in ("front", "app-a", "app-b", "pg")] == [False, True, True, False]
    provider = Provider({"front": "s-1vcpu-1gb", "app-a": "s-1vcpu-2gb", "app-b": "s-1vcpu-2gb",
                         "pg": "s-2vcpu-4gb"})
    [p], _ = plan(env, ResizeOptions(size="s-2vcpu-4gb", hosts=("app-a",)), provider)
    lines = plan_lines(env, p, ResizeOptions())
    assert lines[1] == ("steps: snapshot, drain from front, stop apps and Airflow, shutdown, resize, power on, "
                        "retune, health gates, gate from front, put back")
    assert lines[-1] == "expected downtime: none through front (the other web hosts serve)"
    lb = Droplet("front", "9", "active", "198.51.100.4", ports={80: 80})
    save_droplets(env, {"front": lb})
    a = Droplet("app-a", "10", "active", "198.51.100.5", ports={80: 80})
    assert probe_target(env, env.host("app-a"), a, via_lb=True) == \
        ("http://198.51.100.4:80/-/alive", "store.example.net")
    assert probe_target(env, env.host("app-a"), a) == ("http://198.51.100.5:80/-/alive", "store.example.net")
    [pg], _ = plan(env, ResizeOptions(size="s-4vcpu-8gb", hosts=("pg",)), provider)
    assert plan_lines(env, pg, ResizeOptions())[-1].startswith("expected downtime: about")


def test_the_prober_reads_good_only_from_settled_answers():
    import time

    from provision.prober import Prober

    p = Prober("http://198.51.100.4/-/alive", timeout=2.0)
    now = time.monotonic()
    p.samples = [(now - 3.5, True), (now - 2.5, True), (now - 0.1, False)]     # the last has not had its answer
    assert p.good_since(2.0)
    p.samples.append((now - 3.0, False))
    assert not p.good_since(2.0)
    assert not Prober("http://198.51.100.4/").good_since(2.0)                    # no sample: nothing seen yet
