"""Helpers shared by the integration tests and the benchmarks: throwaway environments of local
droplets with unique names, the CLI run as a user runs it, and cleanup of killed runs."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke", "-r", str(PROJECT)]
RUN_PREFIX = "it"                      # environment names: it<pid>x<random>
_RUN_NAME = re.compile(rf"^{RUN_PREFIX}(\d+)x[0-9a-f]+")

DEFAULTS = {
    "ssh": {"user": "deploy", "bootstrap_user": "root"},
    "timezone": "UTC",
    "firewall": {"allow": [22, 80, 443]},
    "app": {"name": "names", "database": {"name": "names", "user": "names",
                                           "password": {"secret": "app_db_password"}}},
}


def run_name() -> str:
    """A unique environment name whose pid lets later runs reap it if this one is killed."""
    return f"{RUN_PREFIX}{os.getpid()}x{secrets.token_hex(3)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs() -> int:
    """Remove droplets (containers, volumes, networks) of earlier runs whose process is gone."""
    from provision.providers.docker_engine import docker, ensure_engine
    from provision.providers.local import reap

    ensure_engine()
    envs = set(docker("ps", "-a", "--filter", "label=dropship.env", "--format",
                      '{{.Label "dropship.env"}}').stdout.split())
    removed = 0
    for env in envs:
        m = _RUN_NAME.match(env)
        if m and not _alive(int(m.group(1))):
            removed += reap({"dropship.env": env})
    return removed


@dataclass
class Sandbox:
    """A folder with its own inventory.yaml (and so its own keys, known_hosts, state, secrets)."""

    root: Path
    env: str

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    def write(self, environments: dict, defaults: dict | None = None) -> None:
        self.inventory.write_text(yaml.safe_dump({"defaults": defaults or DEFAULTS,
                                                  "environments": environments}, sort_keys=False))

    def environment(self, name: str | None = None):
        from provision.inventory import load_environment

        return load_environment(self.inventory, name or self.env)

    def invoke(self, *args: str, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run `invoke ARGS` against this sandbox's inventory, as a user would."""
        env = dict(os.environ, DROPSHIP_INVENTORY=str(self.inventory))
        proc = subprocess.run(INVOKE + list(args), cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def provision_json(self, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
        proc = self.invoke("provision", "--env", self.env, "--json", *args)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"no JSON on stdout:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(lines[-1]), proc


def droplet_spec(name: str, roles: list[str], size: str = "s-2vcpu-4gb", image: str | None = None) -> dict:
    spec = {"name": name, "size": size, "roles": roles}
    if image:
        spec["image"] = image
    return spec


def docker_exec(container: str, script: str, check: bool = True) -> str:
    """Run a shell script in a local droplet through Docker (a channel that is not SSH)."""
    proc = subprocess.run(["docker", "exec", "-i", container, "sh", "-s"], input=script, text=True,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker exec {container} failed: {proc.stderr}")
    return proc.stdout
