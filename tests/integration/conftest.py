"""Integration tier: real local droplets (systemd containers with sshd) reached over real SSH.

One droplet is created and provisioned once per session and shared by the tests that only
read it or restore what they change; droplets of killed earlier runs are reaped first.
"""
from __future__ import annotations

import pytest

from tests.support import Sandbox, droplet_spec, reap_dead_runs, run_name

ROLES = ["base", "postgres", "docker", "nginx"]


@pytest.fixture(scope="session", autouse=True)
def _reap_leftovers():
    reap_dead_runs()


@pytest.fixture(scope="session")
def web(tmp_path_factory):
    """A freshly created and provisioned droplet: (sandbox, droplet, first provision's JSON)."""
    box = Sandbox(tmp_path_factory.mktemp("web"), run_name())
    box.write({box.env: {"provider": "local", "droplets": [droplet_spec("web-1", ROLES)]}})
    box.invoke("droplet.create", "--env", box.env, check=True)
    try:
        first, proc = box.provision_json()
        assert first["ok"], proc.stderr
        from provision.state import load_droplets

        droplet = load_droplets(box.environment())["web-1"]
        yield box, droplet, first
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
