"""Release command builders by their exact strings, and run for real: the shared state command and
its parser (apps and DAGs), and the health gate against a local HTTP server."""
import http.server
import io
import os
import tarfile
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from provision import release as rel
from provision.errors import DropshipError
from provision.inventory import AppSettings
from provision.workflows.host_deploy import AppState, app_state_command
from provision.roles.app import AppLayout
from provision.workflows.shipment import app_shipment


def test_state_command_exact():
    assert rel.state_command("/srv/names", ("slots/blue", "slots/green"), "live", python=True) == (
        "cd /srv/names 2>/dev/null || { echo absent; exit 0; }\n"
        'echo "live=$(cat live 2>/dev/null)"\n'
        "for l in slots/blue slots/green; do\n"
        '  t=$(readlink "$l" 2>/dev/null); echo "link $l=${t##*/}"\n'
        '  [ -n "$t" ] && [ -f "$l/.dropship-manifest.json" ] && echo "manifest $l $(cat "$l/.dropship-manifest.json")"\n'
        "done\n"
        "echo \"python=$(python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)\"\n"
        "for r in releases/*; do\n"
        '  [ -d "$r" ] || continue; case "$r" in *.partial) continue ;; esac\n'
        '  [ -e "$r/.dropship-unfinished" ] && continue\n'
        '  echo "release ${r#releases/} $(cat "$r/.dropship-release.json" 2>/dev/null)"\n'
        "done\n"
        "true\n")
    assert rel.state_command("/srv/my app", ("current",)).startswith("cd '/srv/my app' 2>/dev/null")
    assert rel.state_command("/srv/a", ("current",), marks=(".rev",)).endswith(
        '  echo "release ${r#releases/} $(cat "$r/.dropship-release.json" 2>/dev/null)"\n'
        '  [ -f "$r/.rev" ] && echo "mark ${r#releases/} .rev $(head -n 1 "$r/.rev")"\n'
        "done\n"
        "true\n")


def test_state_of_a_real_folder(tmp_path):
    root = tmp_path / "app"
    for rid in ("r1", "r2", "r3.partial"):
        (root / "releases" / rid).mkdir(parents=True)
    (root / "releases" / "r1" / rel.INFO).write_text('{"by": "me@x", "at": "2026-12-01T00:00:00Z"}')
    (root / "releases" / "r2" / rel.MANIFEST).write_text('{"a.py": ["abc", 420]}')
    (root / "slots").mkdir()
    (root / "slots" / "blue").symlink_to("../releases/r2")
    (root / "live").write_text("blue\n")
    (root / "releases" / "r1" / ".rev").write_text("ae1027a6acf\n")
    out = subprocess.run(["sh", "-c", rel.state_command(str(root), ("slots/blue", "slots/green"), "live",
                                                        marks=(".rev", ".left"))],
                         capture_output=True, text=True, check=True).stdout
    state = rel.parse_state(out)
    assert state.present and state.live == "blue" and state.releases == ["r1", "r2"]
    assert state.links == {"slots/blue": "r2", "slots/green": None}
    assert state.manifests == {"slots/blue": {"a.py": ["abc", 420]}}
    assert state.info["r1"]["by"] == "me@x" and state.info["r2"] == {}
    assert state.marks == {"r1": {".rev": "ae1027a6acf"}}
    app = AppState.of(state)
    assert (app.live, app.live_release, app.idle, app.manifest) == ("blue", "r2", "green", {"a.py": ["abc", 420]})
    missing = subprocess.run(["sh", "-c", rel.state_command(str(tmp_path / "nope"), ("current",))],
                             capture_output=True, text=True, check=True).stdout
    assert not rel.parse_state(missing).present


def test_app_state_command_is_the_shared_one():
    assert app_state_command(AppLayout("shop")) == rel.state_command(
        "/srv/shop", ("slots/blue", "slots/green"), "live", python=True,
        marks=(".dropship-db-revision", ".dropship-db-left"))


def test_start_slot_command_exact():
    assert rel.start_slot_command("/srv/my app/slots", "blue", "r1;x", "my app@blue.service") == (
        "ln -sfn ../releases/'r1;x' '/srv/my app/slots/blue'.new && mv -T '/srv/my app/slots/blue'.new "
        "'/srv/my app/slots/blue'\n"
        "systemctl is-enabled -q 'my app@blue.service' 2>/dev/null || systemctl enable -q 'my app@blue.service' "
        "2>/dev/null || true\n"
        "systemctl restart 'my app@blue.service'")


def test_stop_slot_command_exact():
    assert rel.stop_slot_command("my app@green.service") == "systemctl stop --no-block 'my app@green.service'"


def test_health_command_exact():
    assert rel.health_command("http://127.0.0.1:8001/healthz") == """
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
i=0; code=""
while [ $i -lt 300 ]; do
  : > "$d/body"; code=$(curl -sS --max-time 2 -o "$d/body" -w '%{http_code}' http://127.0.0.1:8001/healthz 2>"$d/err")
  case "$code" in 2??|3??) echo HEALTHY; exit 0 ;; esac
  i=$((i + 1)); sleep 0.1
done
got=$(cat "$d/body" "$d/err" 2>/dev/null | head -c 200 | tr -s '\\r\\n\\t' '   ')
printf 'expected %s from %s within %s s; got HTTP %s: %s\\n' 'HTTP 2xx/3xx' http://127.0.0.1:8001/healthz 30 "${code:-none}" \\
  "${got:-no response}"
exit 1
"""
    text = rel.health_command("http://127.0.0.1:8001/x?a=1&b=2", (200, 204), "it's $(ok)", 5)
    assert "case \"$code\" in 200|204) grep -qF -e 'it'\"'\"'s $(ok)' \"$d/body\" && " in text
    assert "while [ $i -lt 50 ]" in text and "'http://127.0.0.1:8001/x?a=1&b=2'" in text


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = {"/ok": 200, "/moved": 302, "/missing": 404, "/broken": 500}.get(self.path.split("?")[0], 200)
            self.send_response(status)
            self.send_header("Location", "/ok")
            self.end_headers()
            self.wfile.write(f"page {self.path}: it's $(ok) `x`\n line two".encode())

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def gate(url: str, *args, tmp: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp)) if tmp else None
    return subprocess.run(["sh", "-c", rel.health_command(url, *args)], capture_output=True, text=True, timeout=30,
                          env=env)


@pytest.mark.parametrize("path, status, text, healthy", [
    ("/ok", (), "", True),
    ("/moved", (), "", True),                  # a redirect (e.g. to a login page) is an answer
    ("/missing", (), "", False),
    ("/missing", (404,), "", True),
    ("/ok", (), "it's $(ok) `x`", True),
    ("/ok", (), "not there", False),
])
def test_health_gate_for_real(server, path, status, text, healthy):
    proc = gate(server + path, status, text, 1)
    assert (proc.returncode == 0) == healthy, proc.stdout
    assert ("HEALTHY" in proc.stdout) == healthy


def test_health_failure_says_what_was_expected_and_what_came_back(server, tmp_path):
    proc = gate(server + "/broken", (200,), "welcome", 1, tmp=tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert lines[0].startswith(f"expected HTTP 200 with 'welcome' in the body from {server}/broken within 1 s; "
                               "got HTTP 500: page /broken: it's $(ok) `x` line two"), lines[0]
    assert not list(tmp_path.iterdir())
    nothing = gate("http://127.0.0.1:9/", (), "", 1, tmp=tmp_path)
    assert "got HTTP 000: curl: (7)" in nothing.stdout
    assert not list(tmp_path.iterdir())                            # the answers' folder removed
    assert gate(server + "/ok", (), "it's", 1, tmp=tmp_path).returncode == 0 and not list(tmp_path.iterdir())


def fake_systemd(tmp_path: Path, restarts_grow: bool) -> dict:
    """PATH with a systemctl whose NRestarts grows on every look (a crash loop) or stays, and a
    journalctl printing the latest run's lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "restarts"
    count.write_text("3")
    grow = f'n=$(($(cat {count}) + 1)); echo $n > {count}' if restarts_grow else ":"
    (bin_dir / "systemctl").write_text(f"""#!/bin/sh
case "$*" in
  "show -p NRestarts --value my app@blue.service") {grow}; cat {count} ;;
  "show -p ExecMainStartTimestamp --value my app@blue.service") echo 'Sat 2026-12-05 12:01:06 UTC' ;;
  *) exit 1 ;;
esac
""")
    (bin_dir / "journalctl").write_text("""#!/bin/sh
[ "$*" = "-u my app@blue.service --since Sat 2026-12-05 12:01:06 UTC -o cat --no-pager" ] || exit 1
printf '%s\n' 'Started my app@blue.service - my app web app (blue slot).' \\
  '[2026-12-05 12:01:06 +0000] [11] [INFO] Starting gunicorn 27.0.1' \\
  '[2026-12-05 12:01:06 +0000] [12] [INFO] Booting worker with pid: 12' '' 'Traceback (most recent call last):' \\
  '  File "/srv/gunicorn/arbiter.py", line 686, in reap_workers' "Failed to find attribute 'make_app' in 'gb'." \\
  '[2026-12-05 12:01:07 +0000] [12] [INFO] Worker exiting (pid: 12)' "Failed to find attribute 'make_app' in 'gb'." \\
  '[2026-12-05 12:01:07 +0000] [11] [ERROR] Worker (pid:12) exited with code 4.' \\
  '[2026-12-05 12:01:07 +0000] [11] [ERROR] Reason: App failed to load.' \\
  'my app@blue.service: Main process exited, code=exited, status=4/NOEXEC' \\
  "my app@blue.service: Failed with result 'exit-code'." 'my app@blue.service: Scheduled restart job, restart counter is at 1.'
""")
    for tool in ("systemctl", "journalctl"):
        (bin_dir / tool).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_a_service_that_keeps_exiting_ends_the_gate_early_with_its_log(tmp_path):
    script = rel.health_command("http://127.0.0.1:9/healthz", seconds=30, unit="my app@blue.service")
    assert "systemctl show -p NRestarts --value 'my app@blue.service'" in script
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=25,
                          env=fake_systemd(tmp_path, restarts_grow=True))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[:3] == [                  # each worker's same error once, no noise
        "log: Failed to find attribute 'make_app' in 'gb'.", "log: [ERROR] Reason: App failed to load.",
        "log: my app@blue.service: Main process exited, code=exited, status=4/NOEXEC"]
    assert proc.stdout.splitlines()[3].startswith(
        "expected HTTP 2xx/3xx from http://127.0.0.1:9/healthz within 30 s; got HTTP none (the service keeps "
        "exiting): curl: (7)")


def test_a_service_that_stays_up_is_waited_for(server, tmp_path):
    script = rel.health_command(server + "/ok", unit="my app@blue.service")
    env = fake_systemd(tmp_path, restarts_grow=False)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=25, env=env)
    assert proc.returncode == 0 and proc.stdout == "HEALTHY\n"
    script = rel.health_command(server + "/missing", seconds=1, unit="my app@blue.service")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=25, env=env)
    assert proc.returncode == 1 and proc.stdout.splitlines()[0] == "log: Failed to find attribute 'make_app' in 'gb'."
    assert proc.stdout.splitlines()[-1].startswith("expected HTTP 2xx/3xx from ") and "got HTTP 404" in proc.stdout


def test_cleanup_and_unfinished_commands_exact():
    assert rel.unfinished_command("/srv/my app/releases/r1") == "touch '/srv/my app/releases/r1/.dropship-unfinished'"
    assert rel.unfinished_command("/srv/a/releases/r1", done=True) == "rm -f /srv/a/releases/r1/.dropship-unfinished"
    assert rel.cleanup_command("/srv/a/releases", ["r1", "r2"]) == """
cd /srv/a/releases 2>/dev/null || exit 0
for r in *; do
  [ -d "$r" ] || continue
  case "$r" in r1|r2) continue ;; esac
  case "$r" in *.partial) rm -rf "$r"; continue ;; esac
  [ -e "$r/.env" ] && [ ! -e "$r/.dropship-unfinished" ] || { rm -rf "$r"; echo "removed unfinished $r"; }
done
true
"""


def test_a_killed_deploys_leftovers_are_cleaned_and_its_id_reused(tmp_path):
    """What a deploy killed at any step leaves (a .partial, a release without .env, one whose
    release command never ran) is removed; finished and slotted releases stay; an upload of the
    same id (same commit, same second) replaces a leftover."""
    releases = tmp_path / "releases"
    for rid, files in {"old": [".env"], "live": [".env"], "warm-unmarked": [], "r.partial": [],
                       "noenv": ["a.py"], "prepared": [".env", rel.UNFINISHED]}.items():
        (releases / rid).mkdir(parents=True)
        for f in files:
            (releases / rid / f).write_text("x")
    out = subprocess.run(["sh", "-c", rel.cleanup_command(str(releases), ["live", "warm-unmarked"])],
                         capture_output=True, text=True, check=True).stdout
    assert sorted(p.name for p in releases.iterdir()) == ["live", "old", "warm-unmarked"]
    assert "removed unfinished noenv" in out and "removed unfinished prepared" in out
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text("v2")
    (releases / "same").mkdir()
    (releases / "same" / "stale.txt").write_text("left by the killed deploy")
    upload = rel.Upload(["app.py"], [])
    script = rel.upload_command(str(releases), "same", "live", upload, rel.tarball(source, ["app.py"]), b"{}", b"{}")
    subprocess.run(["sh", "-ec", script], check=True)
    assert sorted(p.name for p in (releases / "same").iterdir()) == [".dropship-manifest.json",
                                                                     ".dropship-release.json", "app.py"]


def test_prune_venvs_command_exact():
    assert rel.prune_venvs_command("/srv/my app/releases", "/srv/my app/shared/venvs") == """
cd '/srv/my app/shared/venvs' 2>/dev/null || exit 0
used=$(for l in '/srv/my app/releases'/*/.venv; do readlink "$l"; done 2>/dev/null)
[ -n "$used" ] || exit 0
for v in *; do
  [ -d "$v" ] || continue
  printf '%s\\n' "$used" | grep -qxF -e '/srv/my app/shared/venvs'/"$v" || { rm -rf "$v" && echo "pruned venv $v"; }
done
true
"""


def test_venvs_no_release_links_to_are_pruned(tmp_path):
    """Releases pruned, their virtualenvs go too (requirements changed over months leave none behind)."""
    releases, venvs = tmp_path / "my app" / "releases", tmp_path / "my app" / "shared" / "venvs"
    for name in ("a1", "b2", "gone", "older"):
        (venvs / name / "bin").mkdir(parents=True)
    for release, venv in (("r1", "a1"), ("r2", "b2"), ("r3", "b2")):
        (releases / release).mkdir(parents=True)
        (releases / release / ".venv").symlink_to(venvs / venv)
    (releases / "r0").mkdir()                                   # unfinished: no .venv yet
    out = subprocess.run(["sh", "-c", rel.prune_venvs_command(str(releases), str(venvs))],
                         capture_output=True, text=True, check=True).stdout
    assert sorted(out.splitlines()) == ["pruned venv gone", "pruned venv older"]
    assert sorted(p.name for p in venvs.iterdir()) == ["a1", "b2"]
    for gone in (tmp_path / "no releases", releases / "r0"):          # nothing links: nothing is pruned
        assert subprocess.run(["sh", "-c", rel.prune_venvs_command(str(gone), str(venvs))],
                              capture_output=True, text=True, check=True).stdout == ""
    assert sorted(p.name for p in venvs.iterdir()) == ["a1", "b2"]


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_requirements_text_follows_includes_relative_to_the_including_file(tmp_path):
    write_files(tmp_path, {"requirements/prod.txt": "-r base.txt\n--constraint=../constraints.txt\ngunicorn\n",
                           "requirements/base.txt": "flask==3.1.3  # the web\n-r base.txt\n",
                           "constraints.txt": "click<9\n"})
    text, local = rel.requirements_text(tmp_path, "requirements/prod.txt")
    assert not local
    assert text == (b"requirements/prod.txt\0-r base.txt\n--constraint=../constraints.txt\ngunicorn\n\0"
                    b"requirements/base.txt\0flask==3.1.3  # the web\n-r base.txt\n\0constraints.txt\0click<9\n\0")
    before = rel.requirements_hash(text, "3.13")
    (tmp_path / "requirements/base.txt").write_text("flask==3.1.4\n")       # a change in an included file
    assert rel.requirements_hash(rel.requirements_text(tmp_path, "requirements/prod.txt")[0], "3.13") != before


@pytest.mark.parametrize("line, local", [
    ("-e .", True), ("--editable=.", True), (".", True), ("./libs/shared", True), (".[postgres]", True),
    ("../sibling", True), ("file:///opt/wheels/x.whl", True), ("mylib @ file:///opt/mylib", True),
    ("flask==3.1.3", False), ("-e git+https://example.com/x.git#egg=x", False), ("# -e .", False),
    ("gunicorn # not -e .", False), ("--index-url https://pypi.org/simple", False),
])
def test_requirements_that_install_a_path_of_the_source(tmp_path, line, local):
    write_files(tmp_path, {"requirements.txt": f"flask\n{line}\n"})
    assert rel.requirements_text(tmp_path, "requirements.txt")[1] is local


@pytest.mark.parametrize("line", ["-r missing.txt", "-r ../../etc/passwd", "--requirement /etc/passwd"])
def test_an_include_outside_the_source_is_one_line(tmp_path, line):
    write_files(tmp_path, {"req/prod.txt": f"flask\n{line}\n"})
    with pytest.raises(DropshipError) as info:
        rel.requirements_text(tmp_path, "req/prod.txt")
    assert str(info.value) == (f"req/prod.txt:2 includes {line.split()[-1]}, which is not a file of the app's "
                               "source (fix: ship it with the source, or remove the line)")


def test_a_venv_per_release_only_when_the_requirements_install_it():
    from provision.workflows.shipment import Shipment

    def ship(rid: str, requirements: bytes, local: bool) -> Shipment:
        return Shipment(rid, Path("."), {}, requirements, installs_source=local)

    assert ship("r1", b"flask", False).venv_digest("3.13") == ship("r2", b"flask", False).venv_digest("3.13") \
        == rel.requirements_hash(b"flask", "3.13")
    assert ship("r1", b"-e .", True).venv_digest("3.13") != ship("r2", b"-e .", True).venv_digest("3.13")
    assert ship("r1", b"-e .", True).venv_digest("3.13") == rel.requirements_hash(b"-e .", "3.13", "r1")


def test_shared_dirs_command_exact():
    assert rel.shared_dirs_command("/srv/my app/releases/r2", "/srv/my app/data", ("instance", "media/up loads"),
                                   "my app") == (
        "install -d -m 0755 '/srv/my app/data'\n"
        "[ -d '/srv/my app/data/instance' ] || install -d -o 'my app' -g 'my app' -m 0750 '/srv/my app/data/instance'\n"
        "rm -rf '/srv/my app/releases/r2/instance'\n"
        "ln -s '/srv/my app/data/instance' '/srv/my app/releases/r2/instance'\n"
        "[ -d '/srv/my app/data/media' ] || install -d -o 'my app' -g 'my app' -m 0750 '/srv/my app/data/media'\n"
        "[ -d '/srv/my app/data/media/up loads' ] || "
        "install -d -o 'my app' -g 'my app' -m 0750 '/srv/my app/data/media/up loads'\n"
        "mkdir -p '/srv/my app/releases/r2/media'\n"
        "rm -rf '/srv/my app/releases/r2/media/up loads'\n"
        "ln -s '/srv/my app/data/media/up loads' '/srv/my app/releases/r2/media/up loads'")
    assert rel.shared_dirs_command("/srv/a/releases/r2", "/srv/a/data", (), "a") == ""


def test_upload_drops_the_previous_releases_links_into_shared_folders():
    script = rel.upload_command("/srv/a/releases", "r2", "r1", rel.Upload([], []), b"", b"{}", b"{}",
                                data="/srv/a/data")
    assert script.splitlines()[:3] == ["rm -rf /srv/a/releases/r2.partial",
                                       "cp -al /srv/a/releases/r1 /srv/a/releases/r2.partial",
                                       "find /srv/a/releases/r2.partial -type l -lname '/srv/a/data/*' -delete"]


def test_files_in_shared_folders_do_not_ship(tmp_path):
    write_files(tmp_path / "a", {"app.py": "1", "instance/.gitkeep": "2", "instance.py": "3",
                                 "media/uploads/README": "4", "media/logo.png": "5"})
    write_files(tmp_path / "b", {"media/uploads": "6"})                     # a file where a folder is shared
    assert sorted(rel.manifest(tmp_path / "a", (), ("instance", "media/uploads"))) == [
        "app.py", "instance.py", "media/logo.png"]
    assert rel.manifest(tmp_path / "b", (), ("media/uploads",)) == {}
    assert len(rel.manifest(tmp_path / "a", ())) == 5


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c",
                    "commit.gpgsign=false", "-c", "protocol.file.allow=always", *args], check=True, capture_output=True)


def test_what_git_ignores_does_not_ship_and_new_files_do(tmp_path):
    repo, app = tmp_path / "repo", tmp_path / "repo" / "services" / "web"
    write_files(repo, {".gitignore": "venv/\n.env\n*.sqlite\nnode_modules/\n", "README": "r",
                       "services/web/app.py": "1", "services/web/requirements.txt": "flask\n",
                       "services/web/static/site.css": "2", "services/web/tmp/.gitignore": "*\n!.gitignore\n"})
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    write_files(app, {"venv/bin/activate": "3", ".env": "DEV_KEY=dev-secret", "dev.sqlite": "4", "tmp/x.log": "5",
                      "node_modules/a/index.js": "6", "new page.py": "7", "données.txt": "8",
                      "notes.local": "9"})
    (repo / ".git" / "info" / "exclude").write_text("*.local\n")
    (app / "static" / "site.css").unlink()                          # deleted, not yet committed
    listed = rel.git_files(app)
    assert listed == {"app.py", "requirements.txt", "static/site.css", "tmp/.gitignore", "new page.py", "données.txt"}
    assert sorted(rel.manifest(app, (".git", "__pycache__"), ("tmp",), listed)) == [
        "app.py", "données.txt", "new page.py", "requirements.txt"]


def test_a_source_outside_git_or_ignored_whole_ships_all_and_a_submodule_by_its_own_rules(tmp_path):
    write_files(tmp_path / "plain", {"app.py": "1", "venv/x": "2"})
    assert rel.git_files(tmp_path / "plain") is None
    assert sorted(rel.manifest(tmp_path / "plain", (), (), None)) == ["app.py", "venv/x"]

    repo = tmp_path / "repo"
    write_files(repo, {".gitignore": "build/\n", "build/app/app.py": "1", "lib/README": "x"})
    write_files(tmp_path / "vendored", {"pkg/__init__.py": "v", "ignored.tmp": "t", ".gitignore": "*.tmp\n"})
    for root in (tmp_path / "vendored", repo):
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "v1")
    git(repo, "submodule", "add", "-q", str(tmp_path / "vendored"), "vendored")
    write_files(repo / "vendored", {"local.tmp": "l", "pkg/new.py": "n"})
    assert rel.git_files(repo / "build" / "app") is None
    listed = rel.git_files(repo)
    assert listed == {".gitignore", ".gitmodules", "lib/README", "vendored/.gitignore", "vendored/pkg/__init__.py",
                      "vendored/pkg/new.py"}
    assert sorted(rel.manifest(repo, (".git",), (), listed)) == sorted(listed)


def test_shared_folders_outlive_releases_and_nothing_is_written_through_them(tmp_path):
    """Three releases on disk as a deploy makes them: what the app wrote stays; a release's files
    never land in the shared folder, even once the folder is no longer shared."""
    import getpass

    releases, data, user = tmp_path / "releases", tmp_path / "data", getpass.getuser()
    source = tmp_path / "src"
    write_files(source, {"app.py": "v1", "media/logo.png": "logo", "media/uploads/README": "from the repo"})

    def release(rid: str, previous: str | None, shared: tuple[str, ...], changed: list[str], removed=()) -> Path:
        script = rel.upload_command(str(releases), rid, previous, rel.Upload(changed, list(removed)),
                                    rel.tarball(source, changed), b"{}", b"{}", data=str(data))
        script += "\n" + rel.shared_dirs_command(str(releases / rid), str(data), shared, user)
        subprocess.run(["sh", "-ec", script], check=True)
        return releases / rid

    r1 = release("r1", None, ("instance", "media/uploads"), ["app.py", "media/logo.png"])
    assert os.readlink(r1 / "media/uploads") == str(data / "media/uploads") and (r1 / "media/logo.png").is_file()
    (r1 / "instance" / "notes.sqlite").write_text("the app's data")          # written by the app, through its link
    (r1 / "media/uploads/cat.jpg").write_text("uploaded")
    (data / "media/uploads/README").write_text("the app's own README")
    (source / "app.py").write_text("v2")
    r2 = release("r2", "r1", ("instance", "media/uploads"), ["app.py"])
    assert (r2 / "instance/notes.sqlite").read_text() == "the app's data" and (r2 / "app.py").read_text() == "v2"
    assert sorted(os.listdir(data / "media/uploads")) == ["README", "cat.jpg"]
    r3 = release("r3", "r2", (), ["media/uploads/README"])                  # no longer shared: the repo's file ships
    assert (r3 / "media/uploads/README").read_text() == "from the repo" and not (r3 / "instance").exists()
    assert (data / "media/uploads/README").read_text() == "the app's own README"
    assert (data / "instance/notes.sqlite").read_text() == "the app's data"
    assert oct((data / "instance").stat().st_mode & 0o777) == "0o750"


def test_symlinks_ship_what_they_point_at_and_cannot_loop(tmp_path):
    write_files(tmp_path / "outside", {"shared/util.py": "u", "config.ini": "c"})
    write_files(tmp_path / "src", {"app.py": "a"})
    src = tmp_path / "src"
    (src / "util").symlink_to(tmp_path / "outside" / "shared")        # a folder outside the source
    (src / "config.ini").symlink_to(tmp_path / "outside" / "config.ini")
    (src / "again").symlink_to(src)                                    # a loop
    (src / "gone.py").symlink_to(tmp_path / "nowhere.py")              # dangling
    found = rel.manifest(src, ())
    assert sorted(found) == ["app.py", "config.ini", "util/util.py"]
    assert found["util/util.py"][0] == rel.manifest(tmp_path / "outside", ())["shared/util.py"][0]
    with tarfile.open(fileobj=io.BytesIO(rel.tarball(src, sorted(found)))) as tar:
        assert [(m.name, m.isfile(), tar.extractfile(m).read()) for m in tar.getmembers()] == [
            ("app.py", True, b"a"), ("config.ini", True, b"c"), ("util/util.py", True, b"u")]


def test_a_linked_folder_ships_by_the_rules_of_its_repository_or_whole(tmp_path):
    repo = tmp_path / "repo"
    write_files(repo, {".gitignore": "*.local\n", "lib/common/sql.py": "q", "dags/etl.py": "e"})
    write_files(tmp_path / "elsewhere", {"x.py": "x", "y.local": "y"})
    (repo / "dags" / "common").symlink_to("../lib/common")
    (repo / "dags" / "vendor").symlink_to(tmp_path / "elsewhere")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    write_files(repo / "lib" / "common", {"secrets.local": "s"})
    listed = rel.git_files(repo / "dags")
    assert listed == {"etl.py", "common/sql.py", "vendor/x.py", "vendor/y.local"}
    assert sorted(rel.manifest(repo / "dags", (".git",), (), listed)) == sorted(listed)


def test_a_uv_lock_its_pyproject_outgrew_is_refused_before_any_host(tmp_path, monkeypatch):
    """As `uv sync --locked` would: the controller's uv (an empty cache, no index needed) checks the lock."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "cache"))
    project = tmp_path / "src" / "api"
    write_files(project, {"pyproject.toml": '[project]\nname = "api"\nversion = "1"\nrequires-python = ">=3.9"\n'
                                            'dependencies = []\n', "api/__init__.py": ""})
    subprocess.run([sys.executable, "-m", "uv", "lock", "-q", "--offline"], cwd=project, check=True, timeout=120)
    settings = AppSettings("shop", source=tmp_path, requirements="src/api/pyproject.toml")
    assert rel.lock_out_of_date(project) is None
    assert app_shipment(settings, tmp_path, "abc12345").installs_source
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(">=3.9", ">=3.10"))
    with pytest.raises(DropshipError) as err:
        app_shipment(settings, tmp_path, "abc12345")
    assert str(err.value) == ("app shop: src/api/uv.lock does not match src/api/pyproject.toml (error: The lockfile at "
                              "`uv.lock` needs to be updated, but `--check` was provided.) (fix: run `uv lock` in "
                              "src/api and commit uv.lock)")
    pyproject.write_text(pyproject.read_text().replace('requires-python = ">=3.10"\n', ""))
    with pytest.raises(DropshipError) as err:              # uv takes this Python's: 3.11 is not the lock's 3.9
        app_shipment(settings, tmp_path, "abc12345")
    assert err.value.fix == ("run `uv lock` in src/api and commit uv.lock; set project.requires-python in "
                             "pyproject.toml too: without it uv locks for the Python that runs it")
    (project / "uv.lock").unlink()                   # no lock: the project's own resolution, nothing to check
    assert rel.lock_out_of_date(project) is None


def test_a_requirements_file_git_ignores_is_refused_before_any_host(tmp_path):
    write_files(tmp_path, {".gitignore": "requirements*.txt\n", "app.py": "1", "requirements.txt": "flask\n"})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "v1")
    with pytest.raises(DropshipError) as err:
        app_shipment(AppSettings("shop", source=tmp_path), tmp_path, "abc12345")
    assert str(err.value) == ("app shop: requirements.txt would not ship: git ignores it or app.exclude leaves it out "
                              "(fix: commit it (remove it from .gitignore), or narrow app.exclude)")
    (tmp_path / ".gitignore").write_text("venv/\n")
    assert sorted(app_shipment(AppSettings("shop", source=tmp_path), tmp_path, "abc12345").manifest) == [
        ".gitignore", "app.py", "requirements.txt"]


def test_release_ids_match_the_pattern_rollback_checks():
    for sha in ("1a2b3c4d", "1a2b3c4d5e-dirty", "nogit"):
        assert rel.RELEASE_ID.fullmatch(rel.release_id(sha, 0))
    for bad in ("19700101T000000Z", "19700101T000000Z-XYZ", "../19700101T000000Z-1a2b3c4d", "latest"):
        assert not rel.RELEASE_ID.fullmatch(bad)
