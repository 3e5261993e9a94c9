"""`invoke provision` against a real local droplet over real SSH.

The session's droplet (conftest `web`) was created and provisioned from scratch; these tests
check what that left on the host, that a second run changes nothing, that a dry run leaves the
host byte-for-byte unchanged, and that the failure modes end in one clear line.
"""
from __future__ import annotations

import os
import socket
import subprocess
import urllib.request

import pytest
import yaml

from provision.errors import RemoteError
from provision.redact import Redactor
from provision.transport.hostkeys import KnownHosts
from provision.transport.ssh import Target, connect
from tests.support import INVOKE, Sandbox, docker_exec
from tests.support import one_error_line, random_host_key

pytestmark = pytest.mark.integration

PACKAGES = ["sudo", "openssh-server", "ufw", "fail2ban", "unattended-upgrades", "postgresql", "docker.io",
            "docker-cli", "docker-compose", "nginx"]
SERVICES = ["ssh", "nginx", "postgresql", "docker", "fail2ban"]


def container(box: Sandbox) -> str:
    return f"dropship-{box.env}-web-1"


def session_as(box: Sandbox, droplet, user: str):
    env = box.environment()
    target = Target("web-1", droplet.address, droplet.ssh_port, (user,), env.workspace.key_path(env.name))
    return connect(target, KnownHosts(env.workspace.known_hosts_path), Redactor())






def test_fresh_provision_converges_every_role(web):
    _, _, first = web
    host = first["hosts"]["web-1"]
    assert first["ok"] and host["failed"] == 0
    assert host["changed"] >= 25
    changed = {c["resource"] for c in first["changes"]}
    for resource in ("packages", "user deploy", "firewall", "file /etc/docker/daemon.json",
                     "postgres role names", "postgres database names", "absent /etc/nginx/sites-enabled/default",
                     "file /etc/ssh/sshd_config.d/00-dropship.conf"):
        assert resource in changed
    assert {c["role"] for c in first["changes"]} >= {"base", "docker", "postgres", "nginx"}


def test_second_run_changes_nothing(web):
    box, _, _ = web
    report, _ = box.provision_json()
    assert report["ok"]
    assert report["hosts"]["web-1"]["changed"] == 0
    assert report["changes"] == []


END_STATE = r"""
dpkg-query -W -f='pkg ${Package} ${db:Status-Abbrev}\n' %(packages)s
for s in %(services)s; do echo "svc $s $(systemctl is-enabled $s) $(systemctl is-active $s)"; done
ss -ltnH | awk '{print "listen " $4}'
sudo -n sshd -T | awk '{print "sshd " $1 " " $2}'
sudo -n ufw status verbose | sed 's/^/ufw /'
stat -c 'stat %%n %%U:%%G %%a' /home/deploy/.ssh /home/deploy/.ssh/authorized_keys /etc/sudoers.d/90-dropship-deploy \
  /etc/docker/daemon.json /etc/postgresql/17/main/pg_hba.conf /etc/postgresql/17/main/conf.d/dropship.conf \
  /etc/ssh/sshd_config.d/00-dropship.conf /etc/fail2ban/jail.d/dropship.local
echo "groups $(id -nG)"
echo "docker $(docker info --format '{{.Driver}}')"
echo "compose $(docker compose version --short)"
echo "tz $(readlink /etc/localtime)"
echo "jail $(sudo -n fail2ban-client status sshd | grep -c 'Currently banned')"
PGPASSWORD="$PGPW" psql -h 127.0.0.1 -U names -d names -Atc "select 'pg ' || current_user || ' ' || current_database()"
"""


def test_end_state_over_ssh(web):
    box, droplet, _ = web
    password = yaml.safe_load((box.root / ".secrets" / f"{box.env}.yaml").read_text())["app_db_password"]
    session = session_as(box, droplet, "deploy")
    try:
        script = END_STATE % {"packages": " ".join(PACKAGES), "services": " ".join(SERVICES)}
        result = session.run("PGPW=\"$(cat)\" sh -c " + _sh_quote(script), stdin=password.encode())
    finally:
        session.close()
    out = result.stdout.splitlines()
    assert result.rc == 0, result.stderr
    for p in PACKAGES:
        assert f"pkg {p} ii " in out
    for s in SERVICES:
        assert f"svc {s} enabled active" in out
    listening = {ln.split()[1] for ln in out if ln.startswith("listen ")}
    # PostgreSQL on loopback and the private address (for hosts added later), where ufw lets no one in yet
    private = droplet.private_address
    assert {"0.0.0.0:22", "0.0.0.0:80", "127.0.0.1:5432", f"{private}:5432"} <= listening
    assert not any(addr.endswith(":5432") and not addr.startswith(("127.0.0.1", "[::1]", f"{private}:"))
                   for addr in listening)
    try:
        socket.create_connection((private, 5432), timeout=3).close()
        raise AssertionError(f"{private}:5432 let this machine in")
    except OSError:
        pass
    assert {"sshd permitrootlogin no", "sshd passwordauthentication no", "sshd pubkeyauthentication yes",
            "sshd kbdinteractiveauthentication no"} <= set(out)
    ufw = "\n".join(ln for ln in out if ln.startswith("ufw "))
    assert "Status: active" in ufw and "deny (incoming)" in ufw
    for port in ("22/tcp", "80/tcp", "443/tcp"):
        assert f"ufw {port}" in ufw.replace("  ", " ") or f"{port} " in ufw
    modes = {ln.split()[1]: ln.split()[2:] for ln in out if ln.startswith("stat ")}
    assert modes["/home/deploy/.ssh"] == ["deploy:deploy", "700"]
    assert modes["/home/deploy/.ssh/authorized_keys"] == ["deploy:deploy", "600"]
    assert modes["/etc/sudoers.d/90-dropship-deploy"] == ["root:root", "440"]
    assert modes["/etc/postgresql/17/main/pg_hba.conf"] == ["postgres:postgres", "640"]
    assert modes["/etc/docker/daemon.json"] == ["root:root", "644"]
    groups = next(ln for ln in out if ln.startswith("groups ")).split()[1:]
    assert "docker" in groups
    assert "docker overlay2" in out
    assert any(ln.startswith("compose 2.") for ln in out)
    assert "tz /usr/share/zoneinfo/UTC" in out
    assert "jail 1" in out
    assert "pg names names" in out


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_nginx_answers_over_http_and_root_login_is_refused(web):
    box, droplet, _ = web
    with urllib.request.urlopen(f"http://{droplet.address}:{droplet.port(80)}/nginx-health", timeout=10) as r:
        assert r.status == 200 and r.read() == b"ok\n"
    with urllib.request.urlopen(f"http://{droplet.address}:{droplet.port(80)}/", timeout=10) as r:
        assert b"web-1 is provisioned" in r.read()
    with pytest.raises(RemoteError, match="refused for root"):
        session_as(box, droplet, "root")


FINGERPRINT = r"""
find /etc /home /root /var/www /usr/local -xdev -type f -exec sha256sum {} + | sort -k2
find /etc /home /root /var/www /usr /var/lib/dpkg /var/lib/postgresql/17/main/global -xdev \
  -printf '%p %U:%G %m %s %l\n' 2>/dev/null | sort
systemctl list-units --type=service --state=active --no-legend --plain | awk '{print "active " $1}' | sort
runuser -u postgres -- psql -XAtc "select rolname, rolpassword from pg_authid order by 1"
runuser -u postgres -- psql -XAtc "select datname, datdba from pg_database order by 1"
ufw status verbose
"""


def test_dry_run_shows_drift_and_leaves_the_host_unchanged(web):
    box, _, _ = web
    name = container(box)
    docker_exec(name, "echo drift >> /var/www/dropship/index.html; chmod 600 /etc/docker/daemon.json; "
                      "systemctl stop fail2ban")
    before = docker_exec(name, FINGERPRINT)
    proc = box.invoke("provision", "--env", box.env, "--dry-run")
    after = docker_exec(name, FINGERPRINT)
    assert proc.returncode == 0, proc.stderr
    assert before == after
    assert "would change" in proc.stdout
    assert "-drift" in proc.stdout                          # the unified diff of the drifted file
    assert "set owner/mode of /etc/docker/daemon.json" in proc.stdout
    assert "start fail2ban" in proc.stdout
    report, _ = box.provision_json("--dry-run")
    assert report["dry_run"] and report["hosts"]["web-1"]["changed"] == 3
    assert docker_exec(name, FINGERPRINT) == before

    report, proc = box.provision_json()
    assert report["ok"] and report["hosts"]["web-1"]["changed"] == 3, (report, proc.stderr)
    report, _ = box.provision_json()
    assert report["hosts"]["web-1"]["changed"] == 0


def test_changed_host_key_is_refused(web):
    box, droplet, _ = web
    known = KnownHosts(box.environment().workspace.known_hosts_path)
    original = list(known.lookup(droplet.address, droplet.ssh_port).values())
    known.pin(droplet.address, droplet.ssh_port, [random_host_key()])
    try:
        line = one_error_line(box.invoke("provision", "--env", box.env))
        assert "web-1: connect: host key changed" in line and "fix:" in line
    finally:
        known.pin(droplet.address, droplet.ssh_port, original)


def test_unknown_host_key_needs_explicit_acceptance(web):
    box, droplet, _ = web
    known = KnownHosts(box.environment().workspace.known_hosts_path)
    original = {k.get_base64() for k in known.lookup(droplet.address, droplet.ssh_port).values()}
    known.forget(droplet.address, droplet.ssh_port)
    line = one_error_line(box.invoke("provision", "--env", box.env))
    assert "web-1" in line and "--accept-new-host-keys" in line
    report, proc = box.provision_json("--accept-new-host-keys")
    assert report["ok"] and report["hosts"]["web-1"]["changed"] == 0, proc.stderr
    pinned = {k.get_base64() for k in known.lookup(droplet.address, droplet.ssh_port).values()}
    assert pinned & original


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_and_wrong_key_end_in_one_line(web, tmp_path):
    _, droplet, _ = web
    other = Sandbox(tmp_path, "down")
    other.write({
        "down": {"provider": "local", "hosts": [
            {"name": "ghost", "address": "127.0.0.1", "port": free_port(), "roles": ["base"]}]},
        "wrongkey": {"provider": "local", "hosts": [
            {"name": "web-1", "address": droplet.address, "port": droplet.ssh_port, "roles": ["base"]}]},
    })
    from provision.keys import ensure_keypair

    ensure_keypair(other.environment("down"))
    ensure_keypair(other.environment("wrongkey"))      # a key the droplet has never seen
    line = one_error_line(other.invoke("provision", "--env", "down", "--accept-new-host-keys"))
    assert "ghost: connect: unreachable at 127.0.0.1:" in line and "connection refused" in line and "fix:" in line
    line = one_error_line(other.invoke("provision", "--env", "wrongkey", "--accept-new-host-keys"))
    assert "web-1: connect: key" in line and "refused for deploy and root" in line


def ssh_log_lines(box: Sandbox) -> int:
    return int(docker_exec(container(box), "journalctl -u ssh --no-pager -o cat | wc -l").strip())


def test_invalid_inventory_touches_no_host(web):
    box, _, _ = web
    bad = box.root / "bad-inventory.yaml"
    bad.write_text(box.inventory.read_text().replace("- nginx", "- webserver"))
    before = ssh_log_lines(box)
    proc = subprocess.run(INVOKE + ["provision", "--env", box.env], cwd=box.root, capture_output=True, text=True,
                          env=dict(os.environ, DROPSHIP_INVENTORY=str(bad)))
    line = one_error_line(proc)
    lineno = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if text.strip() == "- webserver")
    assert f"bad-inventory.yaml:{lineno}: environments.{box.env}.droplets[0].roles[3]:" in line
    assert "'webserver'" in line and "fix: use one of" in line
    assert ssh_log_lines(box) == before


def test_roles_and_hosts_narrow_the_run(web):
    box, _, _ = web
    report, _ = box.provision_json("--roles", "nginx", "--hosts", "web-1")
    assert list(report["hosts"]) == ["web-1"]
    # the nginx role (with the 4 checks that no HTTPS it no longer serves is left) and the record
    assert report["hosts"]["web-1"] == {"ok": 15, "changed": 0, "failed": 0, "skipped": 0,
                                        "seconds": report["hosts"]["web-1"]["seconds"]}
    line = one_error_line(box.invoke("provision", "--env", box.env, "--roles", "mailserver"))
    assert "unknown role 'mailserver'" in line
    line = one_error_line(box.invoke("provision", "--env", box.env, "--hosts", "web-9"))
    assert "unknown host(s) web-9" in line
