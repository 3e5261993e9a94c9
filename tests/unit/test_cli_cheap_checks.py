"""`invoke deploy` checks the token, the droplets, the pinned host keys and the SSH key first:
one error line, before any image build, upload or connection."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision.inventory import load_environment
from provision.providers.base import Droplet
from provision.state import save_droplets

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "inventory.yaml").write_text((PROJECT / "inventory.yaml").read_text())
    (tmp_path / "app_src").symlink_to(PROJECT / "app_src")
    return tmp_path


def deploy(checkout: Path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DIGITALOCEAN_TOKEN"}
    environ.update(DROPSHIP_INVENTORY=str(checkout / "inventory.yaml"), **env)
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT), "deploy", "--env", "staging"],
                          cwd=checkout, env=environ, capture_output=True, text=True, timeout=60)


def only_error(proc) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert "build" not in text.lower() and "[staging-web-1]" not in text, text    # nothing built or touched
    [line] = [ln for ln in text.splitlines() if ln.strip()]
    return line


def test_token_first(checkout):
    line = only_error(deploy(checkout))
    assert line == ("error: inventory.yaml:58 environments.staging.token: environment variable DIGITALOCEAN_TOKEN "
                    "is not set (fix: export DIGITALOCEAN_TOKEN=...)")


def test_then_the_droplets(checkout):
    line = only_error(deploy(checkout, DIGITALOCEAN_TOKEN="dop_v1_fake"))
    assert line.startswith("error: staging-web-1: no droplet yet in environment staging")


def test_then_the_pinned_host_key(checkout):
    env = load_environment(checkout / "inventory.yaml", "staging")
    save_droplets(env, {"staging-web-1": Droplet("staging-web-1", "1", "active", "192.0.2.10")}, set())
    line = only_error(deploy(checkout, DIGITALOCEAN_TOKEN="dop_v1_fake"))
    assert line.startswith("error: staging-web-1: no pinned host key for 192.0.2.10:22 (fix: ")


@pytest.mark.parametrize("to", ["../../etc", "$(touch /tmp/x)", "20261125T010203Z-1a2b3c4d\nx", "latest"])
def test_rollback_to_something_that_is_not_a_release_id(checkout, to):
    environ = {k: v for k, v in os.environ.items() if k != "DIGITALOCEAN_TOKEN"}
    environ.update(DROPSHIP_INVENTORY=str(checkout / "inventory.yaml"))
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT), "rollback", "--env", "staging",
                           "--to", to], cwd=checkout, env=environ, capture_output=True, text=True, timeout=60)
    assert only_error(proc) == (f"error: --to {to!r} is not a release id like 20261125T010203Z-1a2b3c4d "
                                "(fix: use one listed by `invoke releases --env staging`)")
