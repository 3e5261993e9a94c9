"""File, Directory, Symlink, Absent: probe parsing, plans, and the generated shell run for real."""
import base64
import hashlib
import os
import stat
import subprocess

import pytest

from provision.engine.files import Absent, Directory, File, FileFacts, Symlink
from provision.engine.model import restart

SHA_OLD = hashlib.sha256(b"old\n").hexdigest()
B64_OLD = base64.b64encode(b"old\n").decode()


def sh(commands: list[str]) -> subprocess.CompletedProcess:
    """Run commands the way an apply step does: a `set -e` subshell of /bin/sh."""
    script = "( set -e\n" + "\n".join(commands) + "\n)"
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)


def probe(resource, want_content=False):
    out = subprocess.run(["/bin/sh", "-c", resource.probe(want_content)], capture_output=True, text=True,
                         timeout=30).stdout
    return resource.parse(out.strip("\n"))   # parse_probe strips the chunk the same way


def converge(resource):
    """Apply whatever the resource plans, then return the plan of a second probe."""
    for change in resource.plan(probe(resource)):
        result = sh(change.commands)
        assert result.returncode == 0, result.stderr
    return resource.plan(probe(resource))


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".dropship"))


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# --- probe output parsing ---------------------------------------------------------------------

def test_parse_absent():
    assert File("/x", b"").parse("absent") == FileFacts(False)
    assert File("/x", b"").parse("") == FileFacts(False)


def test_parse_regular_file():
    facts = File("/x", b"").parse(f"root adm 640 regular file\n\n{SHA_OLD}")
    assert facts == FileFacts(True, "root", "adm", "0640", SHA_OLD, None, "regular file", "")


def test_parse_regular_file_with_content():
    facts = File("/x", b"").parse(f"root root 644 regular file\n\n{SHA_OLD}\n{B64_OLD}")
    assert facts.content == b"old\n"


def test_parse_symbolic_link():
    facts = Symlink("/x", "/t").parse(f"root root 777 symbolic link\n/etc/nginx/sites-available/x\n{SHA_OLD}")
    assert (facts.kind, facts.link, facts.mode) == ("symbolic link", "/etc/nginx/sites-available/x", "0777")


def test_parse_directory():
    facts = Directory("/x").parse("deploy deploy 700 directory\n\n")
    assert (facts.exists, facts.owner, facts.group, facts.mode, facts.kind, facts.sha256) == \
        (True, "deploy", "deploy", "0700", "directory", "")


def test_parse_empty_file_counts_as_regular_file():
    # GNU stat says "regular empty file" for size 0; an empty managed file must still converge.
    assert File("/x", b"").parse("root root 644 regular empty file\n\n").kind == "regular file"


def test_probe_of_real_files(tmp_path):
    (tmp_path / "f").write_bytes(b"old\n")
    (tmp_path / "d").mkdir(mode=0o750)
    (tmp_path / "l").symlink_to(tmp_path / "f")
    f = probe(File(str(tmp_path / "f"), b""), want_content=True)
    assert (f.kind, f.owner, f.group, f.sha256, f.content) == ("regular file", "root", "root", SHA_OLD, b"old\n")
    d = probe(Directory(str(tmp_path / "d")))
    assert (d.kind, d.mode) == ("directory", "0750")
    link = probe(Symlink(str(tmp_path / "l"), ""))
    assert (link.kind, link.link) == ("symbolic link", str(tmp_path / "f"))
    assert probe(Absent(str(tmp_path / "nothing"))) == FileFacts(False)


def test_secret_file_probe_never_reads_content(tmp_path):
    (tmp_path / "s").write_bytes(b"hunter2\n")
    secret = File(str(tmp_path / "s"), b"x", secret=True)
    assert "base64" not in secret.probe(want_content=True)
    assert probe(secret, want_content=True).content is None


# --- plans --------------------------------------------------------------------------------------

def facts_for(content: bytes, owner="root", group="root", mode="0644") -> FileFacts:
    return FileFacts(True, owner, group, mode, hashlib.sha256(content).hexdigest(), None, "regular file")


def test_file_plan_empty_when_facts_match():
    assert File("/etc/x", b"new\n", mode=0o640).plan(facts_for(b"new\n", mode="0640")) == []


def test_file_plan_creates_missing_file():
    notify = (restart("nginx"),)
    [change] = File("/etc/x", b"new\n", role="nginx", notify=notify).plan(FileFacts(False))
    assert (change.action, change.summary, change.resource, change.role) == \
        ("create", "create /etc/x", "file /etc/x", "nginx")
    assert change.notify == notify


def test_file_plan_updates_changed_content():
    [change] = File("/etc/x", b"new\n").plan(facts_for(b"old\n"))
    assert change.action == "update"
    assert "mv -f" in change.commands[0]


def test_file_plan_replaces_a_directory_in_the_way():
    facts = FileFacts(True, "root", "root", "0755", "", None, "directory")
    assert File("/etc/x", b"new\n").plan(facts)[0].action == "update"


def test_file_plan_only_chowns_and_chmods_when_content_matches():
    [change] = File("/etc/x", b"new\n", owner="deploy", group="deploy", mode=0o600).plan(facts_for(b"new\n"))
    assert change.commands == ["chown deploy:deploy /etc/x", "chmod 0600 /etc/x"]
    assert change.summary == "set owner/mode of /etc/x to deploy:deploy 0600"


def test_file_plan_only_chmods_when_only_mode_differs():
    [change] = File("/etc/x", b"new\n", mode=0o440).plan(facts_for(b"new\n"))
    assert change.commands == ["chmod 0440 /etc/x"]


def test_directory_plan():
    d = Directory("/srv/app", "deploy", "deploy", 0o750)
    fix = ["chown deploy:deploy /srv/app", "chmod 0750 /srv/app"]
    assert d.plan(FileFacts(True, "deploy", "deploy", "0750", kind="directory")) == []
    assert d.plan(FileFacts(False))[0].commands == ["mkdir -p /srv/app"] + fix
    assert d.plan(FileFacts(True, "root", "root", "0755", kind="directory"))[0].commands == fix
    replace = d.plan(FileFacts(True, "root", "root", "0644", kind="regular file"))[0]
    assert replace.commands == ["rm -f /srv/app", "mkdir -p /srv/app"] + fix


def test_symlink_plan():
    link = Symlink("/etc/nginx/sites-enabled/x", "/etc/nginx/sites-available/x")
    good = FileFacts(True, "root", "root", "0777", kind="symbolic link", link="/etc/nginx/sites-available/x")
    assert link.plan(good) == []
    assert link.plan(FileFacts(False))[0].action == "create"
    [change] = link.plan(FileFacts(True, kind="symbolic link", link="/elsewhere"))
    assert change.action == "update"
    assert change.commands == ["ln -sfn /etc/nginx/sites-available/x /etc/nginx/sites-enabled/x"]


def test_absent_plan():
    gone = Absent("/etc/nginx/sites-enabled/default")
    assert gone.plan(FileFacts(False)) == []
    [change] = gone.plan(FileFacts(True, kind="symbolic link"))
    assert (change.action, change.commands) == ("remove", ["rm -f /etc/nginx/sites-enabled/default"])


# --- the write command's text -------------------------------------------------------------------

def test_write_command_text():
    content = b"line 1\nline 2\n"
    [cmd] = File("/etc/my app.conf", content, owner="deploy", group="www-data", mode=0o640).write_commands()
    lines = cmd.split("\n")
    assert lines[0] == "tmp=$(mktemp \"$(dirname '/etc/my app.conf')/.dropship.XXXXXX\")"
    assert lines[1] == "base64 -d > \"$tmp\" <<'DROPSHIP_EOF'"
    end = lines.index("DROPSHIP_EOF")
    assert base64.b64decode("".join(lines[2:end])) == content
    assert lines[end + 1].startswith('chown deploy:www-data "$tmp" && chmod 0640 "$tmp"')
    assert lines[-1] == "mv -f \"$tmp\" '/etc/my app.conf'"


def test_write_command_validates_the_temp_file():
    [cmd] = File("/etc/sudoers.d/x", b"x\n", validate="visudo -cqf %s").write_commands()
    validate = next(line for line in cmd.split("\n") if line.startswith("visudo"))
    assert validate.startswith('visudo -cqf "$tmp" || { rm -f "$tmp";')
    assert validate.endswith("exit 1; }")
    assert cmd.index("visudo") < cmd.index("mv -f")


def test_write_command_with_check_keeps_the_previous_file():
    [cmd] = File("/etc/nginx/x.conf", b"x\n", check="nginx -t").write_commands()
    assert 'cp -p /etc/nginx/x.conf "$prev"' in cmd
    assert "if ! nginx -t; then" in cmd
    assert 'mv -f "$prev" /etc/nginx/x.conf' in cmd


# --- the write command, executed ----------------------------------------------------------------

def test_write_creates_file_atomically_with_owner_and_mode(tmp_path):
    target = tmp_path / "app.conf"
    content = bytes(range(256)) + b"no trailing newline"
    result = sh(File(str(target), content, mode=0o640).write_commands())
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == content
    assert mode_of(target) == 0o640
    assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)
    assert leftovers(tmp_path) == []


def test_write_replaces_existing_file(tmp_path):
    target = tmp_path / "my conf"
    target.write_bytes(b"old\n")
    result = sh(File(str(target), b"new\n", mode=0o600).write_commands())
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"new\n"
    assert mode_of(target) == 0o600
    assert leftovers(tmp_path) == []


def test_write_then_probe_plans_nothing(tmp_path):
    assert converge(File(str(tmp_path / "f"), b"content\n", mode=0o600)) == []
    assert converge(File(str(tmp_path / "empty"), b"")) == []


def test_validate_sees_the_new_content_in_the_temp_file(tmp_path):
    target = tmp_path / "f"
    result = sh(File(str(target), b"wanted\n", validate="grep -q wanted %s").write_commands())
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"wanted\n"


def test_failed_validation_leaves_old_file_untouched(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old\n")
    os.chmod(target, 0o644)
    result = sh(File(str(target), b"new\n", mode=0o600, validate="false %s").write_commands())
    assert result.returncode != 0
    assert "validation failed: false %s" in result.stderr
    assert target.read_bytes() == b"old\n"
    assert mode_of(target) == 0o644
    assert leftovers(tmp_path) == []


def test_failed_validation_of_new_file_creates_nothing(tmp_path):
    result = sh(File(str(tmp_path / "f"), b"new\n", validate="false %s").write_commands())
    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_failed_check_restores_previous_file(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old\n")
    os.chmod(target, 0o640)
    result = sh(File(str(target), b"new\n", check="false").write_commands())
    assert result.returncode != 0
    assert "check failed, previous file restored: false" in result.stderr
    assert target.read_bytes() == b"old\n"
    assert mode_of(target) == 0o640
    assert leftovers(tmp_path) == []


def test_failed_check_removes_a_new_file(tmp_path):
    result = sh(File(str(tmp_path / "f"), b"new\n", check="false").write_commands())
    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_check_runs_against_the_live_file(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old\n")
    result = sh(File(str(target), b"new\n", check=f"grep -q new {target}").write_commands())
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"new\n"
    assert leftovers(tmp_path) == []


def test_unknown_owner_fails_and_leaves_old_file(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old\n")
    result = sh(File(str(target), b"new\n", owner="no-such-user-dropship").write_commands())
    assert result.returncode != 0
    assert target.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []


def test_missing_parent_directory_fails(tmp_path):
    assert sh(File(str(tmp_path / "nope" / "f"), b"x").write_commands()).returncode != 0


def test_directory_symlink_absent_converge(tmp_path):
    (tmp_path / "was-a-file").write_bytes(b"x")
    (tmp_path / "target").write_bytes(b"t")
    (tmp_path / "stale").write_bytes(b"x")
    assert converge(Directory(str(tmp_path / "a" / "b"), mode=0o700)) == []
    assert mode_of(tmp_path / "a" / "b") == 0o700
    assert converge(Directory(str(tmp_path / "was-a-file"))) == []
    assert (tmp_path / "was-a-file").is_dir()
    assert converge(Symlink(str(tmp_path / "link"), str(tmp_path / "target"))) == []
    assert os.readlink(tmp_path / "link") == str(tmp_path / "target")
    assert converge(Symlink(str(tmp_path / "link"), str(tmp_path / "stale"))) == []
    assert os.readlink(tmp_path / "link") == str(tmp_path / "stale")
    assert converge(Absent(str(tmp_path / "stale"))) == []
    assert not (tmp_path / "stale").exists()


# --- diffs --------------------------------------------------------------------------------------

def test_diff_of_update_is_a_unified_diff():
    facts = FileFacts(True, "root", "root", "0644", "x", b"keep\nold\n", "regular file")
    [change] = File("/etc/x", b"keep\nnew\n").plan(facts)
    assert change.diff == ("--- /etc/x (host)\n+++ /etc/x (wanted)\n@@ -1,2 +1,2 @@\n"
                           " keep\n-old\n+new\n")


def test_diff_of_new_file_is_against_dev_null():
    [change] = File("/etc/x", b"a\nb\n").plan(FileFacts(False))
    assert change.diff.startswith("--- /dev/null\n+++ /etc/x (wanted)\n")
    assert "+a\n+b\n" in change.diff


def test_diff_when_content_was_not_read():
    [change] = File("/etc/x", b"new\n").plan(facts_for(b"old\n"))
    assert "(current content not read)" in change.diff


def test_diff_of_binary_content():
    facts = FileFacts(True, "root", "root", "0644", "x", b"\xff\xfe", "regular file")
    assert File("/bin/x", b"\xff\x00").plan(facts)[0].diff == "Binary file /bin/x differs\n"


@pytest.mark.parametrize("facts", [FileFacts(False),
                                   FileFacts(True, "root", "root", "0600", "x", b"old-secret\n", "regular file")])
def test_secret_file_diff_never_shows_content(facts):
    [change] = File("/etc/app.env", b"PASSWORD=hunter2\n", secret=True).plan(facts)
    assert "hunter2" not in change.diff and "old-secret" not in change.diff
    assert "(secret content not shown)" in change.diff
