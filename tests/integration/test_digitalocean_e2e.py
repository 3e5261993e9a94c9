"""The DigitalOcean provider end to end: the CLI drives the real DigitalOceanProvider (pydo)
against the fake DigitalOcean API, whose droplets are real local droplets (systemd containers
with sshd) answering SSH on port 22 of their own loopback "public IPv4" (127.0.0.N).

One droplet of environment ``staging`` is created and provisioned (role base) once per module;
the tests follow its life in order: create, provision (first contact pins the host key),
a changed host key, list, resize, a bad token, destroy.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field

import pytest

from provision.keys import public_key
from provision.providers.docker_engine import docker
from provision.state import first_contact, load_droplets
from provision.transport.hostkeys import KnownHosts
from tests.fakes.do_api import fake_do_api
from tests.fakes.local_backend import LocalDropletBackend
from tests.support import DEFAULTS, INVOKE, Sandbox, run_name
from tests.support import one_error_line, random_host_key

pytestmark = pytest.mark.integration

ENV = "staging"
HOST = "web-1"
SIZE, NEW_SIZE = "s-1vcpu-2gb", "s-2vcpu-4gb"
GIB = 1024 ** 3


@dataclass
class DoSandbox(Sandbox):
    """A Sandbox whose CLI runs see the DigitalOcean token and the fake API's URL."""

    extra_env: dict = field(default_factory=dict)

    def invoke(self, *args: str, check: bool = False, timeout: float = 900,
               env: dict | None = None) -> subprocess.CompletedProcess:
        variables = {**os.environ, "DROPSHIP_INVENTORY": str(self.inventory), **self.extra_env, **(env or {})}
        proc = subprocess.run(INVOKE + list(args), cwd=self.root, env=variables, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


@dataclass
class Staging:
    box: DoSandbox
    api: object                 # FakeDigitalOcean
    backend: LocalDropletBackend
    token: str
    create: subprocess.CompletedProcess
    after_create: dict          # state right after droplet.create: droplets, first_contact, pinned keys
    first: dict                 # first provision's JSON report
    second: dict                # second provision's JSON report

    @property
    def known(self) -> KnownHosts:
        return KnownHosts(self.box.environment().workspace.known_hosts_path)

    def droplet(self):
        return load_droplets(self.box.environment())[HOST]






def do_environment(size: str, roles: list[str]) -> dict:
    """The inventory's ``environments:`` of one DigitalOcean droplet, HOST in fra1, token from the environment."""
    return {ENV: {"provider": "digitalocean", "token": {"env": "DIGITALOCEAN_TOKEN"},
                  "droplets": [{"name": HOST, "region": "fra1", "image": "ubuntu-24-04-x64", "size": size,
                                "roles": roles}]}}


def inspect(container: str) -> dict | None:
    out = docker("inspect", "--type", "container", container, check=False)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


@pytest.fixture(scope="module")
def staging(tmp_path_factory):
    root = tmp_path_factory.mktemp("do-e2e")
    token = f"dop_v1_{secrets.token_hex(32)}"
    backend = LocalDropletBackend(run_name(), root / "backend")
    try:
        with fake_do_api(token=token, backend=backend) as api:
            box = DoSandbox(root, ENV, extra_env={"DIGITALOCEAN_TOKEN": token, "DIGITALOCEAN_API_URL": api.url})
            box.write(do_environment(SIZE, ["base"]), DEFAULTS)
            create = box.invoke("droplet.create", "--env", ENV)
            assert create.returncode == 0, create.stdout + create.stderr
            env = box.environment()
            state = load_droplets(env)
            after_create = {
                "droplets": state, "first_contact": first_contact(env),
                "pinned": {n: KnownHosts(env.workspace.known_hosts_path).lookup(d.address, d.ssh_port)
                           for n, d in state.items()},
            }
            first, proc1 = box.provision_json()
            assert first["ok"], proc1.stdout + proc1.stderr
            second, proc2 = box.provision_json()
            assert second["ok"], proc2.stdout + proc2.stderr
            yield Staging(box, api, backend, token, create, after_create, first, second)
    finally:
        backend.destroy_all()


def test_create_registers_the_key_and_tags_the_droplet(staging):
    api, backend = staging.api, staging.backend
    keys = api.calls("POST", r"^/v2/account/keys$")
    assert len(keys) == 1 and keys[0].json["name"] == f"dropship-{ENV}"
    assert keys[0].json["public_key"] == public_key(staging.box.environment())
    creates = api.calls("POST", r"^/v2/droplets$")
    assert len(creates) == 1
    body = creates[0].json
    assert (body["name"], body["region"], body["size"], body["image"]) == (HOST, "fra1", SIZE, "ubuntu-24-04-x64")
    assert body["tags"][:2] == ["dropship", f"dropship-env-{ENV}"]
    assert body["ssh_keys"] == [next(iter(api.ssh_keys))]

    d = staging.after_create["droplets"][HOST]
    assert re.fullmatch(r"127\.0\.0\.\d+", d.address) and d.address != "127.0.0.1"
    assert d.address == backend.address(HOST)
    assert (d.ssh_port, d.status, d.size, d.region) == (22, "active", SIZE, "fra1")
    assert HOST in staging.create.stdout and f"{d.address}:22" in staging.create.stdout
    # DigitalOcean gives no host keys: nothing pinned yet, the first SSH contact may pin one
    assert staging.after_create["first_contact"] == {HOST}
    assert staging.after_create["pinned"][HOST] == {}
    info = inspect(backend.container(HOST))
    assert info["State"]["Running"]
    assert info["HostConfig"]["Memory"] == 2 * GIB
    bindings = info["HostConfig"]["PortBindings"]
    assert {g: (b[0]["HostIp"], b[0]["HostPort"]) for g, b in bindings.items()} == {
        "22/tcp": (d.address, "22"), "80/tcp": (d.address, "80"), "443/tcp": (d.address, "443")}


def test_first_provision_pins_the_host_key_and_converges(staging):
    first, second = staging.first, staging.second
    assert first["hosts"][HOST]["failed"] == 0 and first["hosts"][HOST]["changed"] > 0
    assert "base" in {c["role"] for c in first["changes"]} <= {"base", "packages", "cleanup"}
    # a new host gets the record of what Dropship manages there, and nothing is removed
    records = [c["summary"] for c in first["changes"] if c["role"] == "cleanup"]
    assert len(records) == 1 and re.fullmatch(r"record what Dropship manages here \(\d+ items; nothing removed\)",
                                              records[0]), records
    assert second["hosts"][HOST]["changed"] == 0 and second["changes"] == []
    env = staging.box.environment()
    assert first_contact(env) == set()
    d = staging.droplet()
    pinned = staging.known.lookup(d.address, 22)
    assert pinned
    # the key pinned over SSH is the droplet's own, as read over a channel that is not SSH
    real = docker("exec", staging.backend.container(HOST), "sh", "-c",
                  "cat /etc/ssh/ssh_host_*_key.pub").stdout
    real_blobs = {ln.split()[1] for ln in real.splitlines() if ln.strip()}
    assert {k.get_base64() for k in pinned.values()} <= real_blobs
    text = staging.known.path.read_text()
    assert re.search(rf"^{re.escape(d.address)} ", text, re.M)       # port 22: plain address entry


def test_changed_host_key_is_refused(staging):
    d = staging.droplet()
    known = staging.known
    original = list(known.lookup(d.address, d.ssh_port).values())
    known.pin(d.address, d.ssh_port, [random_host_key()])
    try:
        line = one_error_line(staging.box.invoke("provision", "--env", ENV))
        assert f"{HOST}: connect: host key changed" in line and "fix:" in line
    finally:
        known.pin(d.address, d.ssh_port, original)
    report, proc = staging.box.provision_json()
    assert report["ok"] and report["hosts"][HOST]["changed"] == 0, proc.stderr


def test_list_shows_the_droplet_active(staging):
    proc = staging.box.invoke("droplet.list", "--env", ENV, "--json", check=True)
    listed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(x["name"], x["status"], x["address"], x["ssh_port"], x["size"], x["region"]) for x in listed] == [
        (HOST, "active", staging.backend.address(HOST), 22, SIZE, "fra1")]
    assert set(listed[0]["tags"]) >= {"dropship", f"dropship-env-{ENV}"}


def test_resize_powers_off_resizes_and_powers_on(staging):
    api, backend = staging.api, staging.backend
    before = len(api.calls("POST", r"/actions$"))
    proc = staging.box.invoke("droplet.resize", "--env", ENV, "--size", NEW_SIZE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actions = [r.json for r in api.calls("POST", r"^/v2/droplets/\d+/actions$")][before:]
    assert [a["type"] for a in actions] == ["snapshot", "shutdown", "resize", "power_on"]
    assert actions[2] == {"type": "resize", "size": NEW_SIZE, "disk": False}
    info = inspect(backend.container(HOST))
    assert info["State"]["Running"]
    assert info["HostConfig"]["Memory"] == 4 * GIB
    assert info["HostConfig"]["MemorySwap"] == 4 * GIB
    ncpu = int(docker("info", "--format", "{{.NCPU}}").stdout)
    assert info["HostConfig"]["NanoCpus"] == min(2, ncpu) * 10 ** 9
    d = staging.droplet()
    assert (d.size, d.vcpus, d.memory_mb, d.status) == (NEW_SIZE, 2, 4096, "active")
    assert d.address == backend.address(HOST) and d.ssh_port == 22
    # powered back on, same host key: provisioning still reaches it and finds nothing to do
    report, proc = staging.box.provision_json()
    assert report["ok"] and report["hosts"][HOST]["changed"] == 0, proc.stderr


def test_bad_token_ends_in_one_line_without_the_token(staging):
    proc = staging.box.invoke("droplet.list", "--env", ENV, env={"DIGITALOCEAN_TOKEN": "wrong"})
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "401" in line and "token" in line and "fix:" in line
    assert "wrong" not in proc.stdout + proc.stderr
    assert staging.token not in proc.stdout + proc.stderr
    assert staging.api.calls("GET", r"^/v2/droplets")          # it did ask, and was refused


def test_destroy_removes_the_droplet(staging):
    d = staging.droplet()
    container = staging.backend.container(HOST)
    proc = staging.box.invoke("droplet.destroy", "--env", ENV, "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert staging.api.calls("DELETE", r"^/v2/droplets/\d+$")
    assert staging.api.droplets == {}
    assert inspect(container) is None
    volumes = docker("volume", "ls", "-q", "--filter", f"name={container}").stdout.split()
    assert volumes == []
    assert load_droplets(staging.box.environment()) == {}
    assert staging.known.lookup(d.address, 22) == {}
    listed = staging.box.invoke("droplet.list", "--env", ENV, "--json", check=True)
    assert json.loads(listed.stdout.strip().splitlines()[-1]) == []
