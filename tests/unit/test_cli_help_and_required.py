"""Every task answers `invoke TASK --help`, and one run without a flag it needs says which, in one line."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision.cli import namespace

PROJECT = Path(__file__).resolve().parents[2]


def invoke(tmp_path, *args, inventory: str | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "inventory.yaml"
    if inventory is not None:
        path.write_text(inventory)
    env = dict(os.environ, DROPSHIP_INVENTORY=str(path))
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_help_of_every_task(tmp_path):
    names = sorted(namespace().task_names)
    assert {"provision", "deploy", "droplet.create", "airflow.test"} <= set(names)
    for name in names:
        proc = invoke(tmp_path, name, "--help")
        assert proc.returncode == 0 and proc.stderr == "", (name, proc.stdout, proc.stderr)
        assert proc.stdout.startswith(f"Usage: inv[oke] [--core-opts] {name} "), (name, proc.stdout)


INVENTORY = """\
defaults: {}
environments:
  blue_sky:
    provider: local
    droplets: [{name: a, roles: [base], size: s-1vcpu-1gb}]
  other:
    provider: local
    droplets: [{name: b, roles: [base], size: s-1vcpu-1gb}]
"""


@pytest.mark.parametrize("args, line", [
    (["deploy"], "error: --env missing (fix: pass --env with one of: blue_sky, other)"),
    (["droplet.snapshot", "--env", "blue_sky"],
     "error: --host and --name missing (fix: every option is listed by `invoke TASK --help`)"),
    (["airflow.backfill", "--env", "other", "--dag", "d", "--start", "2015-06-01"],
     "error: --end missing (fix: every option is listed by `invoke TASK --help`)"),
])
def test_a_missing_flag_is_one_line(tmp_path, args, line):
    proc = invoke(tmp_path, *args, inventory=INVENTORY)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr.splitlines() == [line]
    assert not (tmp_path / ".dropship").exists()       # nothing written before the check


def test_missing_env_without_an_inventory(tmp_path):
    proc = invoke(tmp_path, "provision")
    assert proc.stderr.splitlines() == ["error: --env missing (fix: pass --env with an environment of your inventory)"]
