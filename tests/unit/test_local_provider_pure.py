"""Pure parts of the local (Docker) provider: names, run arguments, labels -> Droplet, image recipe."""
import io
import subprocess
import tarfile

import pytest

from provision.errors import DropshipError, ProviderError
from provision.providers import docker_engine, local_image
from provision.providers.base import DropletSpec
from provision.providers.local import (
    LocalProvider, check_name, choose_ports, connect_address, container_name, cpu_limit, current_size,
    droplet_from_inspect, droplet_labels, free_ports, host_key_line, label_filters, network_name, parse_tags, run_args,
    status_of, volume_labels, volume_name,
)

SPEC = DropletSpec("web", "s-2vcpu-4gb", "nyc3", "debian-13-x64", ("app", "edge"))
PORTS = {22: 40022, 80: 40080, 443: 40443}


def _args(**kw):
    labels = droplet_labels("prod", SPEC, PORTS, "127.0.0.1", "dropship/droplet:trixie-abc")
    params = dict(env="prod", spec=SPEC, image="img:1", ports=PORTS, bind_address="127.0.0.1",
                  labels=labels, host_cpus=8)
    params.update(kw)
    return run_args(**params)


def _flag_values(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_names():
    assert container_name("prod", "web") == "dropship-prod-web"
    assert volume_name("prod", "web") == "dropship-prod-web-docker"
    assert network_name("prod") == "dropship-prod"


@pytest.mark.parametrize("bad", ["", "Web", "web_1", "-web", "a b", "x/y"])
def test_check_name_rejects(bad):
    with pytest.raises(ProviderError):
        check_name("droplet name", bad)


def test_check_name_accepts():
    assert check_name("droplet name", "web-1") == "web-1"


def test_connect_address():
    assert connect_address("0.0.0.0") == "127.0.0.1"
    assert connect_address("::") == "::1"
    assert connect_address("127.0.0.2") == "127.0.0.2"


def test_cpu_limit_caps_at_engine_cpus():
    assert cpu_limit(4, 2) == "2"
    assert cpu_limit(1, 8) == "1"
    assert cpu_limit(0, 0) == "1"


@pytest.mark.parametrize("state,status", [
    ("running", "active"), ("exited", "off"), ("created", "off"), ("restarting", "new"),
])
def test_status_of(state, status):
    assert status_of(state) == status


def test_run_args_identity_network_and_labels():
    args = _args()
    assert args[:2] == ["run", "-d"]
    assert _flag_values(args, "--name") == ["dropship-prod-web"]
    assert _flag_values(args, "--hostname") == ["web"]
    assert _flag_values(args, "--network") == ["dropship-prod"]
    assert _flag_values(args, "--network-alias") == ["web"]
    labels = dict(v.split("=", 1) for v in _flag_values(args, "--label"))
    assert labels["dropship.env"] == "prod" and labels["dropship.name"] == "web"
    assert labels["dropship.tags"] == "app,edge"
    assert labels["dropship.port.22"] == "40022"
    assert args[-1] == "img:1"


def test_run_args_container_flags():
    args = _args()
    assert "--privileged" not in args and "--restart" not in args
    assert _flag_values(args, "--cap-add") == ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"]
    assert _flag_values(args, "--security-opt") == ["seccomp=unconfined", "apparmor=unconfined"]
    assert _flag_values(args, "--tmpfs") == ["/run", "/run/lock"]
    assert _flag_values(args, "-v") == ["/sys/fs/cgroup:/sys/fs/cgroup:ro",
                                        "dropship-prod-web-docker:/var/lib/docker"]


def test_run_args_size_and_ports():
    args = _args()
    assert _flag_values(args, "--memory") == ["4096m"]
    assert _flag_values(args, "--memory-swap") == ["4096m"]
    assert _flag_values(args, "--cpus") == ["2"]
    assert _flag_values(args, "-p") == ["127.0.0.1:40022:22", "127.0.0.1:40080:80",
                                        "127.0.0.1:40443:443"]
    assert _flag_values(_args(host_cpus=1), "--cpus") == ["1"]


def test_run_args_cgroup_v2_and_ipv6():
    args = _args(cgroup_version="2", bind_address="::1")
    assert _flag_values(args, "--cgroupns") == ["host"]
    assert "/sys/fs/cgroup:/sys/fs/cgroup:rw" in args
    assert "[::1]:40022:22" in args


def test_run_args_rejects_bad_size():
    with pytest.raises(ValueError):
        _args(spec=DropletSpec("web", "large", "nyc3", "x"))


def test_labels_include_extra_but_not_overridden():
    labels = droplet_labels("prod", SPEC, PORTS, "127.0.0.1", "img",
                            {"dropship.test": "1", "dropship.env": "evil"})
    assert labels["dropship.test"] == "1" and labels["dropship.env"] == "prod"


def test_parse_tags():
    assert parse_tags("a,b") == ("a", "b")
    assert parse_tags("") == ()


@pytest.mark.parametrize("label,recorded,mem,cpus,want", [
    ("s-2vcpu-4gb", None, 4096 << 20, 2e9, "s-2vcpu-4gb"),
    ("s-2vcpu-4gb", "s-1vcpu-2gb", 2048 << 20, 1e9, "s-1vcpu-2gb"),
    ("s-2vcpu-4gb", "s-1vcpu-2gb", 4096 << 20, 2e9, "s-2vcpu-4gb"),  # stale record
    ("s-2vcpu-4gb", None, 512 << 20, 1e9, "s-1vcpu-512mb"),  # changed behind our back
    ("s-2vcpu-4gb", None, 0, 0, "s-2vcpu-4gb"),
])
def test_current_size(label, recorded, mem, cpus, want):
    assert current_size(label, recorded, mem, int(cpus)) == want


def _inspect_obj(status="running", memory=4096 << 20):
    labels = droplet_labels("prod", SPEC, PORTS, "0.0.0.0", "img", {"x": "y"})
    return {"Id": "0123456789abcdef" * 4, "Name": "/dropship-prod-web",
            "State": {"Status": status}, "Config": {"Labels": labels},
            "HostConfig": {"Memory": memory, "NanoCpus": 2_000_000_000}}


def test_droplet_from_inspect():
    d = droplet_from_inspect(_inspect_obj())
    assert (d.name, d.id, d.status) == ("web", "0123456789ab", "active")
    assert (d.address, d.ssh_port) == ("127.0.0.1", 40022)
    assert d.ports == PORTS and d.port(80) == 40080
    assert (d.size, d.vcpus, d.memory_mb) == ("s-2vcpu-4gb", 2, 4096)
    assert (d.region, d.image, d.tags) == ("nyc3", "debian-13-x64", ("app", "edge"))


def test_droplet_from_inspect_off_and_resized():
    d = droplet_from_inspect(_inspect_obj("exited", 8192 << 20), recorded_size="s-4vcpu-8gb")
    assert d.status == "off" and (d.size, d.vcpus, d.memory_mb) == ("s-4vcpu-8gb", 4, 8192)


def test_host_key_line_drops_comment():
    assert host_key_line("ssh-ed25519 AAAAC3x root@web\n") == "ssh-ed25519 AAAAC3x"


def test_label_filters():
    assert label_filters({"a": "1", "b": "2"}) == ["--filter", "label=a=1", "--filter", "label=b=2"]


def test_free_ports_distinct():
    ports = free_ports("127.0.0.1", 3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)


def test_choose_ports_random_by_default():
    ports = choose_ports("127.0.0.1")
    assert sorted(ports) == [22, 80, 443] and len(set(ports.values())) == 3


def test_choose_ports_same_numbers():
    assert choose_ports("127.0.0.7", same_ports=True) == {22: 22, 80: 80, 443: 443}


def test_same_ports_publishes_guest_ports_at_their_own_numbers():
    ports = choose_ports("127.0.0.7", same_ports=True)
    labels = droplet_labels("prod", SPEC, ports, "127.0.0.7", "img")
    args = _args(ports=ports, bind_address="127.0.0.7", labels=labels)
    assert _flag_values(args, "-p") == ["127.0.0.7:22:22", "127.0.0.7:80:80", "127.0.0.7:443:443"]
    info = {"Id": "ab" * 32, "State": {"Status": "running"}, "Config": {"Labels": labels},
            "HostConfig": {"Memory": 4096 << 20, "NanoCpus": 2_000_000_000}}
    d = droplet_from_inspect(info)
    assert (d.address, d.ssh_port, d.port(80), d.port(443)) == ("127.0.0.7", 22, 80, 443)


def test_local_provider_same_ports_defaults_off(tmp_path):
    from provision.workspace import Workspace

    assert LocalProvider("prod", Workspace(tmp_path)).same_ports is False
    assert LocalProvider("prod", Workspace(tmp_path), bind_address="127.0.0.9", same_ports=True).same_ports


@pytest.mark.parametrize("same_ports,runs", [(False, 3), (True, 1)])
def test_taken_port_is_retried_only_with_random_ports(monkeypatch, tmp_path, same_ports, runs):
    from provision.providers import local
    from provision.workspace import Workspace

    calls = []

    def fake_docker(*args, **kw):
        calls.append(args)
        if args[0] == "run":
            published = _flag_values(list(args), "-p")
            calls[-1] = published
            return subprocess.CompletedProcess(args, 125, "", "Error starting userland proxy: listen tcp4 "
                                               f"{published[0].rsplit(':', 1)[0]}: bind: address already in use\n")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(local, "docker", fake_docker)
    monkeypatch.setattr(local, "engine_facts", lambda: {"ncpu": "2", "cgroup": "1"})
    provider = LocalProvider("prod", Workspace(tmp_path), bind_address="127.0.0.7", same_ports=same_ports)
    with pytest.raises(ProviderError, match="address already in use"):
        provider._run(SPEC, "img:1")
    published = [c for c in calls if isinstance(c, list)]
    assert len(published) == runs
    if same_ports:
        assert published == [["127.0.0.7:22:22", "127.0.0.7:80:80", "127.0.0.7:443:443"]]


# ---- image recipe ---------------------------------------------------------------------------

def test_image_tags_follow_recipe_hash():
    rootfs, image = local_image.debian_tags()
    h = image.rsplit("-", 1)[1]
    assert image == f"dropship/droplet:trixie-{h}" and rootfs == f"dropship/rootfs:trixie-{h}"
    assert len(h) == 12 and local_image.ubuntu_tag().startswith("dropship/droplet:noble-")
    assert local_image.recipe_hash("a") != local_image.recipe_hash("b")
    assert local_image.recipe_hash("a", "b") != local_image.recipe_hash("ab")


def test_dockerfile_recipe():
    df = local_image.DEBIAN_DOCKERFILE
    assert df.startswith("FROM {base}\n")
    for needle in ("rm -f /etc/ssh/ssh_host_*", ": > /etc/machine-id", "STOPSIGNAL SIGRTMIN+3",
                   'CMD ["/sbin/init"]', "multi-user.target.wants/dropship-hostkeys.service",
                   "multi-user.target.wants/ssh.service", "systemd-firstboot.service"):
        assert needle in df
    assert "Before=ssh.service" in local_image.HOSTKEYS_UNIT
    assert "ssh-keygen -A" in local_image.HOSTKEYS_UNIT
    assert "trixie-security main" in local_image.SOURCES_LIST


def test_build_context_tar():
    data = local_image.build_context("FROM x\n", {"a.txt": "hello"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "a.txt"]
        assert tar.extractfile("a.txt").read() == b"hello"


# ---- docker CLI wrapper (subprocess faked) --------------------------------------------------

def test_docker_error_carries_last_stderr_line(monkeypatch):
    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, b"", b"noise\nError: no such container: x\n")
    monkeypatch.setattr(docker_engine.subprocess, "run", fake_run)
    with pytest.raises(ProviderError, match="no such container: x"):
        docker_engine.docker("rm", "x")
    assert docker_engine.docker("rm", "x", check=False).returncode == 1


def test_docker_missing_cli(monkeypatch):
    def fake_run(cmd, **kw):
        raise FileNotFoundError(cmd[0])
    monkeypatch.setattr(docker_engine.subprocess, "run", fake_run)
    with pytest.raises(DropshipError) as err:
        docker_engine.docker("info")
    assert err.value.fix == "apt-get install docker.io"


def test_ensure_engine_without_docker(monkeypatch):
    monkeypatch.setattr(docker_engine, "_engine_ok", False)
    monkeypatch.setattr(docker_engine.shutil, "which", lambda name: None)
    with pytest.raises(DropshipError) as err:
        docker_engine.ensure_engine()
    assert err.value.fix == "apt-get install docker.io"


def test_last_line():
    assert docker_engine.last_line("a\nb\n\n") == "b"
    assert docker_engine.last_line("") == ""


def _engine_down(monkeypatch, answers):
    monkeypatch.setattr(docker_engine, "_engine_ok", False)
    monkeypatch.setattr(docker_engine.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(docker_engine.os, "geteuid", lambda: 0)
    monkeypatch.setattr(docker_engine.time, "sleep", lambda s: None)
    monkeypatch.setattr(docker_engine, "_engine_answers", lambda: answers.pop(0))
    started = []
    monkeypatch.setattr(docker_engine, "_start_dockerd", lambda: started.append(1) or "/x.log")
    return started


def test_ensure_engine_starts_dockerd_once(monkeypatch):
    started = _engine_down(monkeypatch, [False, False, True])
    docker_engine.ensure_engine()
    docker_engine.ensure_engine()  # cached
    assert started == [1]


def test_ensure_engine_gives_up(monkeypatch):
    _engine_down(monkeypatch, [False] * 1000)
    with pytest.raises(ProviderError, match="did not answer"):
        docker_engine.ensure_engine(timeout=0)


def test_a_droplet_volume_is_labelled_for_its_environment_and_name():
    assert volume_labels("staging", "web-1") == ["--label", "dropship.env=staging", "--label", "dropship.name=web-1"]
    assert volume_labels("staging", "web-1", {"team": "data"}) == [
        "--label", "team=data", "--label", "dropship.env=staging", "--label", "dropship.name=web-1"]
