"""Report JSON and console text; pinned host keys in OpenSSH known_hosts format."""
import base64
import io
import json
import shutil
import stat
import subprocess

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provision.engine.model import Change
from provision.engine.runner import HostOutcome
from provision.report import ConsoleProgress, Report, emit, recap
from provision.transport.hostkeys import KnownHosts, fingerprint, host_id, parse_key_line

# --- Report -------------------------------------------------------------------------------------


def outcome(name, **kw) -> HostOutcome:
    return HostOutcome(name, **kw)


def sample_report(**kw) -> Report:
    web = outcome("web-1", ok=20, changed=2, skipped=1, seconds=3.14159,
                  changes=[Change("file /etc/x", "update", "update /etc/x", ["true"], role="nginx"),
                           Change("packages", "install", "install nginx", ["true"], role="packages")])
    db = outcome("db-1", ok=12, seconds=1.0)
    return Report("provision", "staging", seconds=4.56789, hosts={"web-1": web, "db-1": db}, **kw)


def test_report_json_shape():
    data = sample_report().to_json()
    assert list(data) == ["ok", "seconds", "dry_run", "hosts", "changes"]
    assert data["ok"] is True and data["seconds"] == 4.568 and data["dry_run"] is False
    assert data["hosts"] == {
        "web-1": {"ok": 20, "changed": 2, "failed": 0, "skipped": 1, "seconds": 3.142},
        "db-1": {"ok": 12, "changed": 0, "failed": 0, "skipped": 0, "seconds": 1.0},
    }
    assert data["changes"] == [
        {"host": "web-1", "role": "nginx", "resource": "file /etc/x", "action": "update", "summary": "update /etc/x"},
        {"host": "web-1", "role": "packages", "resource": "packages", "action": "install",
         "summary": "install nginx"},
    ]
    json.dumps(data)


def test_report_with_failed_host_is_not_ok():
    report = sample_report(dry_run=True)
    report.hosts["db-1"].failed = 1
    report.hosts["db-1"].error = "db-1: facts: boom"
    data = report.to_json()
    assert data["ok"] is False and data["dry_run"] is True
    assert data["hosts"]["db-1"]["failed"] == 1
    assert data["hosts"]["db-1"]["error"] == "db-1: facts: boom"


def test_report_extra_fields():
    assert sample_report(extra={"droplets": []}).to_json()["droplets"] == []


def test_emit_json_prints_one_object(capsys):
    emit(sample_report(), as_json=True, progress=ConsoleProgress(io.StringIO(), color=False))
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out)["hosts"]["web-1"]["changed"] == 2


def test_console_progress_lines():
    stream = io.StringIO()
    progress = ConsoleProgress(stream, color=False)
    progress.step("web-1", "changed", "nginx: update /etc/x", 1.25)
    progress.step("web-1", "ok", "nothing")
    progress.diff("web-1", "--- a\n+++ b\n-old\n+new\n")
    assert stream.getvalue() == ("[web-1] changed      nginx: update /etc/x (1.2s)\n"
                                 "[web-1] ok           nothing\n"
                                 "    --- a\n    +++ b\n    -old\n    +new\n")


def test_console_progress_colors_only_when_asked():
    stream = io.StringIO()
    ConsoleProgress(stream, color=True).step("h", "failed", "x")
    assert "\033[31m" in stream.getvalue()
    assert ConsoleProgress(io.StringIO()).color is False     # StringIO is not a tty


def test_recap_text():
    report = sample_report()
    report.hosts["db-1"].failed = 1
    report.hosts["db-1"].error = "db-1: facts: boom"
    stream = io.StringIO()
    recap(report, ConsoleProgress(stream, color=False))
    assert stream.getvalue() == (
        "\nRECAP provision --env staging — 4.6s\n"
        "  web-1  ok=20  changed=2   failed=0  skipped=1  3.1s\n"
        "  db-1   ok=12  changed=0   failed=1  skipped=0  1.0s\n"
        "error: db-1: facts: boom\n"
    )


def test_recap_dry_run_says_would_change():
    stream = io.StringIO()
    recap(sample_report(dry_run=True), ConsoleProgress(stream, color=False))
    assert "(dry run)" in stream.getvalue() and "would change=2" in stream.getvalue()


# --- KnownHosts ---------------------------------------------------------------------------------

def ed25519_key() -> paramiko.PKey:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return parse_key_line(public)


def ecdsa_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def known(tmp_path) -> KnownHosts:
    return KnownHosts(tmp_path / ".dropship" / "known_hosts")


def by_type(keys: dict) -> dict:
    return {name: key.asbytes() for name, key in keys.items()}


def test_host_id():
    assert host_id("203.0.113.5", 22) == "203.0.113.5"
    assert host_id("127.0.0.1", 2222) == "[127.0.0.1]:2222"


def test_pin_lookup_round_trip(known):
    ed, ec = ed25519_key(), ecdsa_key()
    known.pin("127.0.0.1", 40022, [ed, ec])
    got = known.lookup("127.0.0.1", 40022)
    assert by_type(got) == {"ssh-ed25519": ed.asbytes(), ec.get_name(): ec.asbytes()}
    assert known.lookup("127.0.0.1", 22) == {}
    assert known.lookup("127.0.0.2", 40022) == {}


def test_file_is_openssh_known_hosts(known):
    ed, ec = ed25519_key(), ecdsa_key()
    known.pin("127.0.0.1", 40022, [ed])
    known.pin("203.0.113.5", 22, [ec])
    lines = known.path.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["203.0.113.5", "[127.0.0.1]:40022"]
    for line in lines:
        name, keytype, b64 = line.split()
        key = parse_key_line(f"{keytype} {b64}")
        assert base64.b64decode(b64) == key.asbytes()
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600
    assert [p.name for p in known.path.parent.iterdir() if p.name.startswith(".known_hosts-")] == []


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_openssh_reads_the_file(known):
    ed = ed25519_key()
    known.pin("127.0.0.1", 40022, [ed])
    found = subprocess.run(["ssh-keygen", "-F", "[127.0.0.1]:40022", "-f", str(known.path)],
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0 and ed.get_base64() in found.stdout
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(known.path)], capture_output=True, text=True, timeout=30)
    assert fingerprint(ed) in listed.stdout and "[127.0.0.1]:40022" in listed.stdout


def test_pin_replaces_every_old_key(known):
    old_ed, old_ec, new_ed = ed25519_key(), ecdsa_key(), ed25519_key()
    known.pin("127.0.0.1", 40022, [old_ed, old_ec])
    known.pin("127.0.0.1", 40022, [new_ed])
    assert by_type(known.lookup("127.0.0.1", 40022)) == {"ssh-ed25519": new_ed.asbytes()}


def test_pin_leaves_other_hosts_alone(known):
    a, b = ed25519_key(), ed25519_key()
    known.pin("127.0.0.1", 40022, [a])
    known.pin("127.0.0.1", 40023, [b])
    assert by_type(known.lookup("127.0.0.1", 40022)) == {"ssh-ed25519": a.asbytes()}
    assert by_type(known.lookup("127.0.0.1", 40023)) == {"ssh-ed25519": b.asbytes()}


def test_forget_removes_every_key_of_the_host_only(known):
    other = ed25519_key()
    known.pin("127.0.0.1", 40022, [ed25519_key(), ecdsa_key()])
    known.pin("127.0.0.1", 40023, [other])
    known.forget("127.0.0.1", 40022)
    assert known.lookup("127.0.0.1", 40022) == {}
    assert by_type(known.lookup("127.0.0.1", 40023)) == {"ssh-ed25519": other.asbytes()}
    assert "[127.0.0.1]:40022" not in known.path.read_text()


def test_forget_unknown_host_and_lookup_without_file(known):
    assert known.lookup("127.0.0.1", 22) == {}
    known.forget("127.0.0.1", 22)
    assert known.path.read_text() == ""


def test_keys_survive_a_new_instance(known):
    ed = ed25519_key()
    known.pin("10.0.0.1", 22, [ed])
    assert by_type(KnownHosts(known.path).lookup("10.0.0.1", 22)) == {"ssh-ed25519": ed.asbytes()}


def test_fingerprint_matches_openssh_style():
    ed = ed25519_key()
    fp = fingerprint(ed)
    assert fp.startswith("SHA256:") and not fp.endswith("=") and len(fp) == len("SHA256:") + 43
