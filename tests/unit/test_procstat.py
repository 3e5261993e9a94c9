"""The /proc/PID/stat reader of the watchdog and the deploy lock, run for real with /bin/sh."""
import os
import shutil
import subprocess

from provision.transport.procstat import FIELD


def fields(pid: int, *numbers: int) -> list[str]:
    script = FIELD + "\n" + "".join(f'field {pid} {n}; echo "$?:$v"\n' for n in numbers) + 'echo "args:$#"\n'
    return subprocess.run(["/bin/sh", "-c", script, "sh", "outer"], capture_output=True, text=True,
                          check=True).stdout.split()


def test_exact():
    assert FIELD == ('field() { s=; { read -r s < "/proc/$1/stat"; } 2>/dev/null; n=$2; set -- ${s##*) }; v=; '
                     '[ $# -ge "$n" ] || return 1; shift $((n - 1)); v=$1; }')


def test_reads_a_process_whose_name_holds_a_parenthesis_and_spaces(tmp_path):
    odd = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        after = open(f"/proc/{proc.pid}/stat").read().rsplit(") ", 1)[1].split()
        state, *rest = fields(proc.pid, 1, 2, 3, 20)
        assert state in ("0:R", "0:S")
        assert rest == [f"0:{os.getpid()}", f"0:{after[2]}", f"0:{after[19]}", "args:1"]  # the caller's $1 kept
    finally:
        proc.kill()
        proc.wait()


def test_a_gone_process_fails_with_an_empty_value():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert fields(proc.pid, 20, 2) == ["1:", "1:", "args:1"]
