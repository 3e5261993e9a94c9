"""uv on the hosts and in the Airflow image: the pinned version, its install, the virtualenv
commands (exact strings), and a certificate failure read as one."""
import re
import subprocess
from pathlib import Path

import pytest

from provision import release as rel
from provision.build_failures import CERTIFICATE, build_failure_cause
from provision.engine.uv import (UV, UV_ENV, UV_VERSION, UvTool, export_lock_command, install_args, install_command,
                                 lock_check_argv, project_dir, seed_command, seeded_venv_commands, venv_commands)

ROOT = Path(__file__).resolve().parents[2]


def test_one_uv_version_for_the_controller_and_the_hosts():
    pins = re.findall(r"^uv==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pins == [UV_VERSION]


def test_install_command():
    assert install_command() == (
        "rm -rf /usr/local/lib/dropship/uv-0.13.9\n"
        "python3 -m venv /usr/local/lib/dropship/uv-0.13.9\n"
        "PIP_CERT=/etc/ssl/certs/ca-certificates.crt /usr/local/lib/dropship/uv-0.13.9/bin/pip install "
        "--disable-pip-version-check -q uv==0.13.9 || { rm -rf /usr/local/lib/dropship/uv-0.13.9; exit 1; }\n"
        "install -d -m 0755 /var/cache/dropship/uv")


def test_uv_tool_is_installed_once_per_version():
    tool = UvTool(role="app")
    assert tool.probe() == "/usr/local/lib/dropship/uv-0.13.9/bin/uv --version 2>/dev/null || true"
    assert tool.plan("uv 0.13.9 (x86_64-unknown-linux-gnu)\n") == []
    for facts in ("", "uv 0.12.1 (x86_64-unknown-linux-gnu)\n"):
        [change] = tool.plan(facts)
        assert change.commands == [install_command()] and change.summary.startswith("install uv 0.13.9")


def test_venv_commands_trust_the_system_store_and_quote_paths():
    assert venv_commands("/srv/shop/venvs/ab12", "/srv/shop/releases/r1/requirements/prod.txt") == (
        "UV_SYSTEM_CERTS=1 UV_CACHE_DIR=/var/cache/dropship/uv UV_NO_PROGRESS=1 /usr/local/lib/dropship/uv-0.13.9/bin/uv "
        "venv -q --seed --relocatable --python /usr/bin/python3 /srv/shop/venvs/ab12 && "
        "UV_SYSTEM_CERTS=1 UV_CACHE_DIR=/var/cache/dropship/uv UV_NO_PROGRESS=1 /usr/local/lib/dropship/uv-0.13.9/bin/uv "
        "pip install -q --compile-bytecode --python /srv/shop/venvs/ab12/bin/python "
        "-r /srv/shop/releases/r1/requirements/prod.txt")
    hostile = venv_commands("/srv/a b/v", "/srv/x/r;$(reboot)/req `x`.txt")
    assert "--python '/srv/a b/v/bin/python'" in hostile and "-r '/srv/x/r;$(reboot)/req `x`.txt'" in hostile


def test_a_new_venv_starts_from_the_newest_relocatable_one_for_this_python():
    assert seed_command("/srv/a b/venvs") == (
        'seed=; py=$(basename "$(readlink -f /usr/bin/python3)")\n'
        "for m in '/srv/a b/venvs'/*/.complete; do\n"
        '  s=${m%/.complete}\n'
        '  [ -e "$m" ] && [ -d "$s/lib/$py" ] && grep -qx "relocatable = true" "$s/pyvenv.cfg" || continue\n'
        '  { [ -z "$seed" ] || [ "$m" -nt "$seed/.complete" ]; } && seed=$s\n'
        "done")


def test_a_seeded_venv_is_linked_then_made_exactly_the_fresh_resolution():
    uv = "UV_SYSTEM_CERTS=1 UV_CACHE_DIR=/var/cache/dropship/uv UV_NO_PROGRESS=1 /usr/local/lib/dropship/uv-0.13.9/bin/uv"
    assert seeded_venv_commands('"$seed"', "/srv/shop/venvs/ab12", "/srv/shop/releases/r1/req.txt") == (
        'cp -al "$seed" /srv/shop/venvs/ab12 && rm -f /srv/shop/venvs/ab12/.complete /srv/shop/venvs/ab12/.bytecode '
        "/srv/shop/venvs/ab12/requirements.lock && touch /srv/shop/venvs/ab12/.linked && "
        f"{uv} pip install -q --exact --upgrade --python /srv/shop/venvs/ab12/bin/python "
        "-r /srv/shop/releases/r1/req.txt && "
        "{ find /srv/shop/venvs/ab12/lib -cnewer /srv/shop/venvs/ab12/.linked -name '*.py' | "
        "/srv/shop/venvs/ab12/bin/python -m compileall -q -i - >/dev/null 2>&1 || true; }")
    hostile = seeded_venv_commands('"$seed"', "/srv/a b/v", "/srv/x/r;$(reboot)/req `x`.txt")
    assert "cp -al \"$seed\" '/srv/a b/v' && " in hostile and " -r '/srv/x/r;$(reboot)/req `x`.txt' && " in hostile
    assert "{ find '/srv/a b/v'/lib -cnewer '/srv/a b/v/.linked' -name '*.py' | '/srv/a b/v/bin/python' " \
        in hostile


def test_venv_command_marks_complete_only_after_the_install():
    script = rel.venv_command("/srv/shop/venvs", "ab12", "/srv/shop/releases/r1", "requirements.txt")
    assert script == f"""
cd /srv/shop/releases/r1 || exit 1
if [ ! -e /srv/shop/venvs/ab12/.complete ]; then
  rm -rf /srv/shop/venvs/ab12
  ok=
  if [ -x {UV} ]; then
    {seed_command("/srv/shop/venvs").replace(chr(10), chr(10) + "    ")}
    if [ -n "$seed" ] && ({seeded_venv_commands('"$seed"', "/srv/shop/venvs/ab12",
                                                 "/srv/shop/releases/r1/requirements.txt")}) >/dev/null 2>&1; then
      ok=1
    else
      rm -rf /srv/shop/venvs/ab12
      {venv_commands("/srv/shop/venvs/ab12", "/srv/shop/releases/r1/requirements.txt")} && ok=1
    fi
  else
    python3 -m venv /srv/shop/venvs/ab12 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /srv/shop/venvs/ab12/bin/pip \
install --disable-pip-version-check -q \\
      -r /srv/shop/releases/r1/requirements.txt && ok=1
  fi
  if [ -n "$ok" ]; then
    rm -f /srv/shop/venvs/ab12/.gunicorn.env
    touch /srv/shop/venvs/ab12/.bytecode /srv/shop/venvs/ab12/.complete
    echo BUILT
  else
    rm -rf /srv/shop/venvs/ab12
    echo "installing requirements.txt failed (see above)"
    exit 1
  fi
elif [ ! -e /srv/shop/venvs/ab12/.bytecode ]; then
  /srv/shop/venvs/ab12/bin/python -m compileall -q -j 0 /srv/shop/venvs/ab12/lib >/dev/null 2>&1
  touch /srv/shop/venvs/ab12/.bytecode
fi
[ -e /srv/shop/venvs/ab12/.gunicorn.env ] || (
{rel.app_server_command("/srv/shop/venvs/ab12")}
) || {{ echo "adding gunicorn==27.0.1 failed (see above)"; exit 1; }}
ln -sfn /srv/shop/venvs/ab12 /srv/shop/releases/r1/.venv
/srv/shop/venvs/ab12/bin/python -m compileall -q --invalidation-mode checked-hash /srv/shop/releases/r1 >/dev/null 2>&1
true
"""


def test_app_server_command_adds_gunicorn_and_the_flags_it_takes():
    assert rel.app_server_command("/srv/shop/venvs/ab12") == f"""\
if [ ! -x /srv/shop/venvs/ab12/bin/gunicorn ]; then
  if [ -x {UV} ]; then {UV_ENV} {UV} pip install -q --compile-bytecode --python /srv/shop/venvs/ab12/bin/python \
gunicorn==27.0.1
  else PIP_CERT=/etc/ssl/certs/ca-certificates.crt /srv/shop/venvs/ab12/bin/pip install --disable-pip-version-check \
-q gunicorn==27.0.1
  fi || exit 1
fi
flags=; grep -qs -e --no-control-socket /srv/shop/venvs/ab12/lib/python3*/site-packages/gunicorn/config.py && \
flags=--no-control-socket
echo "DROPSHIP_GUNICORN_FLAGS=$flags" > /srv/shop/venvs/ab12/.gunicorn.env"""
    assert "'/srv/a b/v'/bin/gunicorn" in rel.app_server_command("/srv/a b/v")


@pytest.mark.parametrize("config, flags", [
    ("class ControlSocketDisable:\n    cli = ['--no-control-socket']\n", "--no-control-socket"),   # 25.1 on
    ("class Bind:\n    cli = ['-b', '--bind']\n", ""),                                               # older
])
def test_app_server_flags_follow_the_gunicorn_the_venv_has(tmp_path, config, flags):
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "gunicorn").write_text("#!/bin/sh\n")
    (venv / "bin" / "gunicorn").chmod(0o755)
    (venv / "lib" / "python3.13" / "site-packages" / "gunicorn").mkdir(parents=True)
    (venv / "lib" / "python3.13" / "site-packages" / "gunicorn" / "config.py").write_text(config)
    subprocess.run(["sh", "-c", rel.app_server_command(str(venv))], check=True)
    assert (venv / ".gunicorn.env").read_text() == f"DROPSHIP_GUNICORN_FLAGS={flags}\n"


def test_app_server_command_fails_when_gunicorn_cannot_be_added(tmp_path):
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pip").write_text("#!/bin/sh\nexit 1\n")      # no uv on this machine: pip, which fails
    (venv / "bin" / "pip").chmod(0o755)
    assert not Path(UV).exists()                                        # the controller is no droplet
    proc = subprocess.run(["sh", "-c", rel.app_server_command(str(venv))])
    assert proc.returncode == 1 and not (venv / ".gunicorn.env").exists()


def test_uv_certificate_failure_is_read_as_one():
    log = ("error: Request failed after 3 retries\n  Caused by: Failed to fetch: `https://pypi.org/simple/flask/`\n"
           "  Caused by: error sending request\n  Caused by: invalid peer certificate: UnknownIssuer\n")
    cause = build_failure_cause(log)
    assert cause.kind == CERTIFICATE and "invalid peer certificate: UnknownIssuer" in cause.evidence


def test_a_pyproject_installs_its_project_pinned_by_its_uv_lock():
    assert [project_dir(p) for p in ("pyproject.toml", "backend/pyproject.toml", "/srv/a/releases/r1/pyproject.toml",
                                     "requirements.txt", "x/mypyproject.toml")] == [
        ".", "backend", "/srv/a/releases/r1", None, None]
    assert install_args("/srv/a/releases/r1/requirements.txt") == "-r /srv/a/releases/r1/requirements.txt"
    assert install_args("/srv/a b/r1/pyproject.toml") == "-r '/srv/a b/r1/.dropship-locked.txt' -e '/srv/a b/r1'"
    assert export_lock_command("/srv/a/r1/requirements.txt") == ""
    assert export_lock_command("/srv/a b/r1/pyproject.toml") == (
        "rm -f '/srv/a b/r1/.dropship-locked.txt'\n"
        f"if [ -e '/srv/a b/r1'/uv.lock ] && [ -x {UV} ]; then\n"
        f"  (cd '/srv/a b/r1' && UV_SYSTEM_CERTS=1 UV_CACHE_DIR=/var/cache/dropship/uv UV_NO_PROGRESS=1 {UV} export -q "
        "--frozen --no-dev --no-hashes --no-emit-project --no-header --no-annotate --format requirements-txt "
        "-o .dropship-locked.txt) || { echo 'reading /srv/a b/r1/uv.lock failed (see above)'; exit 1; }\n"
        "else\n"
        "  : > '/srv/a b/r1/.dropship-locked.txt'\n"
        "fi")
    assert venv_commands("/v", "/r/pyproject.toml").endswith(
        "pip install -q --compile-bytecode --python /v/bin/python -r /r/.dropship-locked.txt -e /r")
    assert " --upgrade --python /v/bin/python -r /r/.dropship-locked.txt -e /r && " in \
        seeded_venv_commands('"$seed"', "/v", "/r/pyproject.toml")
    script = rel.venv_command("/srv/a/venvs", "ab12", "/srv/a/releases/r1", "backend/pyproject.toml")
    assert script.startswith("\ncd /srv/a/releases/r1 || exit 1\n"
                             + export_lock_command("/srv/a/releases/r1/backend/pyproject.toml") + "\nif [ ! -e ")
    assert "pip install --disable-pip-version-check -q \\\n      -r /srv/a/releases/r1/backend/.dropship-locked.txt " \
           "-e /srv/a/releases/r1/backend && ok=1" in script
    assert 'echo "installing backend/pyproject.toml failed (see above)"' in script


def test_the_controller_checks_a_lock_without_writing_it_or_fetching_a_python():
    assert lock_check_argv("/v/bin/uv", offline=True) == [
        "/v/bin/uv", "lock", "--check", "--no-python-downloads", "-q", "--offline"]
    assert lock_check_argv("uv", offline=False) == ["uv", "lock", "--check", "--no-python-downloads", "-q"]


def test_a_pyproject_makes_a_venv_per_release_and_its_lock_counts(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    text, local = rel.requirements_text(tmp_path, "pyproject.toml")
    assert local and b'name = "x"' in text
    (tmp_path / "uv.lock").write_text("version = 1\n")
    assert rel.requirements_text(tmp_path, "pyproject.toml") == (text + b"version = 1\n", True)
