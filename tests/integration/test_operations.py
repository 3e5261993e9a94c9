"""Day-to-day operations against a real local droplet (the session's app stack: names, guestbook and
Airflow): status, logs, ssh, app.exec and audit, with secrets masked in everything they print."""
from __future__ import annotations

import os
import secrets
import subprocess
import urllib.error
import urllib.request

import pytest

from provision.transport.hostkeys import KnownHosts
from tests.support import (INVOKE, Browser, guestbook_page, last_json, one_error_line, random_host_key,
                           sandbox_secret, sign)

pytestmark = pytest.mark.integration


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def no_secret(stack, proc) -> None:
    text = proc.stdout + proc.stderr
    for name in ("guestbook_secret", "guestbook_db_password", "app_db_password", "airflow_admin_password"):
        assert sandbox_secret(stack.box, name) not in text, name


def test_status_shows_releases_health_backups_airflow_disk_and_memory(app_stack):
    proc = ok(app_stack.box.invoke("status", "--env", app_stack.box.env, "--json"))
    st = last_json(proc)["web-1"]
    for app in ("names", "guestbook"):
        live = [s for s in st["apps"][app] if s["role"] == "live"]
        assert len(live) == 1 and live[0]["health"] == 200 and live[0]["release"], st["apps"]
    assert {s["service"] for s in st["airflow"]} == {"airflow-apiserver", "airflow-scheduler",
                                                     "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
    assert all(s["state"] == "running" for s in st["airflow"])
    assert st["memory"]["total_mb"] == 4096 and 0 < st["memory"]["used_mb"] < 4096    # the droplet's, not the machine's
    assert 0 < st["disk"]["used_pct"] <= 100
    assert st["backups"]["names"]["name"].startswith("pre-")         # the dump taken before the migrations
    text = ok(app_stack.box.invoke("status", "--env", app_stack.box.env)).stdout
    assert "names: live" in text and "healthy" in text and "airflow: airflow-scheduler running" in text
    no_secret(app_stack, proc)


def test_logs_merge_the_slots_and_nginx_with_the_host_in_front(app_stack):
    marker = f"/ops-{secrets.token_hex(4)}"
    base = f"http://{app_stack.info.address}:{app_stack.info.port(80)}"
    for path in (marker, "/guestbook" + marker):
        try:
            urllib.request.urlopen(base + path, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    proc = ok(app_stack.box.invoke("logs", "--env", app_stack.box.env, "--since", "10m"))
    lines = proc.stdout.splitlines()
    assert lines and all(ln.startswith("[web-1] ") for ln in lines)
    assert any("nginx-access: " in ln and marker in ln for ln in lines)
    assert any("names@" in ln for ln in lines) and any("guestbook@" in ln for ln in lines)
    only = ok(app_stack.box.invoke("logs", "--env", app_stack.box.env, "--app", "guestbook", "--since", "10m"))
    assert not any("names@" in ln for ln in only.stdout.splitlines())
    bad = app_stack.box.invoke("logs", "--env", app_stack.box.env, "--since", "10m; reboot")
    assert bad.returncode == 1 and bad.stderr.count("error:") == 1 and "--since" in bad.stderr
    no_secret(app_stack, proc)


def test_app_exec_runs_in_the_live_release_as_the_app_user_and_passes_the_exit_status_on(app_stack):
    env = app_stack.box.env
    proc = ok(app_stack.box.invoke("app.exec", "--env", env, "--app", "guestbook", "--command",
                                   "id -un; printenv DROPSHIP_RELEASE; python -c 'import guestbook, sys; "
                                   "print(sys.prefix)'; printenv GUESTBOOK_SECRET"))
    user, release, prefix, secret = proc.stdout.strip().splitlines()[-4:]
    live = [s for s in last_json(app_stack.box.invoke("status", "--env", env, "--json"))["web-1"]["apps"]["guestbook"]
            if s["role"] == "live"][0]
    assert (user, release) == ("guestbook", live["release"])
    assert prefix == f"/srv/guestbook/releases/{release}/.venv"
    assert secret != sandbox_secret(app_stack.box, "guestbook_secret") and "*" in secret    # masked
    failed = app_stack.box.invoke("app.exec", "--env", env, "--app", "names", "--command", "echo out; exit 7")
    assert failed.returncode == 7 and "out" in failed.stdout
    several = app_stack.box.invoke("app.exec", "--env", env, "--command", "true")
    assert several.returncode == 1 and "pass --app" in several.stderr


def test_app_exec_passes_stdin_on_and_ends_when_the_command_does(app_stack):
    box = app_stack.box
    script = "import os, pwd\nprint('as', pwd.getpwuid(os.getuid()).pw_name, os.environ['USER'], 6 * 7)\n"
    proc = ok(box.invoke("app.exec", "--env", box.env, "--app", "guestbook", "--", "python", "-", input=script))
    assert proc.stdout.splitlines()[-1] == "as guestbook guestbook 42"
    data = secrets.token_hex(150_000)                                   # 300 kB: many SSH windows
    counted = ok(box.invoke("app.exec", "--env", box.env, "--app", "names", "--command", "wc -c", input=data))
    assert counted.stdout.split() == [str(len(data))]
    # An input that never ends (a pipe nobody closes) does not hold a command that does not read it.
    with subprocess.Popen([*INVOKE, "app.exec", "--env", box.env, "--app", "names", "--", "echo", "done"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=box.root,
                          env=dict(os.environ, DROPSHIP_INVENTORY=str(box.inventory))) as never:
        assert never.stdout.read().splitlines()[-1] == "done" and never.wait(timeout=60) == 0


def test_app_exec_in_a_terminal_is_an_interactive_session(app_stack):
    box = app_stack.box
    rc, shown = box.invoke_in_terminal(
        ["app.exec", "--env", box.env, "--app", "guestbook", "--", "python", "-q"],
        [(">>> ", "import os, pwd; print('as', pwd.getpwuid(os.getuid()).pw_name, os.isatty(0), 6 * 7)\r"),
         ("as guestbook True 42", "raise SystemExit(5)\r")])
    assert rc == 5 and "as guestbook True 42" in shown, shown[-2000:]


def test_db_backup_and_restore_of_one_app_among_several(app_stack):
    box = app_stack.box
    browser = Browser(f"http://{app_stack.info.address}:{app_stack.info.port(80)}")
    names = browser.page()[1]
    proc = ok(box.invoke("db.backup", "--env", box.env))
    paths = [ln for ln in proc.stdout.splitlines() if ln.startswith("/var/backups/")]
    assert [p.rsplit("/", 2)[1] for p in paths] == ["names", "guestbook"]       # every app's database
    assert proc.stdout.splitlines()[-1].startswith("recap: 2 database(s) dumped on web-1 in ")
    name = paths[1].rsplit("/", 1)[1]
    listed = last_json(box.invoke("db.backups", "--env", box.env, "--json"))
    assert {(b["database"], b["name"]) for b in listed} >= {("names", name), ("guestbook", name)}
    assert {b["database"] for b in last_json(box.invoke("db.backups", "--env", box.env, "--app", "guestbook",
                                                        "--json"))} == {"guestbook"}
    assert sign(browser, "Temp", "written after the dump") in (302, 303)
    assert "written after the dump" in " ".join(guestbook_page(browser)[2])
    refused = box.invoke("db.restore", "--env", box.env, "--file", name, "--yes")
    assert one_error_line(refused) == ("error: environment " + box.env + " has several app databases: names, "
                                       "guestbook (fix: pass --app NAME)")
    ok(box.invoke("db.restore", "--env", box.env, "--file", name, "--app", "guestbook", "--yes"))
    entries = " ".join(guestbook_page(browser)[2])
    assert "written after the dump" not in entries and all(m in entries for _, m in app_stack.ENTRIES)
    assert browser.page()[1] == names                                   # the other app's database untouched


def test_ssh_is_the_deploy_user_with_the_pinned_key_only(app_stack):
    env = app_stack.box.env
    proc = ok(app_stack.box.invoke("ssh", "--env", env, "--command", "id -un; sudo -n true && echo sudo-ok"))
    assert proc.stdout.split() == ["deploy", "sudo-ok"]
    d = app_stack.info
    known = KnownHosts(app_stack.box.environment().workspace.known_hosts_path)
    original = list(known.lookup(d.address, d.ssh_port).values())
    known.pin(d.address, d.ssh_port, [random_host_key()])
    try:
        refused = app_stack.box.invoke("ssh", "--env", env, "--command", "true")
        assert refused.returncode == 255 and "IDENTIFICATION HAS CHANGED" in refused.stderr.upper(), refused.stderr
    finally:
        known.pin(d.address, d.ssh_port, original)


def test_audit_merges_every_app_in_time_order(app_stack):
    lines = ok(app_stack.box.invoke("audit", "--env", app_stack.box.env)).stdout.splitlines()
    apps = {ln.split(" ", 2)[1].rstrip(":") for ln in lines}
    assert {"names", "guestbook"} <= apps and all(ln.startswith("[web-1] ") for ln in lines)
    times = [ln.split(" ", 3)[2] for ln in lines]
    assert times == sorted(times) and all(" deploy " in ln for ln in lines[:2])
