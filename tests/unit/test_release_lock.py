"""The deploy lock by its exact strings, and run for real with /bin/sh in a temporary folder (two
holders, a stale holder, a lost client's step still ending, waiting then taking over); and the
root shell's watchdog ending a step whose session process is gone."""
import json
import os
import subprocess
import sys
import time

import pytest

from provision import release as rel
from provision.transport.ssh import WATCHDOG_COMMAND

HOLDER = {"by": "alice@laptop", "since": "2026-01-02T03:04:05Z", "action": "deploy", "what": "r1"}


def test_lock_command_exact():
    assert rel.lock_command("/srv/my app/.lock", HOLDER) == (
        "\n"
        "lock='/srv/my app/.lock'\n"
        'mine="$lock.new.$$"\n'
        'field() { s=; { read -r s < "/proc/$1/stat"; } 2>/dev/null; n=$2; set -- ${s##*) }; v=; '
        '[ $# -ge "$n" ] || return 1; shift $((n - 1)); v=$1; }\n'
        'alive() { [ -n "$1" ] && [ -n "$2" ] && field "$1" 1 && [ "$v" != Z ] && field "$1" 20 && [ "$v" = "$2" ]; }\n'
        'rm -rf "$mine"; mkdir -p "$mine"\n'
        "printf '%s\\n' '" + json.dumps(HOLDER) + "' > \"$mine/holder\"\n"
        'field $$ 20; echo "$$ $v" > "$mine/shell"\n'
        "field $$ 2; p=$v\n"
        'while [ -n "$p" ] && [ "$p" -gt 1 ]; do\n'
        '  c=; { read -r c < "/proc/$p/comm"; } 2>/dev/null\n'
        '  case $c in sshd*) field "$p" 20; echo "$p $v" > "$mine/session"; break;; esac\n'
        '  field "$p" 2; p=$v\n'
        "done\n"
        "t0=$(date +%s); tries=0\n"
        'while [ "$tries" -lt 5 ]; do\n'
        '  if mv -T "$mine" "$lock" 2>/dev/null; then echo LOCKED_BY_ME; exit 0; fi\n'
        '  pid=""; start=""; spid=""; sstart=""\n'
        '  { read -r pid start < "$lock/shell"; } 2>/dev/null\n'
        '  { read -r spid sstart < "$lock/session"; } 2>/dev/null\n'
        '  word=""\n'
        '  if alive "$pid" "$start"; then\n'
        "    word=WAIT; limit=0\n"
        '    if [ -n "$spid" ] && ! alive "$spid" "$sstart"; then word=ENDING; [ "$limit" -ge 20 ] || limit=20; fi\n'
        '  elif [ -z "$pid" ] && [ -d "$lock" ] && [ -z "$(find "$lock" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then\n'
        "    word=WAIT; limit=0     # no shell: made by hand just now\n"
        "  fi\n"
        '  if [ -n "$word" ]; then\n'
        '    left=$((t0 + limit - $(date +%s)))\n'
        '    [ "$left" -gt 0 ] || break\n'
        '    echo "$word $left $(cat "$lock/holder" 2>/dev/null)"; sleep 1; continue\n'
        "  fi\n"
        "  tries=$((tries + 1))\n"
        '  if mv -T "$lock" "$lock.stale.$$" 2>/dev/null; then\n'
        '    echo "STALE $(cat "$lock.stale.$$/holder" 2>/dev/null)"; rm -rf "$lock.stale.$$"\n'
        "  fi\n"
        "done\n"
        'rm -rf "$mine"; echo "LOCKED $(cat "$lock/holder" 2>/dev/null)"; exit 3\n')


def test_lock_command_waits():
    plain = rel.lock_command("/l", HOLDER)
    waiting = rel.lock_command("/l", HOLDER, wait=90.2, ending=5)
    assert waiting == plain.replace("limit=0", "limit=91").replace("-ge 20 ] || limit=20", "-ge 5 ] || limit=5")
    assert rel.lock_command("/l", HOLDER, 0) == plain


def test_lock_holder_alive_command_exact():
    assert rel.lock_holder_alive_command("/srv/a b/.lock") == (
        "{ read -r pid start < '/srv/a b/.lock'/shell; } 2>/dev/null && [ -r /proc/$pid/stat ] && "
        "[ \"$(cut -d' ' -f22 /proc/$pid/stat)\" = \"$start\" ]")


# --- run for real -------------------------------------------------------------------------------------

class Shell:
    """A long-lived /bin/sh fed scripts the way Session.script does: `( script ) </dev/null 2>&1`."""

    def __init__(self):
        self.proc = subprocess.Popen(["/bin/sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, script: str) -> tuple[int, list[str]]:
        self.proc.stdin.write(f"(\n{script}\n) </dev/null 2>&1\necho \"@@end $?\"\n")
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            if line.startswith("@@end "):
                return int(line.split()[1]), lines
            lines.append(line.rstrip("\n"))
        raise AssertionError(f"shell ended: {lines}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def started(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def shells():
    made: list[Shell] = []

    def make() -> Shell:
        made.append(Shell())
        return made[-1]
    yield make
    for shell in made:
        if shell.proc.poll() is None:
            shell.close()


def holder(n: int) -> dict:
    return {**HOLDER, "what": f"r{n}"}


def test_two_holders_then_the_first_ends(tmp_path, shells):
    lock = str(tmp_path / ".lock")
    first, second = shells(), shells()
    assert first.run(rel.lock_command(lock, holder(1))) == (0, ["LOCKED_BY_ME"])
    assert open(f"{lock}/shell").read().split() == [str(first.proc.pid), started(first.proc.pid)]
    assert second.run(rel.lock_command(lock, holder(2))) == (3, [f"LOCKED {json.dumps(holder(1))}"])
    assert sorted(os.listdir(tmp_path)) == [".lock"]          # the refused run left nothing behind
    first.close()                                            # its root shell is gone: the lock is stale
    assert second.run(rel.lock_command(lock, holder(2))) == (0, [f"STALE {json.dumps(holder(1))}", "LOCKED_BY_ME"])
    assert json.loads(open(f"{lock}/holder").read()) == holder(2)
    assert sorted(os.listdir(tmp_path)) == [".lock"]


def test_a_live_holder_is_waited_for_then_the_wait_ends(tmp_path, shells):
    lock = str(tmp_path / ".lock")
    first, second = shells(), shells()
    first.run(rel.lock_command(lock, holder(1)))
    started_at = time.monotonic()
    rc, lines = second.run(rel.lock_command(lock, holder(2), wait=2))
    assert (rc, lines[-1]) == (3, f"LOCKED {json.dumps(holder(1))}")
    assert lines[:-1] and all(ln.startswith("WAIT ") and ln.endswith(json.dumps(holder(1))) for ln in lines[:-1])
    assert lines[0].split()[1] in ("1", "2")
    assert 1.5 < time.monotonic() - started_at < 5


def test_wait_then_take_over_when_the_holder_ends(tmp_path, shells):
    lock = str(tmp_path / ".lock")
    first, second = shells(), shells()
    first.run(rel.lock_command(lock, holder(1)))
    second.proc.stdin.write(f"(\n{rel.lock_command(lock, holder(2), wait=30)}\n) </dev/null 2>&1\necho \"@@end $?\"\n")
    second.proc.stdin.flush()
    time.sleep(1.5)
    first.close()
    lines = []
    for line in second.proc.stdout:
        if line.startswith("@@end "):
            assert line.split()[1] == "0"
            break
        lines.append(line.rstrip("\n"))
    # seconds left counted from the lock's start: a second may pass before its first line on a busy machine
    assert lines[0].split()[:2] in (["WAIT", "30"], ["WAIT", "29"]), lines
    assert lines[-2:] == [f"STALE {json.dumps(holder(1))}", "LOCKED_BY_ME"], lines


def lost_client_lock(lock: str, step: subprocess.Popen) -> None:
    """A lock left by a lost client: its root shell (``step``) runs, its session process is gone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    os.mkdir(lock)
    open(f"{lock}/holder", "w").write(json.dumps(holder(1)) + "\n")
    open(f"{lock}/shell", "w").write(f"{step.pid} {started(step.pid)}\n")
    open(f"{lock}/session", "w").write(f"{gone.pid} 1\n")


def test_a_lost_clients_step_is_waited_for_even_without_wait(tmp_path, shells):
    lock = str(tmp_path / ".lock")
    step = subprocess.Popen(["sleep", "30"])
    try:
        lost_client_lock(lock, step)
        rc, lines = shells().run(rel.lock_command(lock, holder(2), ending=2))
        assert (rc, lines[-1]) == (3, f"LOCKED {json.dumps(holder(1))}")
        assert lines[:-1] and all(ln.startswith("ENDING ") for ln in lines[:-1]), lines
        killer = subprocess.Popen(["sh", "-c", f"sleep 1.2; kill {step.pid}"])
        rc, lines = shells().run(rel.lock_command(lock, holder(2), ending=10))
        killer.wait()
        assert rc == 0 and lines[0].startswith("ENDING ") and lines[-2:] == [
            f"STALE {json.dumps(holder(1))}", "LOCKED_BY_ME"], lines
    finally:
        step.kill()
        step.wait()


def test_a_lock_made_by_hand_just_now_is_held_then_stale_when_old(tmp_path, shells):
    lock = tmp_path / ".lock"
    lock.mkdir()
    (lock / "holder").write_text(json.dumps(holder(1)) + "\n")
    shell = shells()
    assert shell.run(rel.lock_command(str(lock), holder(2))) == (3, [f"LOCKED {json.dumps(holder(1))}"])
    os.utime(lock, (time.time() - 120, time.time() - 120))
    assert shell.run(rel.lock_command(str(lock), holder(2))) == (0, [f"STALE {json.dumps(holder(1))}",
                                                                     "LOCKED_BY_ME"])


# --- the root shell's watchdog --------------------------------------------------------------------------

def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(pid))
    return members


def test_watchdog_ends_the_step_when_the_session_process_is_gone(tmp_path):
    """A process named like sshd's plays the session: once it is killed, the step and its children end."""
    marker = tmp_path / "never"
    fake_sshd = tmp_path / "sshd-session"
    fake_sshd.symlink_to(os.path.realpath(sys.executable))
    feed = (WATCHDOG_COMMAND + f"(\nsh -c 'sleep 60; touch {marker}' & sleep 60\n) </dev/null 2>&1\n"
            "echo \"@@end $?\"\n")
    session = subprocess.Popen([str(fake_sshd), "-c", (
        "import subprocess, sys, time\n"
        "sh = subprocess.Popen(['/bin/sh', '-s'], stdin=subprocess.PIPE, start_new_session=True)\n"
        f"sh.stdin.write({feed.encode()!r}); sh.stdin.flush()\n"
        "print(sh.pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    shell = int(session.stdout.readline())
    time.sleep(1)
    assert len(group_members(shell)) >= 4          # the shell, the step's subshell, sh -c and the sleeps
    time.sleep(1.5)
    assert len(group_members(shell)) >= 4          # the session is alive: the step goes on
    session.kill()
    session.wait()
    deadline = time.monotonic() + 10
    while group_members(shell):
        assert time.monotonic() < deadline, "the step outlived its session"
        time.sleep(0.1)
    assert not marker.exists()


def test_watchdog_ends_with_an_idle_shell(tmp_path):
    shell = subprocess.Popen(["/bin/sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    shell.stdin.write(WATCHDOG_COMMAND + "echo ready\n")
    shell.stdin.flush()
    assert shell.stdout.readline() == "ready\n"
    # One watchdog (a fork that has not yet exec'd shows twice for an instant on a loaded machine).
    deadline = time.monotonic() + 5
    while True:
        watchdogs = subprocess.run(["pgrep", "-f", f"dropship-watchdog {shell.pid}$"], capture_output=True,
                                   text=True).stdout.split()
        if len(watchdogs) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(watchdogs) == 1
    shell.stdin.close()                            # the channel closed: the shell ends on EOF
    assert shell.stdout.read() == ""               # the watchdog is off the shell's output
    shell.wait(5)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{watchdogs[0]}"):
        assert time.monotonic() < deadline, "the watchdog outlived its shell"
        time.sleep(0.1)
