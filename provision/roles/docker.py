"""Docker engine and compose plugin, log rotation, the deploy user in the docker group."""
from __future__ import annotations

import json

from ..engine.files import Directory, File
from ..engine.model import PHASE_PACKAGES, Resource, restart
from ..engine.system import Download, GroupMember, Service
from ..templates import render
from . import Role, RoleContext
from .handlers import DAEMON_RELOAD

NAME = "docker"
KEYRING = "/etc/apt/keyrings/docker.asc"


def packages(ctx: RoleContext) -> list[str]:
    if ctx.settings.docker.source == "docker-ce":
        return ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]
    # Compose v2: Ubuntu packages it as docker-compose-v2; Debian (trixie on) as docker-compose,
    # with the CLI split out of docker.io into docker-cli.
    if ctx.facts.os == "ubuntu":
        return ["docker.io", "docker-compose-v2"]
    return ["docker.io", "docker-cli", "docker-compose"]


def apt_source(os_id: str, codename: str, arch: str = "amd64") -> str:
    return (f"deb [arch={arch} signed-by={KEYRING}] https://download.docker.com/linux/{os_id} "
            f"{codename} stable\n")


def daemon_json(ctx: RoleContext) -> bytes:
    text = render("docker/daemon.json.j2", log_max_size=ctx.settings.docker.log_max_size,
                  log_max_file=ctx.settings.docker.log_max_file)
    json.loads(text)  # a template typo must fail here, not in dockerd
    return text


def resources(ctx: RoleContext) -> list[Resource]:
    out: list[Resource] = []
    if ctx.settings.docker.source == "docker-ce":
        out += [
            Directory("/etc/apt/keyrings", role=NAME, phase=PHASE_PACKAGES),
            Download(f"https://download.docker.com/linux/{ctx.facts.os}/gpg", KEYRING, role=NAME,
                     phase=PHASE_PACKAGES),
            File("/etc/apt/sources.list.d/docker.list", apt_source(ctx.facts.os, ctx.facts.codename).encode(),
                 role=NAME, phase=PHASE_PACKAGES),
        ]
    if ctx.facts.in_container:
        # Docker 26 cannot turn IPv6 off on a container's interface where /proc/sys is read-only
        # (a local droplet is itself a container): let it carry on with IPv6 left as it is.
        out += [
            Directory("/etc/systemd/system/docker.service.d", role=NAME, phase=PHASE_PACKAGES),
            File("/etc/systemd/system/docker.service.d/dropship-container.conf",
                 b"# Managed by Dropship (docker role): this host is a container.\n[Service]\n"
                 b"Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\n", role=NAME, phase=PHASE_PACKAGES,
                 notify=(DAEMON_RELOAD, restart("docker"))),
        ]
    out += [
        Directory("/etc/docker", role=NAME),
        File("/etc/docker/daemon.json", daemon_json(ctx), role=NAME, notify=(restart("docker"),)),
        Service("docker", role=NAME),
        GroupMember(ctx.deploy_user, "docker", role=NAME),
    ]
    return out


ROLE = Role(NAME, packages, resources)
