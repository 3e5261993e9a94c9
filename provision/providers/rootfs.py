"""Debian root filesystems made on this machine and ``docker import``-ed (no registry needed).

mmdebstrap makes one in about a quarter of debootstrap's time (apt fetches the packages in
parallel; debootstrap fetches and checks them one by one), so it is used when installed, and
debootstrap otherwise. Both take the same ``--variant``/``--include`` arguments and install the same
packages; mmdebstrap leaves no apt lists or caches behind.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from provision.build_failures import CERTIFICATE, DEPENDENCIES, NETWORK, failure_message
from provision.errors import DropshipError, ProviderError
from provision.providers.docker_engine import docker

log = logging.getLogger(__name__)

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
# The rootfs's apt sources: the suite, its updates and its security fixes.
SOURCES_LIST = f"""\
deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""
TOOLS = ("mmdebstrap", "debootstrap")        # the faster first
TIMEOUT = 1800
# Neither tool nor apt here use HTTPS (plain-HTTP mirrors): the build needs no CA certificates.
NO_CAS = "the build gets no CA certificates: its mirrors are plain HTTP, yet something verified one"
FIXES = {
    CERTIFICATE: "let this machine (and its Docker engine) trust the proxy's root CA (update-ca-certificates, "
                 "restart dockerd), then run again",
    NETWORK: f"check that this machine reaches {MIRROR} (DNS, proxy, firewall), then run again",
    DEPENDENCIES: "the image's package list does not install from this mirror (mid-sync?); run again later",
}


def bootstrap_tool(which=shutil.which) -> str | None:
    """The first of ``TOOLS`` on PATH, or None."""
    return next((t for t in TOOLS if which(t)), None)


def bootstrap_command(tool: str, args: Sequence[str], target: Path, mirror: str = MIRROR) -> list[str]:
    """The command making a rootfs of ``args`` (options, then the suite) in the folder ``target`` (pure).
    Both tools read ``[options] SUITE TARGET MIRROR``; mmdebstrap is told the folder is a directory."""
    extra = ["--format=directory"] if tool == "mmdebstrap" else []
    return [tool, *extra, *args, str(target), mirror]


def require_bootstrap_tool(what: str, fix: str) -> str:
    """The tool that builds ``what`` (as root): say what is missing before starting."""
    tool = bootstrap_tool()
    if tool is None:
        raise DropshipError(f"building {what} needs mmdebstrap or debootstrap (no registry here)", fix)
    if os.geteuid() != 0:
        raise DropshipError(f"building {what} runs {tool}, which needs root",
                            "run dropship as root once to build the image")
    return tool


def make_rootfs(tool: str, target: Path, args: Sequence[str], log_path: Path) -> None:
    """A Debian ``SUITE`` rootfs of ``args`` in the empty folder ``target``, made by ``tool`` (its output
    replaces ``log_path``); one-line error naming the cause on failure."""
    log.info("%s %s into %s", tool, SUITE, target)
    with open(log_path, "wb") as out:
        try:
            rc = subprocess.run(bootstrap_command(tool, args, target), stdout=out, stderr=subprocess.STDOUT,
                                timeout=TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0:
        raise ProviderError(*failure_message(f"{tool} {SUITE}", log_path.read_text(errors="replace"),
                                             str(log_path), NO_CAS, FIXES, rc))


def import_rootfs(target: Path, tag: str, changes: tuple[str, ...] = ()) -> None:
    """``docker import`` the folder ``target`` as image ``tag`` (Dockerfile ``changes`` applied)."""
    with subprocess.Popen(["tar", "--numeric-owner", "-C", str(target), "-c", "."], stdout=subprocess.PIPE) as tar:
        docker("import", *[a for c in changes for a in ("--change", c)], "-", tag, input=tar.stdout, timeout=600)


def remove_rootfs(target: Path) -> None:
    """Unmount anything the tool left mounted under ``target``, then delete it."""
    prefix = str(target) + "/"
    with open("/proc/mounts") as f:
        mounts = [ln.split()[1] for ln in f if ln.split()[1].startswith(prefix)]
    for mnt in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    with open("/proc/mounts") as f:
        if any(ln.split()[1].startswith(prefix) for ln in f):
            log.warning("left %s in place: still has mounts", target)
            return
    shutil.rmtree(target, ignore_errors=True)
