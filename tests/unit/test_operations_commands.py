"""The pure parts of status, logs, app.exec, audit and ssh: command builders by their exact
strings (run for real where a shell can), parsers on what hosts print, CI=true as --yes."""
import json
import os
import subprocess
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from provision import cli
from provision.cli_ops import status_lines
from provision.errors import DropshipError
from provision.inventory import AppSettings, DatabaseSettings, HealthSettings, load_inventory
from provision.transport.ssh import fd_chunks
from provision.workflows.operations import (MEMORY, audit_lines, exec_command, exec_shell, journal_line, line_time,
                                            logs_command, merge_logs, parse_status, since_seconds, ssh_argv,
                                            status_command)
from provision.workflows.tls import certificates_command

SHOP = AppSettings(name="shop", path="/shop", port=8010, health=HealthSettings("/up"),
                   database=DatabaseSettings("shop", "shop", None))


def test_logs_command_exact():
    assert logs_command((SHOP,), 600, False) == (
        "journalctl --no-pager -o json --output-fields=_SYSTEMD_UNIT,MESSAGE --since -600s "
        "-u shop@blue.service -u shop@green.service\n"
        "tail -n 200 /var/log/nginx/access.log 2>/dev/null | sed -u 's/^/nginx-access: /'\n"
        "tail -n 200 /var/log/nginx/error.log 2>/dev/null | sed -u 's/^/nginx-error: /'\n"
        "true\n")
    follow = logs_command((SHOP,), None, True)
    assert follow.splitlines()[0].endswith("-n 200 -u shop@blue.service -u shop@green.service -f &")
    assert "tail -n 200 -F /var/log/nginx/access.log" in follow and follow.endswith("wait\n")
    assert logs_command((), None, False).startswith("tail -n 200 /var/log/nginx/access.log")


def test_since_is_a_duration_or_refused():
    assert [since_seconds(s) for s in (None, "30s", "10m", "2h", "1d")] == [None, 30, 600, 7200, 86400]
    for bad in ("10", "0m", "-5m", "10m; reboot", "1w", ""):
        with pytest.raises(DropshipError, match="--since"):
            since_seconds(bad)


def test_journal_and_nginx_lines_merge_in_time_order_within_since():
    now = datetime(2026, 12, 2, 18, 10, tzinfo=timezone.utc)
    entry = json.dumps({"__REALTIME_TIMESTAMP": str(int(datetime(2026, 12, 2, 18, 5, 1, tzinfo=timezone.utc)
                                                        .timestamp() * 1e6)),
                        "_SYSTEMD_UNIT": "shop@green.service", "MESSAGE": [104, 105, 255]})
    assert journal_line(entry) == "2026-12-02T18:05:01Z shop@green.service: hi\ufffd"
    output = "\n".join([
        entry,
        "nginx-access: 10.0.0.1 - - [02/Dec/2026:19:05:00 +0100] \"GET / HTTP/1.1\" 200 5",   # 18:05:00 UTC
        "nginx-error: 2026/12/02 18:06:00 [error] 1#1: boom",
        "    a continuation line",
        "nginx-access: 10.0.0.1 - - [02/Dec/2026:17:00:00 +0000] \"GET /old HTTP/1.1\" 200 5",   # before --since
        "-- No entries --",
    ])
    assert merge_logs(output, 600, now) == [
        "nginx-access: 10.0.0.1 - - [02/Dec/2026:19:05:00 +0100] \"GET / HTTP/1.1\" 200 5",
        "2026-12-02T18:05:01Z shop@green.service: hi\ufffd",
        "nginx-error: 2026/12/02 18:06:00 [error] 1#1: boom",
        "    a continuation line"]
    assert line_time("no time here") is None


def test_status_command_and_parser():
    script = status_command((SHOP,), airflow=True)
    assert "r=$(readlink /srv/shop/slots/blue 2>/dev/null)" in script
    assert "curl -s -o /dev/null -w '%{http_code}' --max-time 3 http://127.0.0.1:8011/shop/up" in script
    assert "ls -t /var/backups/dropship/shop" in script and MEMORY in script
    assert "docker compose --project-directory /srv/airflow -p airflow ps -a --format json" in script
    assert script.endswith(certificates_command())
    out = textwrap.dedent("""\
        app shop blue live 20261202T010203Z-abc 200
        app shop green warm 20261201T010203Z-def 502
        backup shop pre-20261202T010203Z-abc.dump 1000
        disk 41% 1048576
        memory 4194304 1048576
        [{"Service": "airflow-scheduler", "State": "running", "Health": "healthy"}, {"Service": "airflow-init"}]
        cert|shop.example.com|live|Jan 11 00:00:00 1970 GMT|shop.example.com |CN=Pebble Intermediate CA 1a2b
        renew|Result=exit-code
        renew|ExecMainStatus=1
        renew|ExecMainExitTimestamp=Thu 1970-01-01 01:00:00 UTC
        """)
    st = parse_status(out, now=4600)
    assert st == {"apps": {"shop": [{"slot": "blue", "role": "live", "release": "20261202T010203Z-abc", "health": 200},
                                    {"slot": "green", "role": "warm", "release": "20261201T010203Z-def",
                                     "health": 502}]},
                  "backups": {"shop": {"name": "pre-20261202T010203Z-abc.dump", "age_s": 3600}},
                  "airflow": [{"service": "airflow-scheduler", "state": "running", "health": "healthy"}],
                  "disk": {"used_pct": 41, "free_mb": 1024}, "memory": {"total_mb": 4096, "used_mb": 1024},
                  "tls": {"certificates": [{"name": "shop.example.com", "names": ["shop.example.com"],
                                            "state": "live", "expires": "1970-01-11T00:00:00+00:00", "days_left": 9,
                                            "issuer": "CN=Pebble Intermediate CA 1a2b"}],
                          "renewal": {"result": "exit-code", "exit_status": 1,
                                      "last_run": "Thu 1970-01-01 01:00:00 UTC"}}}
    assert status_lines({"web-1": st, "web-2": {"error": "web-2: connect: unreachable"}}) == [
        "web-1: disk 41% used (1024 MB free), memory 1024 of 4096 MB used",
        "  shop: live 20261202T010203Z-abc in blue, healthy",
        "  shop: warm 20261201T010203Z-def in green, UNHEALTHY (HTTP 502)",
        "  backup of shop: pre-20261202T010203Z-abc.dump, 1h ago",
        "  airflow: airflow-scheduler running (healthy)",
        "  certificate shop.example.com: expires 1970-01-11 (9 days), CN=Pebble Intermediate CA 1a2b",
        "  renewal: exit-code at Thu 1970-01-01 01:00:00 UTC",
        "web-2: unreachable: web-2: connect: unreachable"]


def test_the_memory_probe_runs_on_this_machine():
    out = subprocess.run(["sh", "-c", MEMORY], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "memory" and int(out[1]) > int(out[2]) > 0


def test_exec_command_keeps_words_or_takes_a_command_line(tmp_path: Path):
    assert exec_command("/srv/shop/releases/r1", "shop", ["flask", "--app", "wsgi", "fix", "a b"]) == (
        "cd /srv/shop/releases/r1 && export USER=shop LOGNAME=shop && set -a && . ./.env && set +a && "
        "PATH=/srv/shop/releases/r1/.venv/bin:$PATH HOME=/tmp setpriv --reuid=shop --regid=shop --init-groups sh -c "
        "'flask --app wsgi fix '\"'\"'a b'\"'\"''")
    assert exec_command("/srv/r1", "shop", ["echo $HOME | wc -c"]).endswith("sh -c 'echo $HOME | wc -c'")
    (tmp_path / ".env").write_text('MARK="from the env"\n')
    hostile = "it's $(touch CANARY) `touch CANARY`; \"q\""
    script = exec_command(str(tmp_path), "root", ["sh", "-c", 'echo "$MARK"; printf "%s\\n" "$1"', "x", hostile])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert out == f"from the env\n{hostile}\n" and not (tmp_path / "CANARY").exists()


def test_exec_shell_is_one_command_with_stderr_merged(tmp_path: Path):
    assert exec_shell("/srv/r1", "shop", ["echo $HOME | wc -c"]) == (
        "sh -c 'exec 2>&1; cd /srv/r1 && export USER=shop LOGNAME=shop && set -a && . ./.env && set +a && "
        "PATH=/srv/r1/.venv/bin:$PATH HOME=/tmp setpriv --reuid=shop --regid=shop --init-groups sh -c "
        "'\"'\"'echo $HOME | wc -c'\"'\"''")
    (tmp_path / ".env").write_text('USER=from-the-env\n')          # the app's own value wins, as in its unit
    hostile = "a'b; $(touch CANARY)\n\"c\""
    script = exec_shell(str(tmp_path), "root", ["sh", "-c", 'echo "$USER $LOGNAME"; echo "$1" >&2; read -r x; '
                                                "echo got $x", "x", hostile])
    out = subprocess.run(["sh", "-c", script], input="typed\n", capture_output=True, text=True, check=True)
    assert (out.stdout, out.stderr) == (f"from-the-env root\n{hostile}\ngot typed\n", "")
    assert not (tmp_path / "CANARY").exists()


def test_fd_chunks_passes_a_pipe_on_and_says_when_it_is_quiet():
    read, write = os.pipe()
    chunks = fd_chunks(read, wait=0.01)
    assert next(chunks) == b""                                        # nothing yet: the caller may look again
    os.write(write, b"abc")
    assert next(chunks) == b"abc"
    os.close(write)
    assert list(chunks) == []                                         # its end ends them
    os.close(read)


def test_audit_lines_are_keyed_by_their_time():
    rows = audit_lines("web-1", "shop 2026-12-02T10:00:00Z me@x deploy r1 ok\nshop \nblog 2026-12-01T09:00:00Z a rollback r0 ok")
    assert rows == [("2026-12-02T10:00:00Z", "[web-1] shop: 2026-12-02T10:00:00Z me@x deploy r1 ok"),
                    ("2026-12-01T09:00:00Z", "[web-1] blog: 2026-12-01T09:00:00Z a rollback r0 ok")]


def test_ssh_argv_pins_the_host_key(tmp_path: Path):
    (tmp_path / "inventory.yaml").write_text(textwrap.dedent("""\
        environments:
          staging:
            provider: digitalocean
            token: {env: DO_TOKEN_FOR_TESTS}
            hosts:
              - {name: db-1, address: 203.0.113.9, port: 2222, roles: [base]}
        """))
    env = load_inventory(tmp_path / "inventory.yaml")["staging"]
    argv = ssh_argv(env, env.host("db-1"), ["id", "-un"])
    assert argv == ["ssh", "-i", str(env.workspace.key_path("staging")), "-p", "2222",
                    "-o", f"UserKnownHostsFile={env.workspace.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "deploy@203.0.113.9", "id", "-un"]
    assert "BatchMode=yes" not in ssh_argv(env, env.host("db-1"), [])
    assert ssh_argv(env, env.host("db-1"), ["sudo -n sh -c 'python'"], tty=True)[-3:] == [
        "-t", "deploy@203.0.113.9", "sudo -n sh -c 'python'"]


def test_ci_true_answers_prompts_as_yes(monkeypatch):
    monkeypatch.setenv("CI", "true")
    cli._confirm("Destroy? ", "staging")                # no terminal, no prompt: goes on
    monkeypatch.setenv("CI", "")
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    with pytest.raises(DropshipError, match="pass --yes"):
        cli._confirm("Destroy? ", "staging")


def test_status_shows_the_lbs_upstream_and_a_host_left_drained():
    from provision import balancer

    assert status_command((), False, lb=True).startswith(
        "sed 's/^/lb-upstream /' /etc/nginx/dropship/lb-upstream.conf 2>/dev/null\n")
    assert "lb-upstream" not in status_command((), False)
    upstream = balancer.upstream_file(balancer.backends(["web-1", "web-2"], {"web-1": "10.1.0.3", "web-2": "10.1.0.4"},
                                                        down=("web-1",))).decode()
    out = "".join(f"lb-upstream {line}\n" for line in upstream.splitlines()) + "disk 41% 1048576\n"
    st = parse_status(out, now=0)
    assert st["upstream"] == [{"host": "web-1", "address": "10.1.0.3", "serving": False},
                              {"host": "web-2", "address": "10.1.0.4", "serving": True}]
    assert status_lines({"lb-1": st})[1] == (
        "  upstream: web-1 DRAINED, web-2 serving (left drained by a deploy, rollback or resize that did not "
        "finish: run it again to put it back)")
    st["upstream"][0]["serving"] = True
    assert status_lines({"lb-1": st})[1] == "  upstream: web-1 serving, web-2 serving"
    empty = parse_status("".join(f"lb-upstream {ln}\n" for ln in balancer.upstream_file([]).decode().splitlines()), 0)
    assert status_lines({"lb-1": empty})[1] == "  upstream: no web host yet (its placeholder answers 503)"
    assert "upstream" not in parse_status("disk 41% 1048576\n", 0)
