"""Local droplets that already hold the Airflow image.

A template of a droplet's /var/lib/docker with an environment's Airflow image loaded is made once
per machine and image (a throwaway dockerd from the warm droplet image loads ``docker save``), and
linked into a droplet's Docker volume before ``droplet.create`` (which keeps a volume already
there). For fixtures whose tests are not about shipping the image: here shipping takes about 25 s a
droplet, the links well under one. Provision finds the image on the host, as on any host that has it
already; shipping itself is tested in test_airflow_image_build.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import time

TEMPLATE_LABEL = "dropship.test-template"
MARKER = ".dropship-template"
# the image store only: the rest (networks above all: the template's dockerd ran on this machine's
# network, so its bridge took another range) the droplet's dockerd makes afresh, as on any host
STORE = ["image", "overlay2"]
# what a local droplet may do (provision.providers.local.run_args), enough for its dockerd
DROPLET_RIGHTS = ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
                  "--security-opt", "apparmor=unconfined", "--tmpfs", "/run", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]


def template_volume(env) -> str:
    """The name of the template volume holding ``env``'s Airflow image (built here first if needed)."""
    from provision.airflow_image import build, image_id
    from provision.providers.local_image import build_lock
    from tests.support import warm_image

    tag, warm = build(env).tag, warm_image()
    name = "dropship-test-airflow-" + hashlib.sha256(f"{tag} {image_id(warm)}".encode()).hexdigest()[:12]
    if not _complete(name):
        with build_lock(what="the droplet volume holding the Airflow image"):
            if not _complete(name):
                _make(name, tag, warm)
    return name


def seed(env_name: str, template: str, *droplets: str) -> None:
    """Link ``template``'s image store into the Docker volume of each of ``droplets`` (names in
    ``env_name``), labelled as the local provider labels it (so that reaping a killed run removes it).
    Hard links, as the volumes share this machine's disk: a dockerd writes no stored layer in place
    (it unlinks, or replaces a file by renaming a new one over it), so the template stays intact."""
    from provision.providers.docker_engine import docker
    from provision.providers.local import volume_labels, volume_name

    source = _mountpoint(template)
    for droplet in droplets:
        volume = volume_name(env_name, droplet)
        docker("volume", "create", *volume_labels(env_name, droplet), volume)
        subprocess.run(["cp", "-al", *(f"{source}/{part}" for part in STORE), _mountpoint(volume) + "/"],
                       check=True, capture_output=True, timeout=600)


def _mountpoint(volume: str, check: bool = True) -> str:
    """Where ``volume``'s files are on this machine ('' when there is no such volume, unless ``check``)."""
    from provision.providers.docker_engine import docker

    return docker("volume", "inspect", "--format", "{{.Mountpoint}}", volume, check=check).stdout.strip()


def _complete(name: str) -> bool:
    where = _mountpoint(name, check=False)
    return bool(where) and os.path.exists(f"{where}/{MARKER}")


def _make(name: str, tag: str, warm: str) -> None:
    """A dockerd of the warm image on the new volume loads ``tag``; synced, removed; marked complete
    last. First removed: a half-made one, helpers of killed runs, and templates of images gone."""
    from provision.providers.docker_engine import docker, image_exists

    for old in docker("ps", "-aq", "--filter", f"label={TEMPLATE_LABEL}").stdout.split():
        docker("rm", "-f", old, check=False)
    docker("volume", "rm", "-f", name, check=False)
    for old in docker("volume", "ls", "-q", "--filter", f"label={TEMPLATE_LABEL}").stdout.split():
        of = docker("volume", "inspect", "--format", f'{{{{index .Labels "{TEMPLATE_LABEL}"}}}}', old, check=False)
        if not image_exists(of.stdout.strip()):
            docker("volume", "rm", "-f", old, check=False)
    docker("volume", "create", "--label", f"{TEMPLATE_LABEL}={tag}", name)
    helper = f"dropship-test-template-{os.getpid()}"
    docker("run", "-d", "--name", helper, "--label", f"{TEMPLATE_LABEL}={tag}", *DROPLET_RIGHTS,
           "-v", f"{name}:/var/lib/docker", "--entrypoint", "dockerd", warm)
    try:
        deadline = time.monotonic() + 120
        while docker("exec", helper, "docker", "info", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the template's dockerd did not start: {docker('logs', helper, check=False).stderr}")
            time.sleep(0.5)
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", helper, "docker", "load", "-q"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=900)
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"loading {tag} into the template failed: {load.stderr[-2000:]}")
        docker("exec", helper, "sync")          # loaded means committed (this dockerd ignores SIGTERM)
    finally:
        docker("rm", "-f", helper, check=False)
    open(f"{_mountpoint(name)}/{MARKER}", "w").close()
