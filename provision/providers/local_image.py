"""The base image local droplets boot from: systemd + sshd, built once per recipe and reused.

Tag scheme: ``dropship/droplet:<suite>-<recipehash>`` where recipehash is a short sha256 of the
recipe (Dockerfile, copied files, rootfs arguments), so editing the recipe rebuilds.
With a reachable registry the image is built from ``ubuntu:24.04`` (suite ``noble``); without one
(the usual case here) a Debian trixie rootfs is made (``rootfs``: mmdebstrap or debootstrap) and
``docker import``-ed.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import subprocess
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from provision.build_failures import failure_message
from provision.errors import ProviderError
from provision.providers.docker_engine import docker, ensure_engine, image_exists, last_line
from provision.providers.rootfs import (FIXES, MIRROR, NO_CAS, SOURCES_LIST, SUITE, import_rootfs,
                                        make_rootfs, remove_rootfs, require_bootstrap_tool)
from provision.report import ticker

log = logging.getLogger(__name__)

REPO = "dropship/droplet"
ROOTFS_REPO = "dropship/rootfs"
PACKAGES = "openssh-server,systemd,systemd-sysv,sudo,python3,iproute2,ca-certificates,dbus"
ROOTFS_ARGS = ("--variant=minbase", f"--include={PACKAGES}", SUITE)
REGISTRY_BASE = "ubuntu:24.04"
REGISTRY_PROBE_TIMEOUT = 20
LOCK_PATH = Path(tempfile.gettempdir()) / "dropship-image-build.lock"
BUILD_LOG = Path(tempfile.gettempdir()) / "dropship-droplet-image-build.log"    # the rootfs, then docker build

HOSTKEYS_UNIT = """\
[Unit]
Description=Generate this droplet's SSH host keys (the image ships none)
Before=ssh.service ssh.socket sshd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

# Units that make no sense in a container (no consoles, no first-boot wizard) or that the
# hostkeys unit replaces (Debian's sshd-keygen only runs on "first boot").
MASKED_UNITS = ("systemd-firstboot.service", "sshd-keygen.service", "getty@tty1.service")

_FINISH = """\
ENV container=docker
COPY dropship-hostkeys.service /etc/systemd/system/dropship-hostkeys.service
RUN set -e; rm -f /etc/ssh/ssh_host_*; \\
    mkdir -p /etc/systemd/system/multi-user.target.wants; \\
    ln -sf /etc/systemd/system/dropship-hostkeys.service \\
        /etc/systemd/system/multi-user.target.wants/dropship-hostkeys.service; \\
    for u in {masked}; do ln -sf /dev/null /etc/systemd/system/$u; done; \\
    rm -f /etc/systemd/system/getty.target.wants/getty@tty1.service; \\
    {enable_ssh}\\
    : > /etc/machine-id; rm -f /var/lib/dbus/machine-id
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"""

DEBIAN_DOCKERFILE = "FROM {base}\nCOPY sources.list /etc/apt/sources.list\n" + _FINISH.format(
    masked=" ".join(MASKED_UNITS),
    enable_ssh="ln -sf /usr/lib/systemd/system/ssh.service "
               "/etc/systemd/system/multi-user.target.wants/ssh.service; \\\n    ")

UBUNTU_DOCKERFILE = f"""\
FROM {REGISTRY_BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \\
        {PACKAGES.replace(",", " ")} \\
    && apt-get clean && rm -rf /var/lib/apt/lists/*
""" + _FINISH.format(masked=" ".join(MASKED_UNITS), enable_ssh="")


def recipe_hash(*parts: str) -> str:
    """Short sha256 of the recipe texts (pure)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def debian_tags() -> tuple[str, str]:
    """(rootfs tag, droplet image tag) of the Debian rootfs recipe (pure)."""
    h = recipe_hash(DEBIAN_DOCKERFILE, SOURCES_LIST, HOSTKEYS_UNIT, MIRROR, *ROOTFS_ARGS)
    return f"{ROOTFS_REPO}:{SUITE}-{h}", f"{REPO}:{SUITE}-{h}"


def ubuntu_tag() -> str:
    """Droplet image tag of the registry (ubuntu:24.04) recipe (pure)."""
    return f"{REPO}:noble-{recipe_hash(UBUNTU_DOCKERFILE, HOSTKEYS_UNIT)}"


def build_context(dockerfile: str, files: dict[str, str]) -> bytes:
    """A tar build context holding the Dockerfile and ``files`` (pure)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in {"Dockerfile": dockerfile, **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ensure_base_image() -> str:
    """Return the droplet image reference, building it (once, under a lock) when missing."""
    ensure_engine()
    existing = _existing_image()
    if existing:
        return existing
    with build_lock():
        existing = _existing_image()
        if existing:
            return existing
        started = time.monotonic()
        ref = _build_from_registry() or _build_from_rootfs()
        log.info("built %s in %.0fs", ref, time.monotonic() - started)
        return ref


def _existing_image() -> str | None:
    for ref in (debian_tags()[1], ubuntu_tag()):
        if image_exists(ref):
            return ref
    return None


@contextmanager
def build_lock(path: Path = LOCK_PATH, what: str = "the local base image"):
    """An exclusive file lock: concurrent processes (parallel test runs) build ``what`` once."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", what)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(tag: str, dockerfile: str, files: dict[str, str], timeout: float, log_path: Path = BUILD_LOG) -> None:
    """``docker build`` of ``tag``, its output appended to ``log_path``; one-line error naming the cause."""
    with open(log_path, "ab") as out:
        start = out.tell()
        try:
            rc = subprocess.run(["docker", "build", "-t", tag, "-"], input=build_context(dockerfile, files),
                                stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:                   # (ensure_engine found the CLI)
            rc = f"no end within {timeout:.0f} s"
    if rc != 0:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        raise ProviderError(*failure_message(f"building the local droplet image {tag}", text, str(log_path),
                                             NO_CAS, FIXES, rc))


def _build_from_registry() -> str | None:
    """Build from ubuntu:24.04 if a registry answers; None when it does not."""
    if not image_exists(REGISTRY_BASE):
        try:
            pulled = docker("pull", "-q", REGISTRY_BASE, check=False, timeout=REGISTRY_PROBE_TIMEOUT)
        except ProviderError:  # timed out: treat as unreachable
            return None
        if pulled.returncode != 0:
            log.info("no registry (%s); building from a Debian rootfs", last_line(pulled.stderr))
            return None
    tag = ubuntu_tag()
    log.info("building %s from %s", tag, REGISTRY_BASE)
    BUILD_LOG.write_bytes(b"")
    with ticker(tag, BUILD_LOG):
        _build(tag, UBUNTU_DOCKERFILE, {"dropship-hostkeys.service": HOSTKEYS_UNIT}, timeout=900)
    return tag


def _build_from_rootfs() -> str:
    rootfs_tag, tag = debian_tags()
    BUILD_LOG.write_bytes(b"")
    with ticker(tag, BUILD_LOG):
        if not image_exists(rootfs_tag):
            _import_rootfs(rootfs_tag)
        log.info("building %s from %s", tag, rootfs_tag)
        _build(tag, DEBIAN_DOCKERFILE.replace("{base}", rootfs_tag),
               {"sources.list": SOURCES_LIST, "dropship-hostkeys.service": HOSTKEYS_UNIT}, timeout=600)
    return tag


def _import_rootfs(rootfs_tag: str) -> None:
    """Make a rootfs in a temp folder and ``docker import`` it as ``rootfs_tag``."""
    tool = require_bootstrap_tool("the local droplet image", "apt-get install mmdebstrap")
    target = Path(tempfile.mkdtemp(prefix="dropship-rootfs-", dir="/var/tmp"))
    try:
        make_rootfs(tool, target, ROOTFS_ARGS, BUILD_LOG)
        import_rootfs(target, rootfs_tag)
    finally:
        remove_rootfs(target)
