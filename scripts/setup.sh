#!/usr/bin/env bash
# Installs what Dropship needs on a Debian/Ubuntu controller (run as root, or with sudo for apt):
# the Docker engine and mmdebstrap for local droplets, the PostgreSQL server binaries for the
# app's tests, pebble (Let's Encrypt's test ACME server) for the HTTPS tests, a virtualenv with the
# pinned Python packages, and a running dockerd; with `--tests`, also chromium (the browser tests').
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)   # makes the local images' Debian rootfs (debootstrap, slower, also works)
command -v age >/dev/null 2>&1 || missing+=(age)          # decrypts backups on this machine (db.restore)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)    # the HTTPS tests' ACME server (and its test DNS server)
if [ "${1:-}" = "--tests" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)   # driven by playwright: logins in a real browser
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages (requirements.txt)"
  # uv installs them (it trusts the system's CA store, as pip does here); pip only bootstraps the
  # pinned uv, and installs everything itself where uv cannot run.
  uv_pin=$(grep -i '^uv==' requirements.txt)
  [ -x .venv/bin/uv ] || .venv/bin/pip install -q --disable-pip-version-check "$uv_pin" || true
  if [ -x .venv/bin/uv ]; then
    UV_SYSTEM_CERTS=1 .venv/bin/uv pip install -q --python .venv/bin/python -r requirements.txt
  else
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  fi
  echo "$want" > "$stamp"
fi

# Bytecode for Dropship and the packages it runs on, once: with PYTHONDONTWRITEBYTECODE set, Python
# writes none, and every command would compile its imports afresh.
.venv/bin/python scripts/compile_bytecode.py || true
# Every local droplet's systemd holds several inotify instances: Debian's 128 per user run out at
# about 18 droplets (the scale bench makes 20, beside the tests' own).
limit=/proc/sys/fs/inotify/max_user_instances
if [ "$(cat $limit 2>/dev/null || echo 1024)" -lt 1024 ]; then
  echo 1024 | $SUDO tee $limit >/dev/null 2>&1 && echo "setup: fs.inotify.max_user_instances raised to 1024" || \
    echo "setup: could not raise fs.inotify.max_user_instances (local droplets beyond about 18 will not boot)"
fi
.venv/bin/python -c 'from provision.providers.docker_engine import ensure_engine; ensure_engine()'
echo "setup: ready ($(docker version --format 'Docker engine {{.Server.Version}}'))"
