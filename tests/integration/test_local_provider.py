"""LocalProvider against the real Docker engine: boot, SSH with pinned host key, size, power, destroy.

One droplet ("web") is shared by the tests in order; the base image is built once and reused.
"""
import base64
import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
import subprocess
from io import StringIO

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from provision.providers.base import DropletSpec
from provision.errors import ProviderError
from provision.providers import inotify
from provision.providers.docker_engine import docker, ensure_engine
from provision.providers.local import (
    LocalProvider, container_name, network_name, reap, volume_name,
)
from provision.workspace import Workspace
from tests.support import _alive

pytestmark = pytest.mark.integration

TEST_LABEL = "dropship.test"
PID_LABEL = "dropship.test.pid"
WEB = DropletSpec("web", "s-1vcpu-1gb", "local", "debian-13-x64", ("app", "edge"))

# Memory limit of the calling process's cgroup (min over its ancestors), cgroup v1 or v2.
MEM_LIMIT_PY = r"""
import os
limits = []
for line in open('/proc/self/cgroup').read().splitlines():
    hid, ctrls, path = line.split(':', 2)
    v1 = 'memory' in ctrls.split(',')
    if not (v1 or (hid == '0' and ctrls == '')):
        continue
    base, name = ('/sys/fs/cgroup/memory', 'memory.limit_in_bytes') if v1 \
        else ('/sys/fs/cgroup', 'memory.max')
    while True:
        f = base + path.rstrip('/') + '/' + name
        if os.path.exists(f):
            v = open(f).read().strip()
            limits.append(float('inf') if v == 'max' else int(v))
        if path in ('', '/'):
            break
        path = os.path.dirname(path.rstrip('/'))
    if v1:
        break
print(min(limits))
"""


def _reap_dead_runs():
    """Remove what killed earlier runs left behind (never containers of live runs)."""
    out = docker("ps", "-a", "--filter", f"label={TEST_LABEL}=local-provider",
                 "--format", f'{{{{.Label "{PID_LABEL}"}}}}').stdout.split()
    for pid in set(out):
        if pid.isdigit() and not _alive(int(pid)):
            reap({TEST_LABEL: "local-provider", PID_LABEL: pid})


def _ed25519_keypair():
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key(StringIO(pem)), f"{pub} dropship-test"


def _ca_cert(path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dropship Test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def engine():
    if not shutil.which("docker"):
        pytest.skip("docker is not installed")
    ensure_engine()
    _reap_dead_runs()


@pytest.fixture(scope="module")
def keypair():
    return _ed25519_keypair()


@pytest.fixture(scope="module")
def provider(engine, tmp_path_factory):
    env = f"t{os.getpid()}x{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("ws")
    ca = _ca_cert(tmp / "test root.crt")
    prov = LocalProvider(env, Workspace(tmp), ca_certificates=[ca],
                         labels={TEST_LABEL: "local-provider", PID_LABEL: str(os.getpid())})
    prov.test_ca = ca
    try:
        yield prov
    finally:
        reap({"dropship.env": env})


@pytest.fixture(scope="module")
def web(provider, keypair):
    try:
        yield provider.create(WEB, keypair[1])
    finally:
        provider.destroy(WEB.name)


def _ssh(droplet, pkey, command: str) -> str:
    """Run ``command`` as root over SSH, trusting only the droplet's reported host key."""
    client = paramiko.SSHClient()
    kind, blob = droplet.host_keys[0].split()
    host = f"[{droplet.address}]:{droplet.ssh_port}"
    client.get_host_keys().add(host, kind, paramiko.PKey.from_type_string(kind,
                                                                          base64.b64decode(blob)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(droplet.address, droplet.ssh_port, username="root", pkey=pkey,
                   look_for_keys=False, allow_agent=False, timeout=10)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=30)
        out = stdout.read().decode()
        assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
        return out
    finally:
        client.close()


def _memory_limit(droplet, pkey) -> int:
    return int(float(_ssh(droplet, pkey, f"python3 -c \"{MEM_LIMIT_PY}\"").strip()))


def _inspect(name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]


def test_create_boots_systemd(provider, web):
    assert web.status == "active" and web.name == "web"
    assert web.address == "127.0.0.1" and web.ssh_port == web.ports[22]
    assert sorted(web.ports) == [22, 80, 443] and len(set(web.ports.values())) == 3
    assert (web.size, web.vcpus, web.memory_mb, web.tags) == ("s-1vcpu-1gb", 1, 1024, ("app", "edge"))
    info = _inspect(container_name(provider.env, "web"))
    assert info["State"]["Running"] and not info["HostConfig"]["Privileged"]
    out = docker("exec", container_name(provider.env, "web"), "systemctl", "is-system-running",
                 check=False).stdout.strip()
    assert out == "running", provider.boot_debug


def test_ssh_with_pinned_host_key(web, keypair):
    assert web.host_keys and web.host_keys[0].startswith("ssh-ed25519 ")
    assert len(web.host_keys[0].split()) == 2
    assert _ssh(web, keypair[0], "id -un; hostname").split() == ["root", "web"]
    perms = _ssh(web, keypair[0], "stat -c %a /root/.ssh /root/.ssh/authorized_keys").split()
    assert perms == ["700", "600"]


def test_wrong_host_key_is_rejected(web, keypair):
    other = _ed25519_keypair()[1].split()[:2]
    forged = dataclasses.replace(web, host_keys=[" ".join(other)])
    with pytest.raises(paramiko.SSHException):
        _ssh(forged, keypair[0], "true")


def test_ca_certificate_installed(provider, web, keypair):
    pem_body = provider.test_ca.read_text().splitlines()[1]
    bundle = _ssh(web, keypair[0], "cat /etc/ssl/certs/ca-certificates.crt")
    assert pem_body in bundle


def test_create_is_idempotent(provider, web, keypair):
    again = provider.create(WEB, keypair[1])
    assert (again.id, again.ports, again.host_keys) == (web.id, web.ports, web.host_keys)
    assert _ssh(web, keypair[0], "grep -c dropship-test /root/.ssh/authorized_keys").strip() == "1"


def _started(provider, name: str) -> str:
    return docker("inspect", "-f", "{{.State.StartedAt}}", container_name(provider.env, name)).stdout.strip()


def test_memory_limit_and_resize(provider, web, keypair):
    assert _memory_limit(web, keypair[0]) == 1024 << 20
    started = _started(provider, "web")
    resized = provider.resize("web", "s-1vcpu-2gb")
    assert (resized.size, resized.memory_mb, resized.status) == ("s-1vcpu-2gb", 2048, "active")
    assert _started(provider, "web") != started                 # a real power cycle, not a live update
    assert _ssh(resized, keypair[0], "systemctl is-system-running").strip() == "running"
    assert _memory_limit(web, keypair[0]) == 2048 << 20
    assert provider.get("web").size == "s-1vcpu-2gb"


def test_list(provider, web):
    listed = provider.list()
    assert [d.name for d in listed] == ["web"]
    assert listed[0].id == web.id and listed[0].ports == web.ports
    assert provider.get("absent") is None


def test_power_off_on_keeps_ports_and_host_key(provider, web, keypair):
    off = provider.power("web", on=False)
    assert off.status == "off" and provider.get("web").status == "off"
    on = provider.power("web", on=True)
    assert on.status == "active" and on.ports == web.ports and on.host_keys == web.host_keys
    assert _ssh(on, keypair[0], "systemctl is-system-running").strip() == "running"
    assert _memory_limit(on, keypair[0]) == 2048 << 20


def test_snapshot(provider, web):
    image_id = provider.snapshot("web", "before-upgrade")
    try:
        assert image_id.startswith("sha256:")
        assert docker("image", "inspect", image_id, check=False).returncode == 0
    finally:
        docker("rmi", "-f", image_id, check=False)


def test_peers_resolve_destroy_and_recreate(provider, web, keypair):
    db_spec = DropletSpec("db", "s-1vcpu-512mb", "local", "debian-13-x64")
    db = provider.create(db_spec, keypair[1])
    try:
        assert db.host_keys != web.host_keys  # each container made its own keys
        assert _ssh(web, keypair[0], "getent hosts db").split()[1] == "db"
        provider.destroy("db")
        assert provider.get("db") is None
        assert docker("volume", "inspect", volume_name(provider.env, "db"),
                      check=False).returncode != 0
        provider.destroy("db")  # absent is fine
        again = provider.create(db_spec, keypair[1])
        assert again.status == "active" and again.id != db.id
        assert _ssh(again, keypair[0], "hostname").strip() == "db"
    finally:
        provider.destroy("db")


def test_used_up_inotify_instances_are_named_and_a_rerun_creates_the_droplet(provider, keypair):
    """With the machine's inotify instances used up, a new droplet's systemd exits at once: the error
    names the cause and the fix; once the limit is raised again, the same create finishes."""
    spec = DropletSpec("crowded", "s-1vcpu-512mb", "local", "debian-13-x64")
    allowed = inotify.limit()
    in_use = allowed - inotify.headroom(allowed)
    try:
        inotify.LIMIT_FILE.write_text(f"{in_use}\n")
        with pytest.raises(ProviderError) as failed:
            provider.create(spec, keypair[1])
    finally:
        inotify.LIMIT_FILE.write_text(f"{allowed}\n")
    assert re.fullmatch(
        r"crowded: container stopped while booting: this machine's inotify instances are used up \(room for "
        rf"[0-9]+ more; fs\.inotify\.max_user_instances={in_use}, and every local droplet's systemd takes "
        r"several\) \(fix: raise the limit: `sysctl -w fs\.inotify\.max_user_instances=1024` \(scripts/setup\.sh "
        r"does\), then run again\)", str(failed.value)), str(failed.value)
    try:
        assert provider.create(spec, keypair[1]).status == "active"
    finally:
        provider.destroy("crowded")


def test_destroy_removes_container_and_volume(provider, keypair):
    spec = DropletSpec("tmp", "s-1vcpu-512mb", "local", "debian-13-x64")
    provider.create(spec, keypair[1])
    provider.destroy("tmp")
    cname = container_name(provider.env, "tmp")
    assert docker("inspect", cname, check=False).returncode != 0
    assert docker("volume", "inspect", volume_name(provider.env, "tmp"), check=False).returncode != 0
    assert provider.get("tmp") is None


def test_network_removed_with_last_droplet(provider, web):
    provider.destroy("web")
    assert provider.list() == []
    assert docker("network", "inspect", network_name(provider.env), check=False).returncode != 0
    result = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                             f"label=dropship.env={provider.env}"], capture_output=True, text=True)
    assert result.stdout.split() == []
