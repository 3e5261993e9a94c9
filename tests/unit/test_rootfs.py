"""Debian root filesystems: which tool makes them, its exact command, and its failures in one line."""
from pathlib import Path

import pytest

from provision.errors import DropshipError, ProviderError
from provision.providers import rootfs

ARGS = ("--variant=minbase", "--include=python3,curl", "trixie")

MMDEBSTRAP_DNS = """\
I: automatically chosen mode: root
I: chroot architecture amd64 is equal to the host's architecture
I: finding correct signed-by value...
I: automatically chosen format: directory
I: running apt-get update...
Ign:1 http://no-such-mirror.invalid/debian trixie InRelease
Err:1 http://no-such-mirror.invalid/debian trixie InRelease
  Could not resolve 'no-such-mirror.invalid'
Reading package lists...
E: Failed to fetch http://no-such-mirror.invalid/debian/dists/trixie/InRelease  Could not resolve 'no-such-mirror.invalid'
E: Some index files failed to download. They have been ignored, or old ones used instead.
E: apt-get update --error-on=any -oAPT::Status-Fd=<$fd> -oDpkg::Use-Pty=false failed
I: main() received signal PIPE: waiting for setup...
E: mmdebstrap failed to run
"""
MMDEBSTRAP_NO_PACKAGE = """\
I: installing remaining packages inside the chroot...
Reading package lists...
Building dependency tree...
E: Unable to locate package no-such-package-xyz
E: setup failed: E: apt-get -o Dir::Bin::dpkg=env --yes install no-such-package-xyz failed
I: main() received signal PIPE: waiting for setup...
E: mmdebstrap failed to run
"""


def test_the_faster_tool_is_preferred():
    assert rootfs.bootstrap_tool(lambda t: f"/usr/bin/{t}") == "mmdebstrap"
    assert rootfs.bootstrap_tool(lambda t: "/usr/sbin/debootstrap" if t == "debootstrap" else None) == "debootstrap"
    assert rootfs.bootstrap_tool(lambda t: None) is None


def test_commands_by_exact_strings():
    target = Path("/var/tmp/dropship-rootfs-x")
    assert rootfs.bootstrap_command("mmdebstrap", ARGS, target) == [
        "mmdebstrap", "--format=directory", "--variant=minbase", "--include=python3,curl", "trixie",
        "/var/tmp/dropship-rootfs-x", "http://deb.debian.org/debian"]
    assert rootfs.bootstrap_command("debootstrap", ARGS, target, "http://mirror.example/debian") == [
        "debootstrap", "--variant=minbase", "--include=python3,curl", "trixie",
        "/var/tmp/dropship-rootfs-x", "http://mirror.example/debian"]


def fake_tool(tmp_path, monkeypatch, name, output, rc):
    """An executable ``name`` on PATH that prints ``output`` and exits ``rc``; returns the argv file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "out.txt").write_text(output)
    argv = tmp_path / "argv.txt"
    (bindir / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv}\ncat {tmp_path / "out.txt"}\nexit {rc}\n')
    (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return argv


@pytest.mark.parametrize("output, cause, evidence, fix", [
    (MMDEBSTRAP_DNS, "network failure (the build could not reach a package server)",
     "Could not resolve 'no-such-mirror.invalid'", "check that this machine reaches http://deb.debian.org/debian"),
    (MMDEBSTRAP_NO_PACKAGE, "dependency resolution failed (the requested packages do not fit together or do not "
     "exist)", "E: Unable to locate package no-such-package-xyz", "the image's package list does not install"),
])
def test_a_failed_rootfs_says_why_in_one_line(tmp_path, monkeypatch, output, cause, evidence, fix):
    argv = fake_tool(tmp_path, monkeypatch, "mmdebstrap", output, 25)
    log = tmp_path / "rootfs.log"
    log.write_text("an earlier build's output\n")
    with pytest.raises(ProviderError) as info:
        rootfs.make_rootfs(rootfs.bootstrap_tool(), tmp_path / "target", ARGS, log)
    message = info.value.message
    assert message.startswith(f"mmdebstrap trixie failed: {cause}: ") and evidence in message
    assert message.endswith(f"; see {log}") and "\n" not in message
    assert info.value.fix.startswith(fix)
    assert log.read_text() == output                                   # this build's output only
    assert argv.read_text().split("\n")[:2] == ["--format=directory", "--variant=minbase"]


def test_no_tool_is_named_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DropshipError, match="needs mmdebstrap or debootstrap") as info:
        rootfs.require_bootstrap_tool("the local droplet image", "apt-get install mmdebstrap")
    assert info.value.fix == "apt-get install mmdebstrap"
