"""Helpers shared by the integration tests and the benchmarks: throwaway environments of local
droplets with unique names, the CLI run as a user runs it, and cleanup of killed runs."""
from __future__ import annotations

import html
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke", "-r", str(PROJECT)]
RUN_PREFIX = "it"                      # environment names: it<pid>x<random>
_RUN_NAME = re.compile(rf"^{RUN_PREFIX}(\d+)x[0-9a-f]+")

DEFAULTS = {
    "ssh": {"user": "deploy", "bootstrap_user": "root"},
    "timezone": "UTC",
    "firewall": {"allow": [22, 80, 443]},
    "app": {"name": "names", "database": {"name": "names", "user": "names",
                                           "password": {"secret": "app_db_password"}}},
}


def run_name() -> str:
    """A unique environment name whose pid lets later runs reap it if this one is killed."""
    return f"{RUN_PREFIX}{os.getpid()}x{secrets.token_hex(3)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs() -> int:
    """Remove droplets (containers, volumes, networks, snapshots) of earlier runs whose process is gone."""
    from provision.providers.docker_engine import docker, ensure_engine
    from provision.providers.local import reap

    ensure_engine()
    envs = set(docker("ps", "-a", "--filter", "label=dropship.env", "--format",
                      '{{.Label "dropship.env"}}').stdout.split())
    envs |= set(docker("volume", "ls", "--filter", "label=dropship.env", "--format",     # volumes made before
                       '{{.Label "dropship.env"}}').stdout.split())                      # their droplet
    snapshots = docker("images", "-q", "--filter", "label=dropship.env").stdout.split()   # of gone droplets too
    if snapshots:
        envs |= set(docker("image", "inspect", "--format", '{{index .Config.Labels "dropship.env"}}',
                           *sorted(set(snapshots))).stdout.split())
    removed = 0
    for env in envs:
        m = _RUN_NAME.match(env)
        if m and not _alive(int(m.group(1))):
            removed += reap({"dropship.env": env})
    return removed


@dataclass
class Sandbox:
    """A folder with its own inventory.yaml (and so its own keys, known_hosts, state, secrets)."""

    root: Path
    env: str

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    def write(self, environments: dict, defaults: dict | None = None) -> None:
        self.inventory.write_text(yaml.safe_dump({"defaults": defaults or DEFAULTS,
                                                  "environments": environments}, sort_keys=False))

    def environment(self, name: str | None = None):
        from provision.inventory import load_environment

        return load_environment(self.inventory, name or self.env)

    def invoke(self, *args: str, check: bool = False, timeout: float = 900,
               env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        """Run `invoke ARGS` against this sandbox's inventory, as a user would (``env``: more variables;
        ``input``: its stdin)."""
        env = dict(os.environ, DROPSHIP_INVENTORY=str(self.inventory), **(env or {}))
        proc = subprocess.run(INVOKE + list(args), cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def invoke_in_terminal(self, args: list[str], replies: list[tuple[str, str]],
                           timeout: float = 120) -> tuple[int, str]:
        """Run `invoke ARGS` on a terminal of its own, as a person at a shell: each time the output
        shows a reply's prompt, the reply is typed. Its exit status and what the terminal showed."""
        import pty
        import select
        import time

        env = dict(os.environ, DROPSHIP_INVENTORY=str(self.inventory), TERM="xterm")
        pid, fd = pty.fork()
        if pid == 0:                                   # the child: the terminal is its stdin and stdout
            os.chdir(self.root)
            os.execve(INVOKE[0], INVOKE + args, env)
        shown, start, pending, deadline = b"", 0, list(replies), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:                        # the child ended: its terminal is gone
                    break
                if not data:
                    break
                shown += data
            if pending and pending[0][0].encode() in shown[start:]:
                os.write(fd, pending.pop(0)[1].encode())
                start = len(shown)                     # the next prompt is looked for in what follows
        else:
            os.kill(pid, 9)
        os.close(fd)
        status = os.waitpid(pid, 0)[1]
        return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")

    def provision_json(self, *args: str, env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
        proc = self.invoke("provision", "--env", self.env, "--json", *args, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"no JSON on stdout:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(lines[-1]), proc

    def preload_airflow(self, *droplets: str) -> None:
        """Put the environment's Airflow image on ``droplets`` before they are created (for tests not
        about shipping it; see tests.image_volumes)."""
        from tests.image_volumes import seed, template_volume

        seed(self.env, template_volume(self.environment()), *droplets)

    def create_and_provision(self) -> dict:
        """``droplet.create`` then ``provision --json``, which must succeed; the provision report."""
        self.invoke("droplet.create", "--env", self.env, check=True)
        report, proc = self.provision_json()
        assert report["ok"], f"provision failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return report


def role_packages() -> list[str]:
    """Every package a Debian droplet with every role (HTTPS, backups and Airflow's CeleryExecutor
    included) installs (pure)."""
    from provision.facts import SystemFacts
    from provision.inventory import BackupSettings, ServerTls, load_inventory
    from provision.roles import RoleContext, registry

    env = load_inventory(PROJECT / "inventory.yaml")["local"]
    nginx = replace(env.settings.nginx, server_name="example.com", tls=ServerTls("letsencrypt"))
    airflow = replace(env.settings.airflow, executor="CeleryExecutor")
    env = replace(env, settings=replace(env.settings, nginx=nginx, backups=BackupSettings(), airflow=airflow))
    ctx = RoleContext(env, env.hosts[0], SystemFacts("debian", "13", "trixie", "none", 4096, 2), "", {})
    return sorted({p for role in registry().values() for p in role.packages(ctx)})


# Daemons the packages enable that only some roles run: each such role enables and starts its own
# (`Service`), so a warm droplet runs what its roles ask for, as a fresh droplet does.
ROLE_DAEMONS = ("postgresql", "nginx", "redis-server", "docker.service", "docker.socket", "containerd",
                "certbot.timer")


def warm_recipe(base: str, packages: list[str]) -> str:
    """The warm image's Dockerfile: ``packages`` installed, ``ROLE_DAEMONS`` disabled (pure)."""
    return (f"FROM {base}\nRUN export DEBIAN_FRONTEND=noninteractive && apt-get update -q && "
            f"apt-get install -y -q --no-install-recommends {' '.join(packages)} && apt-get clean && "
            f"rm -rf /var/lib/apt/lists/* && systemctl disable {' '.join(ROLE_DAEMONS)}\n")


def warm_image() -> str:
    """The droplet image with every role's packages installed and nothing configured or running
    (built once per machine). Fixtures whose tests are not about a first provision start from it:
    their provision still configures everything for real, it only finds the packages there already."""
    from provision.providers.docker_engine import docker, image_exists
    from provision.providers.local_image import _build, build_lock, ensure_base_image, recipe_hash

    base = ensure_base_image()
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    recipe = warm_recipe(base, role_packages())
    tag = f"dropship/droplet-warm:{recipe_hash(base_id, recipe)}"
    if image_exists(tag):
        return tag
    with build_lock(what="the warm test droplet image"):
        if not image_exists(tag):
            _build(tag, recipe, {}, timeout=900)
    return tag


def droplet_spec(name: str, roles: list[str], size: str = "s-2vcpu-4gb", image: str | None = None,
                 warm: bool = False) -> dict:
    """A droplet of the inventory; ``warm``: from ``warm_image()``."""
    spec = {"name": name, "size": size, "roles": roles}
    if image or warm:
        spec["image"] = image or warm_image()
    return spec


def ssh_script(box: Sandbox, script: str, host: str = "web-1") -> str:
    """Run ``script`` on a droplet of ``box`` over SSH as the deploy user (pinned host key); its output."""
    from provision.redact import Redactor
    from provision.state import load_droplets
    from provision.transport.hostkeys import KnownHosts
    from provision.transport.ssh import Target, connect

    env = box.environment()
    d = load_droplets(env)[host]
    session = connect(Target(host, d.address, d.ssh_port, (env.ssh.user,), env.workspace.key_path(env.name)),
                      KnownHosts(env.workspace.known_hosts_path), Redactor())
    try:
        result = session.script(script, timeout=120)
    finally:
        session.close()
    assert result.rc == 0, result.stdout
    return result.stdout


def poll(what: str, probe, within: float, every: float = 1.0):
    """Call ``probe()`` until it returns something true; that value. Fails with the last value."""
    import time

    import pytest

    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:.0f} s (last: {value!r})")
        time.sleep(every)


def docker_exec(container: str, script: str, check: bool = True) -> str:
    """Run a shell script in a local droplet through Docker (a channel that is not SSH)."""
    proc = subprocess.run(["docker", "exec", "-i", container, "sh", "-s"], input=script, text=True,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker exec {container} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr}")
    return proc.stdout


# --- deploys: the app shipped from its own git repository ---------------------------------------------

APP_SOURCE = PROJECT / "app_src"
INDEX_TEMPLATE = "names/templates/index.html"


def app_settings(source: Path) -> dict:
    """The inventory's ``app:`` section as in the repository's inventory.yaml, shipping ``source``."""
    return {"name": "names", "source": str(source), "wsgi": "wsgi:app", "requirements": "requirements.txt",
            "release_command": "flask --app wsgi db upgrade", "health_path": "/healthz", "keep_releases": 5,
            "env": {"FLASK_CONFIG": "production"},
            "database": {"name": "names", "user": "names", "password": {"secret": "app_db_password"}}}


class AppRepo:
    """A copy of app_src in a git repository of its own; ``version(label)`` commits a new version
    whose index page heading is ``Hello World! <label>`` (one file changes)."""

    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def create(cls, dest: Path) -> "AppRepo":
        import shutil

        shutil.copytree(APP_SOURCE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        repo = cls(dest)
        repo.git("init", "-q", "-b", "main")
        repo.commit("v1")
        return repo

    def git(self, *args: str) -> str:
        proc = subprocess.run(["git", "-C", str(self.root), "-c", "user.name=dropship tests",
                               "-c", "user.email=tests@dropship.invalid", "-c", "commit.gpgsign=false", *args],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "--short=8", "HEAD")

    def version(self, label: str) -> str:
        """Edit the index heading to ``Hello World! <label>`` and commit; the short sha."""
        path = self.root / INDEX_TEMPLATE
        text, n = re.subn(r"<h1>Hello World![^<]*</h1>", f"<h1>{heading(label)}</h1>", path.read_text())
        assert n == 1, f"no heading in {path}"
        path.write_text(text)
        return self.commit(label)


class Browser:
    """A user at the names page: cookies kept, redirects not followed (to see the 302). ``headers``
    go with every request (e.g. a Host header for an app on a server of its own)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str, headers: dict | None = None):
        self.base, self.headers = base, headers or {}
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), self._NoRedirect())

    def open(self, path: str, data: dict | None = None) -> tuple[int, dict, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            request = urllib.request.Request(self.base + path, data=body, headers=self.headers)
            with self.opener.open(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def page(self) -> tuple[str, list[str]]:
        """The index page's heading and listed names."""
        status, _, html = self.open("/")
        assert status == 200, html
        return re.search(r"<h1>([^<]*)</h1>", html).group(1), re.findall(r"<li>([^<]*)</li>", html)

    def add_name(self, name: str) -> None:
        status, _, html = self.open("/")
        assert status == 200, html
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
        assert token, f"no csrf_token in the form:\n{html}"
        status, headers, body = self.open("/", {"csrf_token": token.group(1), "name": name, "submit": "Submit"})
        assert status == 302, f"POST / answered {status}:\n{body}"
        assert urllib.parse.urlsplit(headers["Location"]).path == "/"

    def health(self) -> dict:
        status, _, body = self.open("/healthz")
        assert status == 200, body
        return json.loads(body)


# --- a second app, of another shape (tests/apps/guestbook) ----------------------------------------

GUESTBOOK_SOURCE = PROJECT / "tests" / "apps" / "guestbook"
TITLE = "It's \"$(touch /tmp/pwned)\" `touch /tmp/pwned2`; $HOME \\ \\n —\n ünïcødé ✓ 'quoted'"


def guestbook(source: Path, name: str = "guestbook") -> dict:
    return {"name": name, "source": str(source), "path": "/guestbook", "wsgi": "guestbook:create_app('production')",
            "requirements": "requirements/prod.txt", "release_command": "python bin/create_tables.py",
            "health": {"path": "/about", "expect_status": [200], "expect_text": "About"},
            "env": {"GUESTBOOK_ENV": "production", "SITE_TITLE": TITLE,
                    "GUESTBOOK_SECRET": {"secret": "guestbook_secret"}},
            "database": {"name": "guestbook", "user": "guestbook", "password": {"secret": "guestbook_db_password"},
                         "url_env": ["GUESTBOOK_DB_URI"], "driver": "psycopg2"}}


class GuestbookRepo(AppRepo):
    """A copy of the guestbook app in a git repository; versions change guestbook/version.py."""

    @classmethod
    def create(cls, dest: Path) -> "GuestbookRepo":
        shutil.copytree(GUESTBOOK_SOURCE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        repo = cls(dest)
        repo.git("init", "-q", "-b", "main")
        repo.commit("guestbook v1")
        return repo

    def version(self, label: str) -> str:
        path = self.root / "guestbook" / "version.py"
        text, n = re.subn(r'LABEL = "[^"]*"', f'LABEL = "{label}"', path.read_text())
        assert n == 1, path
        path.write_text(text)
        return self.commit(label)


def guestbook_page(browser: Browser) -> tuple[str, str, list[str]]:
    """(title, version label, entries) of the guestbook's index page."""
    status, _, page = browser.open("/guestbook/")
    assert status == 200, page
    title = html.unescape(re.search(r"<title>(.*?)</title>", page, re.S).group(1)).strip()
    label = re.search(r'data-version="([^"]*)"', page)
    entries = [html.unescape(e).strip() for e in re.findall(r'<li class="entry">(.*?)</li>', page, re.S)]
    return title, label.group(1) if label else "", entries


def sign(browser: Browser, author: str, message: str, with_token: bool = True) -> int:
    status, _, page = browser.open("/guestbook/")
    assert status == 200, page
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, page
    form = {"author": author, "message": message, **({"csrf_token": token.group(1)} if with_token else {})}
    status, headers, _ = browser.open("/guestbook/", form)
    if status in (302, 303):
        assert headers["Location"].endswith("/guestbook/"), headers
    return status



def heading(label: str | None) -> str:
    """The index page heading of a version made by AppRepo.version (None: the original)."""
    return f"Hello World! {label}" if label and label != "v1" else "Hello World!"


def last_json(proc: subprocess.CompletedProcess):
    """The last JSON document printed on stdout (a task run with --json)."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("{", "["))]
    assert lines, f"no JSON on stdout:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


def http_base(box: Sandbox, host: str = "web-1") -> str:
    """http://127.0.0.1:<published port 80> of a local droplet."""
    from provision.state import load_droplets

    droplet = load_droplets(box.environment())[host]
    return f"http://{droplet.address}:{droplet.port(80)}"


# --- Airflow: the DAGs shipped from a git repository of their own, the REST API through nginx ---------

AIRFLOW_SOURCE = PROJECT / "app_src" / "airflow"


def airflow_settings(dags: Path, context: Path = AIRFLOW_SOURCE) -> dict:
    """The ``airflow:`` section of the repository's inventory.yaml, with absolute paths: the image
    built from ``context`` (its tag only depends on the folder's content, so builds are shared),
    the DAGs shipped from ``dags``."""
    section = dict(yaml.safe_load((PROJECT / "inventory.yaml").read_text())["defaults"]["airflow"])
    if "build" in section:
        section["build"] = {**section["build"], "context": str(context)}
    section["dags"] = str(dags)
    return section


class DagRepo(AppRepo):
    """A copy of app_src/airflow/dags in a git repository of its own."""

    @classmethod
    def create(cls, dest: Path, source: Path = AIRFLOW_SOURCE / "dags") -> "DagRepo":
        import shutil

        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        repo = cls(dest)
        repo.git("init", "-q", "-b", "main")
        repo.commit("DAGs v1")
        return repo

    def edit(self, name: str, old: str, new: str, message: str) -> str:
        """Replace ``old`` (exactly once) by ``new`` in ``name`` and commit; the short sha."""
        path = self.root / name
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
        path.write_text(text.replace(old, new))
        return self.commit(message)

    def write(self, name: str, text: str, message: str) -> str:
        (self.root / name).write_text(text)
        return self.commit(message)

    def remove(self, name: str, message: str) -> str:
        (self.root / name).unlink()
        return self.commit(message)


def sandbox_secret(box: Sandbox, name: str) -> str:
    """A generated secret of the sandbox's environment (``.secrets/<env>.yaml``)."""
    path = box.environment().workspace.secrets_path(box.env)
    return str(yaml.safe_load(path.read_text())[name])


class AirflowAPI:
    """Airflow's REST API (v2) as a browser or script reaches it: through the droplet's nginx, with a
    JWT from ``POST <url_path>/auth/token``."""

    def __init__(self, base: str, username: str, password: str, host_header: str | None = None):
        self.base, self.username, self.password = base.rstrip("/"), username, password
        self.host_header = host_header          # a server name of its own, reached at the droplet's address
        self._token: str | None = None

    @classmethod
    def of(cls, box: Sandbox, host: str = "web-1") -> "AirflowAPI":
        af = box.environment().settings.airflow
        return cls(http_base(box, host) + af.url_path, af.admin_user,
                   sandbox_secret(box, af.admin_password.name))

    def call(self, method: str, path: str, body=None, token: str | None = None,
             timeout: float = 30) -> tuple[int, object]:
        """(HTTP status, JSON body, or text when it is not JSON); never raises on an HTTP error."""
        import urllib.error
        import urllib.request

        headers = {"Accept": "application/json", **({"Host": self.host_header} if self.host_header else {})}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def token(self, refresh: bool = False) -> str:
        if self._token is None or refresh:
            status, body = self.call("POST", "/auth/token", {"username": self.username, "password": self.password})
            assert status in (200, 201) and isinstance(body, dict) and body.get("access_token"), \
                f"POST /auth/token: {status} {body}"
            self._token = body["access_token"]
        return self._token

    def get(self, path: str):
        """GET with the token (fetched again once if it expired); the JSON body, asserting 200."""
        status, body = self.call("GET", path, token=self.token())
        if status == 401:
            status, body = self.call("GET", path, token=self.token(refresh=True))
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def post(self, path: str, body) -> tuple[int, object]:
        return self.call("POST", path, body, token=self.token())


def one_error_line(proc) -> str:
    """The run failed with exactly one `error:` line and no traceback; returns that line."""
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


def random_host_key():
    """A host key nobody has: pinning it makes the real host's key look changed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from provision.transport.hostkeys import parse_key_line

    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return parse_key_line(public.decode())
