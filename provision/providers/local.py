"""Local droplets: systemd containers in the local Docker engine, reached over SSH on loopback.

Each droplet is a container ``dropship-<env>-<name>`` on the network ``dropship-<env>`` (droplets
resolve each other by name), with its own Docker volume for /var/lib/docker and guest ports
22/80/443 published on fixed host ports chosen at create time (recorded in labels). With
``same_ports`` they are published at the same numbers (``127.0.0.N:22:22``), as on a real
droplet's public address; give each such droplet its own ``bind_address`` then.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

from provision.errors import ProviderError
from provision.providers.base import Droplet, DropletSpec, SizeInfo
from provision.providers.docker_engine import docker, engine_facts, ensure_engine, image_exists, last_line
from provision.providers import inotify
from provision.providers.local_image import ensure_base_image
from provision.providers.sizes import BASIC_SIZES, parse_size, table_size

BASE_IMAGE_NAME = "debian-13"   # the inventory's default local image: the built base image
from provision.workspace import Workspace

log = logging.getLogger(__name__)

LABEL = "dropship"
GUEST_PORTS = (22, 80, 443)
BOOT_TIMEOUT = 60.0
SSH_TIMEOUT = 30.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_MIB = 1024 * 1024
_NETWORK_LOCK = threading.Lock()    # droplets are created in parallel; Docker allows two networks of one name


# ---- pure helpers ---------------------------------------------------------------------------

def container_name(env: str, name: str) -> str:
    return f"dropship-{env}-{name}"


def volume_name(env: str, name: str) -> str:
    """The Docker volume mounted at the droplet's /var/lib/docker."""
    return f"{container_name(env, name)}-docker"


def volume_labels(env: str, name: str, extra: dict[str, str] | None = None) -> list[str]:
    """``--label`` arguments of a droplet's Docker volume: reaping an environment finds it by them (pure)."""
    labels = {**(extra or {}), f"{LABEL}.env": env, f"{LABEL}.name": name}
    return [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]


def network_name(env: str) -> str:
    """One network per environment, so equal droplet names in two environments never mix."""
    return f"dropship-{env}"


def check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value or ""):
        raise ProviderError(f"{kind} {value!r} cannot name a local droplet",
                            "use lowercase letters, digits and dashes")
    return value


def connect_address(bind_address: str) -> str:
    """Where the controller reaches ports published on ``bind_address``."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind_address, bind_address)


def cpu_limit(vcpus: int, host_cpus: int) -> str:
    """``--cpus`` value: the slug's vCPUs, capped at what the engine has (docker refuses more)."""
    return str(max(1, min(vcpus, max(1, host_cpus))))


def _host_memory_mb() -> int:
    """This machine's memory (local droplets share it), 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next((int(ln.split()[1]) // 1024 for ln in f if ln.startswith("MemTotal:")), 0)
    except OSError:
        return 0


def status_of(state: str) -> str:
    """Docker container state -> droplet status."""
    return {"running": "active", "restarting": "new"}.get(state, "off")


def droplet_labels(env: str, spec: DropletSpec, ports: dict[int, int], bind_address: str,
                   base_image: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    labels = dict(extra or {})
    labels.update({
        f"{LABEL}.env": env, f"{LABEL}.name": spec.name, f"{LABEL}.size": spec.size,
        f"{LABEL}.region": spec.region, f"{LABEL}.image": spec.image,
        f"{LABEL}.tags": ",".join(spec.tags), f"{LABEL}.bind": bind_address,
        f"{LABEL}.base-image": base_image,
    })
    labels.update({f"{LABEL}.port.{guest}": str(host) for guest, host in sorted(ports.items())})
    return labels


def _publish(bind_address: str, host_port: int, guest_port: int) -> str:
    addr = f"[{bind_address}]" if ":" in bind_address else bind_address
    return f"{addr}:{host_port}:{guest_port}"


def run_args(env: str, spec: DropletSpec, image: str, ports: dict[int, int], bind_address: str,
             labels: dict[str, str], host_cpus: int, cgroup_version: str = "1") -> list[str]:
    """The ``docker run`` arguments for one droplet (pure)."""
    size = parse_size(spec.size)
    args = ["run", "-d", "--name", container_name(env, spec.name), "--hostname", spec.name,
            "--network", network_name(env), "--network-alias", spec.name]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    # SYS_PTRACE: the droplet's own Docker can `exec` into its containers (health checks, compose exec),
    # which means opening /proc/<pid>/ns/* of processes running as another user.
    args += ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE",
             "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
             "--tmpfs", "/run", "--tmpfs", "/run/lock"]
    if cgroup_version == "2":  # systemd needs a writable cgroup2 tree (untested here: v1 host)
        args += ["--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
    else:
        args += ["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]
    args += ["-v", f"{volume_name(env, spec.name)}:/var/lib/docker",
             "--memory", f"{size.memory_mb}m", "--memory-swap", f"{size.memory_mb}m",
             "--cpus", cpu_limit(size.vcpus, host_cpus)]
    for guest in GUEST_PORTS:
        args += ["-p", _publish(bind_address, ports[guest], guest)]
    return args + [image]


def parse_tags(value: str) -> tuple[str, ...]:
    return tuple(t for t in (value or "").split(",") if t)


def current_size(label_size: str, recorded: str | None, memory_bytes: int, nano_cpus: int) -> str:
    """The droplet's size slug: the one recorded at resize (labels are immutable) or the label,
    whichever matches the container's memory limit; else one made up from the limits."""
    for slug in (recorded, label_size):
        try:
            if slug and parse_size(slug).memory_mb * _MIB == memory_bytes:
                return slug
        except ValueError:
            continue
    if not memory_bytes:
        return recorded or label_size
    mb = memory_bytes // _MIB
    mem = f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"
    return f"s-{max(1, round(nano_cpus / 1e9))}vcpu-{mem}"


def network_address(info: dict) -> str:
    """The container's IPv4 address on its environment's network ("" while it has none)."""
    env = (info.get("Config", {}).get("Labels") or {}).get(f"{LABEL}.env", "")
    networks = (info.get("NetworkSettings", {}) or {}).get("Networks") or {}
    return (networks.get(network_name(env)) or {}).get("IPAddress") or ""


def droplet_from_inspect(info: dict, recorded_size: str | None = None, recorded_disk: str | None = None) -> Droplet:
    """A Droplet from one ``docker inspect`` object of a dropship container (pure). Its disk is
    emulated: the one recorded by a ``disk`` resize, else its first size's in the table."""
    labels = info.get("Config", {}).get("Labels") or {}
    host = info.get("HostConfig", {}) or {}
    ports = dict(sorted((int(k.rsplit(".", 1)[1]), int(v)) for k, v in labels.items()
                        if k.startswith(f"{LABEL}.port.")))
    size = current_size(labels.get(f"{LABEL}.size", ""), recorded_size,
                        int(host.get("Memory") or 0), int(host.get("NanoCpus") or 0))
    try:
        figures = parse_size(size)
        vcpus, memory_mb = figures.vcpus, figures.memory_mb
    except ValueError:
        vcpus, memory_mb = 0, int(host.get("Memory") or 0) // _MIB
    return Droplet(
        name=labels.get(f"{LABEL}.name", info.get("Name", "").lstrip("/")),
        id=info.get("Id", "")[:12],
        status=status_of(info.get("State", {}).get("Status", "")),
        address=connect_address(labels.get(f"{LABEL}.bind", "127.0.0.1")),
        ssh_port=ports.get(22, 22), size=size, region=labels.get(f"{LABEL}.region", ""),
        image=labels.get(f"{LABEL}.image", ""), tags=parse_tags(labels.get(f"{LABEL}.tags", "")),
        vcpus=vcpus, memory_mb=memory_mb, ports=ports,
        disk_gb=int(recorded_disk) if (recorded_disk or "").isdigit() else
        BASIC_SIZES.get(labels.get(f"{LABEL}.size", ""), (0, 0, 0))[2],
        private_address=network_address(info),
    )


def host_key_line(pub: str) -> str:
    """``ssh-ed25519 AAAA... root@x`` -> ``ssh-ed25519 AAAA...``."""
    return " ".join(pub.split()[:2])


def label_filters(labels: dict[str, str]) -> list[str]:
    return [arg for k, v in labels.items() for arg in ("--filter", f"label={k}={v}")]


def choose_ports(bind_address: str, same_ports: bool = False) -> dict[int, int]:
    """Guest port -> host port on ``bind_address``: the same numbers, or free random ports."""
    if same_ports:
        return {guest: guest for guest in GUEST_PORTS}
    return dict(zip(GUEST_PORTS, free_ports(bind_address, len(GUEST_PORTS))))


def free_ports(bind_address: str, count: int) -> list[int]:
    """``count`` distinct ports the kernel says are free on ``bind_address`` right now."""
    family = socket.AF_INET6 if ":" in bind_address else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((bind_address, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---- module-level docker helpers ------------------------------------------------------------

def _inspect(*refs: str) -> list[dict]:
    """``docker inspect`` of containers; missing ones are left out."""
    if not refs:
        return []
    out = docker("inspect", "--type", "container", *refs, check=False)
    try:
        return json.loads(out.stdout or "[]") or []
    except json.JSONDecodeError:
        return []


SNAPSHOT_REPO = "dropship/snapshot"


def reap(label_filter: dict[str, str]) -> int:
    """Force-remove containers matching all labels, with their volumes and networks.

    For cleaning up after killed runs; returns how many containers went.
    """
    ensure_engine()
    filters = label_filters(label_filter)
    ids = docker("ps", "-a", "-q", "--no-trunc", *filters).stdout.split()
    volumes, networks = set(), set()
    for info in _inspect(*ids):
        volumes |= {m["Name"] for m in info.get("Mounts", []) if m.get("Type") == "volume"}
        networks |= set((info.get("NetworkSettings", {}).get("Networks") or {}).keys())
    if ids:
        docker("rm", "-f", *ids, check=False, timeout=180)
    volumes |= set(docker("volume", "ls", "-q", *filters).stdout.split())
    if volumes:
        docker("volume", "rm", "-f", *sorted(volumes), check=False)
    networks = {n for n in networks if n.startswith("dropship-")}
    networks |= set(docker("network", "ls", "-q", *filters).stdout.split())
    for net in sorted(networks):
        docker("network", "rm", net, check=False)  # refused while other containers use it
    snapshots = docker("images", "-q", "--filter", f"reference={SNAPSHOT_REPO}", *filters).stdout.split()
    if snapshots:          # commits of the droplets carry their labels
        docker("rmi", "-f", *sorted(set(snapshots)), check=False, timeout=180)
    return len(ids)


# ---- the provider ---------------------------------------------------------------------------

class LocalProvider:
    """Provider for one environment's droplets in the local Docker engine."""

    def __init__(self, env: str, workspace: Workspace, ca_certificates: list[Path] = (),
                 bind_address: str = "127.0.0.1", labels: dict[str, str] | None = None,
                 same_ports: bool = False):
        self.env = check_name("environment", env)
        self.workspace = workspace
        self.ca_certificates = [Path(p) for p in ca_certificates]
        self.bind_address = bind_address
        self.same_ports = same_ports  # publish 22/80/443 as 22/80/443 on bind_address
        self.labels = dict(labels or {})
        self.boot_debug: dict[str, str] = {}  # name -> `systemctl --failed` when boot was degraded

    # -- Provider protocol --

    def create(self, spec: DropletSpec, public_key: str) -> Droplet:
        """Create the droplet (or start and return the existing one), ready for SSH as root."""
        check_name("droplet name", spec.name)
        ensure_engine()
        cname = container_name(self.env, spec.name)
        info = self._inspect_one(spec.name)
        if info is None:
            self._run(spec, self._image_for(spec.image))
        elif info["State"]["Status"] != "running":
            docker("start", cname, timeout=120)
        return self._ready(spec.name, public_key)

    @staticmethod
    def _image_for(image: str) -> str:
        """A distribution slug (``debian-13``, ``ubuntu-24-04-x64``) is the built base image;
        anything else must be a local snapshot (image id or tag)."""
        if image_exists(image):
            return image
        if image in ("", BASE_IMAGE_NAME) or re.fullmatch(r"^(debian|ubuntu)-[0-9][0-9a-z-]*$", image):
            return ensure_base_image()
        raise ProviderError(f"image {image!r} not found on the local Docker engine",
                            f"use image '{BASE_IMAGE_NAME}' or a snapshot made with `droplet.snapshot`")

    def get(self, name: str) -> Droplet | None:
        ensure_engine()
        info = self._inspect_one(name)
        recorded = self._recorded_sizes()
        return droplet_from_inspect(info, recorded.get(name), recorded.get(f"{name}#disk")) if info else None

    def list(self) -> list[Droplet]:
        ensure_engine()
        ids = docker("ps", "-a", "-q", "--no-trunc", *label_filters({f"{LABEL}.env": self.env})
                     ).stdout.split()
        recorded = self._recorded_sizes()
        droplets = []
        for info in _inspect(*ids):
            name = info["Config"]["Labels"].get(f"{LABEL}.name")
            droplets.append(droplet_from_inspect(info, recorded.get(name), recorded.get(f"{name}#disk")))
        return sorted(droplets, key=lambda d: d.name)

    def power(self, name: str, on: bool) -> Droplet:
        """Start (and wait for boot and sshd) or cleanly stop a droplet."""
        self._require(name)
        cname = container_name(self.env, name)
        if on:
            docker("start", cname, timeout=120)
            self._wait_booted(name)
            droplet = self._require(name)
            self._wait_ssh(droplet)
            droplet.host_keys = self._host_keys(name)
            return droplet
        docker("stop", "-t", "30", cname, timeout=90)
        return self._require(name)

    def check_resize(self, name: str, size: str, disk: bool = False) -> SizeInfo:
        """The local table's rules (``sizes.BASIC_SIZES``): the size exists, fits this machine's
        memory, and has at least the droplet's disk; the droplet is not between states."""
        droplet = self._require(name)
        try:
            target = table_size(size)
        except ValueError as e:
            raise ProviderError(f"{name}: {e}", "use one of the sizes listed") from None
        total = _host_memory_mb()
        if total and target.memory_mb > total:
            raise ProviderError(f"{name}: {size} needs {target.memory_mb} MB, this machine has {total} MB",
                                "pick a smaller size")
        have = droplet.disk_gb
        if target.disk_gb < have:
            bigger = [s for s, (_, _, d) in BASIC_SIZES.items() if d >= have]
            raise ProviderError(f"{name}: {size} has a {target.disk_gb} GB disk, smaller than the droplet's "
                                f"{have} GB (a disk never shrinks)",
                                f"pick a size with at least {have} GB: {', '.join(bigger) or 'none'}")
        info = _inspect(container_name(self.env, name))
        state = info[0].get("State", {}).get("Status", "") if info else ""
        if state not in ("running", "exited", "created"):
            raise ProviderError(f"{name}: the droplet is {state or 'gone'} (an action is in progress)",
                                "wait for it to settle, then re-run")
        return target

    def resize(self, name: str, size: str, disk: bool = False) -> Droplet:
        """A real power cycle: stop the container (if running), change its CPU and memory limits,
        start it again and wait for boot and sshd. ``disk`` records the size's disk as the droplet's."""
        droplet = self._require(name)
        try:
            figures = parse_size(size)
        except ValueError as e:
            raise ProviderError(str(e), "use a size slug like 's-2vcpu-4gb'") from None
        cname = container_name(self.env, name)
        was_on = droplet.status == "active"
        if was_on:
            docker("stop", "-t", "30", cname, timeout=90)
        docker("update", "--cpus", cpu_limit(figures.vcpus, int(engine_facts()["ncpu"])),
               "--memory", f"{figures.memory_mb}m", "--memory-swap", f"{figures.memory_mb}m", cname)
        self._record_size(name, size)
        if disk and size in BASIC_SIZES:
            self._record_size(f"{name}#disk", str(BASIC_SIZES[size][2]))
        return self.power(name, True) if was_on else self._require(name)

    def snapshot(self, name: str, snapshot_name: str) -> str:
        """``docker commit`` the droplet's filesystem; returns the image id."""
        self._require(name)
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{self.env}-{name}-{snapshot_name}")[:128]
        out = docker("commit", container_name(self.env, name), f"{SNAPSHOT_REPO}:{tag}",
                     timeout=600)
        return out.stdout.strip()

    def destroy(self, name: str) -> None:
        """Remove the container and its volume; an absent droplet is fine."""
        ensure_engine()
        docker("rm", "-f", container_name(self.env, name), check=False, timeout=120)
        docker("volume", "rm", "-f", volume_name(self.env, name), check=False)
        self._record_size(name, None)
        self._record_size(f"{name}#disk", None)
        if not docker("ps", "-a", "-q", *label_filters({f"{LABEL}.env": self.env})).stdout.split():
            docker("network", "rm", network_name(self.env), check=False)

    # -- create steps --

    def _run(self, spec: DropletSpec, image: str) -> None:
        """``docker run`` the container, retrying when a chosen port was taken meanwhile."""
        facts = engine_facts()
        self._record_size(spec.name, None)
        self._record_size(f"{spec.name}#disk", None)
        for attempt in range(3):
            self._ensure_network()
            self._ensure_volume(spec.name)
            ports = choose_ports(self.bind_address, self.same_ports)
            labels = droplet_labels(self.env, spec, ports, self.bind_address, image, self.labels)
            out = docker(*run_args(self.env, spec, image, ports, self.bind_address, labels,
                                   int(facts["ncpu"]), facts["cgroup"]), check=False)
            if out.returncode == 0:
                return
            reason = last_line(out.stderr)
            docker("rm", "-f", container_name(self.env, spec.name), check=False)
            port_taken = "already allocated" in reason or "address already in use" in reason
            # fixed ports stay taken: retrying only helps when they were picked at random
            retry = (port_taken and not self.same_ports
                     or "network" in reason and "not found" in reason)
            if not retry or attempt == 2:
                raise ProviderError(f"{spec.name}: docker run failed: {reason}",
                                    "check `docker info`; remove leftovers with "
                                    f"`docker rm -f {container_name(self.env, spec.name)}`")

    def _ensure_network(self) -> None:
        with _NETWORK_LOCK:
            self._create_network()

    def _create_network(self) -> None:
        net = network_name(self.env)
        if docker("network", "inspect", net, check=False).returncode != 0:
            labels = {**self.labels, f"{LABEL}.env": self.env}
            out = docker("network", "create", *[a for k, v in labels.items()
                                                 for a in ("--label", f"{k}={v}")], net, check=False)
            if out.returncode != 0 and "already exists" not in out.stderr:
                raise ProviderError(f"cannot create Docker network {net}: {last_line(out.stderr)}",
                                    "remove unused networks with `docker network prune`")

    def _ensure_volume(self, name: str) -> None:
        docker("volume", "create", *volume_labels(self.env, name, self.labels), volume_name(self.env, name))

    def _ready(self, name: str, public_key: str) -> Droplet:
        """Wait for boot, authorize the key, install CA certs, wait for sshd, read host keys."""
        self._wait_booted(name)
        self._authorize(name, public_key)
        self._install_ca_certificates(name)
        droplet = self._require(name)
        self._wait_ssh(droplet)
        droplet.host_keys = self._host_keys(name)
        return droplet

    def _exec(self, name: str, script: str, input: bytes | str | None = None, check=True):
        flags = ["-i"] if input is not None else []
        return docker("exec", *flags, container_name(self.env, name), "sh", "-c", script,
                      input=input, check=check)

    def _wait_booted(self, name: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until systemd reports running (or degraded, noted in ``boot_debug``)."""
        deadline, state = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            out = self._exec(name, "systemctl is-system-running", check=False)
            state = out.stdout.strip()
            if state in ("running", "degraded"):
                self.boot_debug.pop(name, None)
                if state == "degraded":
                    failed = self._exec(name, "systemctl --failed --no-legend --plain",
                                        check=False).stdout.strip()
                    self.boot_debug[name] = failed
                    log.debug("%s booted degraded: %s", name, failed)
                return
            if "is not running" in out.stderr:
                cause = inotify.shortage(inotify.headroom(inotify.NEEDED), inotify.limit())
                if cause:
                    raise ProviderError(f"{name}: container stopped while booting: {cause}", inotify.fix())
                raise ProviderError(f"{name}: container stopped while booting",
                                    f"docker logs {container_name(self.env, name)}")
            time.sleep(0.3)
        raise ProviderError(f"{name}: systemd did not finish booting in {timeout:.0f}s "
                            f"(state: {state or 'unknown'})",
                            f"docker exec {container_name(self.env, name)} systemctl --failed")

    def _authorize(self, name: str, public_key: str) -> None:
        key = " ".join(public_key.split())
        if not key:
            raise ProviderError(f"{name}: empty public key", "pass the environment's SSH key")
        self._exec(name, 'k=$(cat); umask 077; mkdir -p /root/.ssh; chmod 700 /root/.ssh; '
                         'f=/root/.ssh/authorized_keys; touch $f; chmod 600 $f; '
                         'grep -qxF "$k" $f || printf "%s\\n" "$k" >> $f', input=key)

    def _install_ca_certificates(self, name: str) -> None:
        for path in self.ca_certificates:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ProviderError(f"cannot read CA certificate {path}: {e.strerror}",
                                    "fix the ca_certificates setting") from None
            stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)
            dest = f"/usr/local/share/ca-certificates/dropship-{stem}.crt"
            self._exec(name, f"cat > {dest}", input=data)
        if self.ca_certificates:
            self._exec(name, "update-ca-certificates >/dev/null")

    def _wait_ssh(self, droplet: Droplet, timeout: float = SSH_TIMEOUT) -> None:
        """Wait for the SSH banner on the published port (docker-proxy accepts before sshd)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((droplet.address, droplet.ssh_port), timeout=2) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise ProviderError(f"{droplet.name}: sshd did not answer on "
                            f"{droplet.address}:{droplet.ssh_port} in {timeout:.0f}s",
                            f"docker exec {container_name(self.env, droplet.name)} "
                            "systemctl status ssh")

    def _host_keys(self, name: str) -> list[str]:
        out = self._exec(name, "cat /etc/ssh/ssh_host_ed25519_key.pub")
        return [host_key_line(ln) for ln in out.stdout.splitlines() if ln.strip()]

    # -- state --

    def _inspect_one(self, name: str) -> dict | None:
        found = _inspect(container_name(self.env, name))
        return found[0] if found else None

    def _require(self, name: str) -> Droplet:
        droplet = self.get(name)
        if droplet is None:
            raise ProviderError(f"no local droplet {name!r} in environment {self.env!r}",
                                "create it first (dropship up)")
        return droplet

    def _sizes_path(self) -> Path:
        return self.workspace.state_dir / "local" / f"{self.env}-sizes.json"

    def _recorded_sizes(self) -> dict[str, str]:
        try:
            return json.loads(self._sizes_path().read_text())
        except (OSError, ValueError):
            return {}

    def _record_size(self, name: str, size: str | None) -> None:
        """Remember a resized droplet's slug (container labels cannot change)."""
        sizes = self._recorded_sizes()
        if size is None and name not in sizes:
            return
        if size is None:
            sizes.pop(name)
        else:
            sizes[name] = size
        path = self.workspace.ensure_private_dir(self._sizes_path())
        path.write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")
