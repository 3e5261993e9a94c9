"""``inventory.yaml`` validated into typed, frozen objects (pure apart from reading the file).

Every error names the file, the line and the dotted key, says what was expected and how to fix
it. Secrets are never values here, only references (``SecretRef``) resolved by ``secrets``.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import yamlsource
from .errors import InventoryError
from .providers.base import DropletSpec
from .providers.sizes import parse_size
from .workspace import Workspace

ROLES = ("base", "postgres", "docker", "nginx", "app", "airflow", "airflow_worker", "lb")
PROVIDERS = ("local", "digitalocean")
DOCKER_SOURCES = ("distro", "docker-ce")
DEFAULT_LOCAL_CA_GLOB = "/usr/local/share/ca-certificates/**/*.crt"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SIZE_MB = re.compile(r"^(\d+)\s*([MG])$", re.I)
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


@dataclass(frozen=True)
class SecretRef:
    """A secret named in the inventory: ``{env: VAR}`` or ``{secret: name}`` (generated once)."""

    kind: str            # "env" | "secret"
    name: str
    where: str           # "inventory.yaml:12 environments.staging.token" for error messages
    generate: str = "token"   # how a missing {secret: name} is made: "token" or "fernet" (a Fernet key)

    def describe(self) -> str:
        return f"${self.name}" if self.kind == "env" else f"secret '{self.name}'"


@dataclass(frozen=True)
class SshSettings:
    user: str = "deploy"
    bootstrap_user: str = "root"
    port: int = 22
    key: Path | None = None          # private key; None -> generated per environment
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class DatabaseSettings:
    name: str
    user: str
    password: SecretRef
    url_env: tuple[str, ...] = ()     # more names than DATABASE_URL for the app's database URL
    driver: str = ""                  # SQLAlchemy driver in the URL scheme: postgresql+<driver>://


DRIVERS = ("psycopg", "psycopg2", "pg8000", "asyncpg")


@dataclass(frozen=True)
class HealthSettings:
    """The deploy's health gate: the new slot must answer ``path`` on its own port."""

    path: str = "/healthz"
    expect_status: tuple[int, ...] = ()   # () = any 2xx or 3xx
    expect_text: str = ""                 # "" = any body
    timeout: int = 30                     # seconds


@dataclass(frozen=True)
class DockerSettings:
    source: str = "distro"
    log_max_size: str = "10m"
    log_max_file: int = 3


@dataclass(frozen=True)
class PostgresSettings:
    listen_docker_bridge: bool = False
    docker_subnet: str = "172.16.0.0/12"      # every network Docker (and compose) hands out
    docker_bridge_address: str = "172.17.0.1"


LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
TLS_MODES = ("letsencrypt", "off", "custom")


@dataclass(frozen=True)
class ServerTls:
    """HTTPS of one server (its names): a certificate from ACME, one given as secrets, or none."""

    mode: str = "off"                   # parsed: "auto" until resolved (letsencrypt for DNS names, off locally)
    certificate: SecretRef | None = None    # custom: PEM chain and key, never generated
    key: SecretRef | None = None

    @property
    def on(self) -> bool:
        return self.mode in ("letsencrypt", "custom")


@dataclass(frozen=True)
class TlsSettings:
    """The environment's ACME account: where certificates come from."""

    acme_server: str = LETSENCRYPT
    email: str = ""                     # "" = registered without an email (no expiry mails)
    acme_ca: Path | None = None         # a CA the hosts trust for the ACME server (a test server's own)


@dataclass(frozen=True)
class NginxSettings:
    server_name: str = "_"
    tls: ServerTls = ServerTls()
    client_max_body_size: str = "20m"          # the largest request body (uploads) nginx accepts


@dataclass(frozen=True)
class AppSettings:
    """A WSGI (Flask) app a deploy ships: where its code is, how it runs and where nginx serves it."""

    name: str
    database: DatabaseSettings | None = None
    source: Path | None = None                 # folder shipped as a release
    wsgi: str = "wsgi:app"                     # module:variable or module:factory()
    requirements: str = "requirements.txt"     # relative to source
    release_command: str = ""                  # e.g. flask --app wsgi db upgrade
    db_rollback_command: str = ""              # e.g. flask --app wsgi db downgrade {revision}
    keep_releases: int = 5
    health: HealthSettings = HealthSettings()
    port: int = 8000                           # slots listen on port+1 (blue) and port+2 (green)
    workers: int | None = None                 # gunicorn workers; None: derived from the host's size
    env: tuple[tuple[str, str | SecretRef], ...] = ()
    secret_key: SecretRef | None = None        # SECRET_KEY, generated once
    exclude: tuple[str, ...] = (".git", "__pycache__", "*.pyc", ".venv", "tests", ".pytest_cache")
    server_name: str | None = None             # a server of its own (nginx server_name)...
    path: str = ""                             # ...or a path of the default server ("" = its root)
    tls: ServerTls = ServerTls()               # of its own server
    packages: tuple[str, ...] = ()             # apt packages its hosts need (libpq-dev, libgomp1, ffmpeg...)
    request_timeout: int = 60                  # seconds a request may take (gunicorn --timeout, nginx's read timeout)
    shared_dirs: tuple[str, ...] = ()          # folders kept across releases, the app's to write (instance, uploads)

    @property
    def health_path(self) -> str:
        return self.health.path

    @property
    def is_root(self) -> bool:
        """Served at the root of the default server (the one app without a server name or path)."""
        return self.server_name is None and not self.path


@dataclass(frozen=True)
class AirflowBuild:
    """Build the Airflow image from a Dockerfile folder on a base image (no registry needed)."""

    context: Path                    # folder with the Dockerfile (app_src/airflow)
    base_image: str                  # e.g. python:3.12-slim-bookworm; LOCAL_PYTHON_BASE is built here
    where: str = "local"             # local: build here, ship with docker save | docker load; host: build there


LOCAL_PYTHON_BASE = "dropship/python-base:trixie"


AIRFLOW_ROLES = ("Admin", "Op", "User", "Viewer")      # the FAB auth manager's built-in roles
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}   # airflow.executor: Airflow's class


@dataclass(frozen=True)
class AirflowFlower:
    """Flower, Celery's monitoring UI: behind nginx at ``url_path`` of Airflow's server, behind its
    own login (``user`` and the secret ``password``)."""

    url_path: str = "/flower"
    user: str = "flower"
    password: SecretRef = SecretRef("secret", "airflow_flower_password", "")


@dataclass(frozen=True)
class AirflowUser:
    """An account of the Airflow UI and REST API (FAB auth manager); its password is a secret."""

    name: str
    role: str
    email: str
    password: SecretRef
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class AirflowSettings:
    """The Airflow stack of an environment (role ``airflow``)."""

    version: str
    image: str | None                # a registry image (apache/airflow:<version>) pulled on the host...
    build: AirflowBuild | None       # ...or one built from a Dockerfile
    dags: Path | None                # folder deployed as DAG releases
    url_path: str = "/airflow"       # where nginx publishes the UI (never a public port); "" = the root...
    server_name: str | None = None   # ...of a server of its own (nginx server_name), e.g. airflow.example.com
    admin_user: str = "admin"
    admin_password: SecretRef = SecretRef("secret", "airflow_admin_password", "")
    fernet_key: SecretRef = SecretRef("secret", "airflow_fernet_key", "", "fernet")
    jwt_secret: SecretRef = SecretRef("secret", "airflow_jwt_secret", "")
    api_secret_key: SecretRef = SecretRef("secret", "airflow_api_secret_key", "")   # signs UI sessions
    users: tuple[AirflowUser, ...] = ()   # besides admin_user (who is an Admin unless listed here)
    database: DatabaseSettings = DatabaseSettings("airflow", "airflow",
                                                  SecretRef("secret", "airflow_db_password", ""))
    executor: str = "LocalExecutor"     # or CeleryExecutor: a Celery worker, Redis on the host as its broker
    redis_password: SecretRef = SecretRef("secret", "airflow_redis_password", "")   # the broker's (Celery)
    env: tuple[tuple[str, str | SecretRef], ...] = ()   # settings, connections, variables (secret refs too)
    tls: ServerTls = ServerTls()     # of its own server
    flower: AirflowFlower | None = None    # CeleryExecutor only

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"

    def accounts(self) -> tuple[AirflowUser, ...]:
        """Every account provisioning keeps: ``admin_user`` (an Admin with ``admin_password``,
        unless ``users`` gives it a role and email) and ``users``. Any other account is removed."""
        listed = {u.name: u for u in self.users}
        admin = listed.get(self.admin_user) or AirflowUser(self.admin_user, "Admin", f"{self.admin_user}@localhost",
                                                           self.admin_password)
        admin = replace(admin, password=self.admin_password, first_name=admin.first_name or self.admin_user)
        return (admin, *(u for u in self.users if u.name != self.admin_user))


@dataclass(frozen=True)
class OffsiteSettings:
    """S3-compatible object storage (DigitalOcean Spaces) that rclone uploads the encrypted dumps to."""

    endpoint: str                    # https://fra1.digitaloceanspaces.com
    bucket: str
    prefix: str                      # objects go to <bucket>/<prefix>/<stamp>/<database>.dump.age
    access_key_id: SecretRef
    secret_access_key: SecretRef
    region: str = "us-east-1"


@dataclass(frozen=True)
class BackupSettings:
    """Scheduled, encrypted dumps of the host's databases (``backups:``)."""

    schedule: str = "daily"          # systemd OnCalendar
    keep_daily: int = 7
    keep_weekly: int = 4
    identity: SecretRef = SecretRef("secret", "backup_age_identity", "", "age")   # controller only
    offsite: OffsiteSettings | None = None


@dataclass(frozen=True)
class DeploySettings:
    """How a deploy rolls through the web hosts behind a load balancer (``deploy:``)."""

    batch_size: str = "1"            # hosts per batch: a count ("2") or a share of the web hosts ("50%")


@dataclass(frozen=True)
class Settings:
    timezone: str = "UTC"
    swap_mb: int | None = None       # None -> sized from RAM; 0 -> no swap
    firewall_allow: tuple[str, ...] = ("22/tcp", "80/tcp", "443/tcp")
    docker: DockerSettings = field(default_factory=DockerSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    nginx: NginxSettings = field(default_factory=NginxSettings)
    apps: tuple[AppSettings, ...] = ()
    airflow: AirflowSettings | None = None
    tls: TlsSettings = field(default_factory=TlsSettings)
    backups: BackupSettings | None = None
    deploy: DeploySettings = field(default_factory=DeploySettings)

    @property
    def app(self) -> AppSettings | None:
        """The first app (most environments have one)."""
        return self.apps[0] if self.apps else None

    def find_app(self, name: str) -> AppSettings:
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)


@dataclass(frozen=True)
class HostSpec:
    """One host of an environment: a droplet the provider manages, or a fixed address."""

    name: str
    roles: tuple[str, ...]
    droplet: DropletSpec | None = None
    address: str | None = None
    port: int | None = None
    private_address: str = ""        # a fixed host's address on the private network (droplets: from the provider)


@dataclass(frozen=True)
class Environment:
    name: str
    provider: str
    hosts: tuple[HostSpec, ...]
    ssh: SshSettings
    settings: Settings
    ca_certificates: tuple[Path, ...]
    token: SecretRef | None
    inventory_path: Path
    workspace: Workspace

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def secret_refs(self) -> list[SecretRef]:
        refs = [self.token] if self.token else []
        for app in self.settings.apps:
            refs += [app.database.password] if app.database else []
            refs += [app.secret_key] if app.secret_key else []
            refs += [v for _, v in app.env if isinstance(v, SecretRef)]
        af = self.settings.airflow
        if af:
            refs += [af.admin_password, af.fernet_key, af.jwt_secret, af.api_secret_key, af.database.password]
            refs += [u.password for u in af.users if u.name != af.admin_user]
            refs += [af.redis_password] if af.celery else []
            refs += [af.flower.password] if af.flower else []
            refs += [v for _, v in af.env if isinstance(v, SecretRef)]
        servers = [self.settings.nginx.tls] + [a.tls for a in self.settings.apps] + ([af.tls] if af else [])
        refs += [r for t in servers for r in (t.certificate, t.key) if r]
        bk = self.settings.backups
        if bk:
            refs += [bk.identity] + ([bk.offsite.access_key_id, bk.offsite.secret_access_key] if bk.offsite else [])
        return refs


class _Cursor:
    """A position in the loaded YAML: reads typed values and raises located errors."""

    def __init__(self, path: Path, node, key: str, line: int):
        self.path, self.node, self.key, self.line = path, node, key, line

    def fail(self, problem: str, fix: str | None = None, key: str | None = None, line: int | None = None):
        raise InventoryError(self.path, line or self.line, key or self.key, problem, fix)

    def child(self, key, required=False, default=None):
        """The cursor for ``key`` of this mapping, or None when absent and not required."""
        if not isinstance(self.node, dict):
            self.fail(f"expected a mapping, got {_kind(self.node)}", _MAPPING_FIX)
        dotted = f"{self.key}.{key}" if self.key else str(key)
        if key not in self.node or self.node[key] is None:
            if required:
                self.fail(f"missing required key '{key}'", f"add '{key}:' under '{self.key or 'the top level'}'",
                          key=dotted)
            return None if default is None else _Cursor(self.path, default, dotted, self.line)
        return _Cursor(self.path, self.node[key], dotted, self.node.line_of(key))

    def items(self):
        for i, item in enumerate(self.list()):
            yield _Cursor(self.path, item, f"{self.key}[{i}]", self.node.line_of(i))

    def mapping(self, allowed: tuple[str, ...]) -> dict:
        if not isinstance(self.node, dict):
            self.fail(f"expected a mapping, got {_kind(self.node)}", _MAPPING_FIX)
        for key in self.node:
            if key not in allowed:
                self.fail(f"unknown key '{key}'", f"use one of: {', '.join(allowed)}",
                          key=f"{self.key}.{key}" if self.key else str(key), line=self.node.line_of(key))
        return self.node

    def list(self) -> list:
        if not isinstance(self.node, list):
            self.fail(f"expected a list, got {_kind(self.node)}", "write a list like [a, b] or '- a' lines")
        return self.node

    def str(self, pattern: re.Pattern | None = None, hint: str = "") -> str:
        fix = f"write something like {hint}" if hint else "write a quoted string"
        if not isinstance(self.node, str) or not self.node:
            self.fail(f"expected a non-empty string{hint and ' like ' + hint}, got {_kind(self.node)}", fix)
        if pattern and not pattern.fullmatch(self.node):
            self.fail(f"{self.node!r} is not valid{hint and '; expected something like ' + hint}", fix)
        return self.node

    def local_path(self, root: Path, kind: str, fix: str, expand_user: bool = False) -> Path:
        """The string here as a path on this machine (relative to ``root``) that is an existing
        ``kind`` ("folder" or "file"); a path the OS cannot even look up is refused the same way."""
        text = self.str()
        try:
            path = root / (Path(text).expanduser() if expand_user else Path(text))
            path = path.resolve() if kind == "folder" else path
            found = path.is_dir() if kind == "folder" else path.is_file()
        except (OSError, ValueError, RuntimeError) as exc:
            self.fail(f"cannot look up {text[:80]!r}: {getattr(exc, 'strerror', None) or exc}", fix)
        if not found:
            self.fail(f"no such {kind}: {path}", fix)
        return path

    def int(self, lo: int, hi: int) -> int:
        if isinstance(self.node, bool) or not isinstance(self.node, int) or not lo <= self.node <= hi:
            self.fail(f"expected an integer from {lo} to {hi}, got {self.node!r}",
                      f"write a whole number from {lo} to {hi}, without quotes")
        return self.node

    def bool(self) -> bool:
        if not isinstance(self.node, bool):
            self.fail(f"expected true or false, got {self.node!r}", "write true or false, without quotes")
        return self.node

    def choice(self, options: tuple[str, ...]) -> str:
        if self.node not in options:
            self.fail(f"expected one of {', '.join(options)}, got {self.node!r}", f"use one of: {', '.join(options)}")
        return self.node

    def secret(self) -> SecretRef:
        fix = "write {env: VARIABLE} (read from the environment) or {secret: name} (kept in .secrets/)"
        if not isinstance(self.node, dict):
            self.fail("secrets are never written inline; expected a reference", fix)
        node = self.mapping(("env", "secret"))
        if len(node) != 1:
            self.fail("expected exactly one of 'env' or 'secret'", fix)
        kind, name = next(iter(node.items()))
        if not isinstance(name, str) or not re.fullmatch(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            self.fail(f"secret name {name!r} must be letters, digits and underscores", fix)
        return SecretRef(kind, name, f"{self.path.name}:{self.line} {self.key}")


_MAPPING_FIX = "indent 'key: value' lines under it"


def _kind(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def load_inventory(path: str | os.PathLike) -> dict[str, Environment]:
    """Read and validate every environment of the inventory at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(path, None, "(file)", f"cannot read: {exc.strerror}",
                             "run from the project folder or pass --inventory PATH") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise InventoryError(path, line, "(file)", f"not UTF-8 text (byte {exc.object[exc.start]:#04x})",
                             "save the file as UTF-8") from None
    root = _Cursor(path, yamlsource.load(text, path), "", 1)
    if not isinstance(root.node, dict):
        root.fail(f"expected a mapping, got {_kind(root.node)}", _MAPPING_FIX)
    for key in root.node:           # x-… keys hold YAML anchors to reuse (as in Compose files), nothing else
        if key not in ("defaults", "environments") and not (isinstance(key, str) and key.startswith("x-")):
            root.fail(f"unknown key '{key}'", "use defaults, environments, or an x-… key to hold YAML anchors",
                      key=str(key), line=root.node.line_of(key))
    defaults = root.child("defaults", default=yamlsource.LDict(line=1))
    defaults.mapping(_ENV_KEYS)
    envs = root.child("environments", required=True)
    if not isinstance(envs.node, dict) or not envs.node:
        envs.fail("expected a mapping of environment names", "add e.g. 'local:' under 'environments:'")
    workspace = Workspace.beside(path)
    out = {}
    for name in envs.node:
        node = yamlsource.merged(defaults.node, envs.node[name]) \
            if isinstance(envs.node[name], dict) else envs.node[name]
        cursor = _Cursor(path, node, f"environments.{name}", envs.node.line_of(name))
        if not _IDENT.fullmatch(str(name)):
            cursor.fail("environment names are lower-case letters, digits and underscores",
                        "rename it, e.g. 'staging' or 'prod_eu'")
        out[name] = _environment(name, cursor, workspace, path)
    return out


def load_environment(path: str | os.PathLike, env: str) -> Environment:
    envs = load_inventory(path)
    if env not in envs:
        raise InventoryError(Path(path), None, f"environments.{env}", "no such environment",
                             f"use one of: {', '.join(envs)}")
    return envs[env]


_ENV_KEYS = ("provider", "token", "vpc_uuid", "droplets", "hosts", "ssh", "ca_certificates", "timezone", "swap",
             "firewall", "docker", "postgres", "nginx", "app", "apps", "airflow", "tls", "backups", "deploy")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _environment(name: str, c: _Cursor, workspace: Workspace, path: Path) -> Environment:
    c.mapping(_ENV_KEYS)
    provider = c.child("provider", required=True).choice(PROVIDERS)
    token = c.child("token")
    token_ref = token.secret() if token else None
    if provider == "digitalocean" and token_ref is None:
        c.fail("the digitalocean provider needs 'token'", "add 'token: {env: DIGITALOCEAN_TOKEN}'",
               key=f"{c.key}.token")
    vpc = c.child("vpc_uuid")
    if vpc and provider != "digitalocean":
        vpc.fail("vpc_uuid places DigitalOcean droplets in a VPC", "remove it: local droplets share a Docker network")
    hosts = _hosts(c, provider, vpc.str(_UUID, "'760e09ef-dc84-11e8-981e-3cfdfeaae000'") if vpc else "")
    ssh = _ssh(c.child("ssh"), workspace)
    settings = _settings(c, workspace, provider)
    _check_placement(c, hosts, settings)
    _check_workers(c, hosts, settings)
    return Environment(
        name=name, provider=provider, hosts=hosts, ssh=ssh, settings=settings,
        ca_certificates=_ca_certificates(c.child("ca_certificates"), provider, workspace),
        token=token_ref, inventory_path=path.resolve(), workspace=workspace,
    )


def _hosts(c: _Cursor, provider: str, vpc_uuid: str = "") -> tuple[HostSpec, ...]:
    hosts: list[HostSpec] = []
    names: list[_Cursor] = []
    droplets, fixed = c.child("droplets"), c.child("hosts")
    if droplets is None and fixed is None:
        c.fail("no hosts", "add 'droplets:' (created by the provider) or 'hosts:' (fixed addresses)",
               key=f"{c.key}.droplets")
    for item in droplets.items() if droplets else ():
        item.mapping(("name", "size", "region", "image", "tags", "roles"))
        names.append(item.child("name", required=True))
        name = names[-1].str(_NAME, "'web-1'")
        size_c = item.child("size", required=True)
        size = size_c.str()
        try:
            parse_size(size)
        except ValueError:
            size_c.fail(f"{size!r} is not a size slug", "use a slug like 's-2vcpu-4gb'")
        default_region, default_image = ("local", "debian-13") if provider == "local" else (None, None)
        region = item.child("region", required=default_region is None)
        image = item.child("image", required=default_image is None)
        spec = DropletSpec(
            name=name, size=size,
            region=region.str() if region else default_region,
            image=image.str() if image else default_image,
            tags=tuple(t.str(_NAME, "'web'") for t in item.child("tags").items()) if item.child("tags") else (),
            vpc_uuid=vpc_uuid,
        )
        hosts.append(HostSpec(name=name, roles=_roles(item), droplet=spec))
    for item in fixed.items() if fixed else ():
        item.mapping(("name", "address", "port", "private_address", "roles"))
        names.append(item.child("name", required=True))
        name = names[-1].str(_NAME, "'db-1'")
        port, private = item.child("port"), item.child("private_address")
        hosts.append(HostSpec(name=name, roles=_roles(item), address=item.child("address", required=True).str(),
                              port=port.int(1, 65535) if port else None,
                              private_address=private.str(_IPV4, "'10.110.0.2'") if private else ""))
    seen: set[str] = set()
    for h, name_c in zip(hosts, names):
        if h.name in seen:
            name_c.fail(f"host name '{h.name}' is used twice", "give every host its own name")
        seen.add(h.name)
    return tuple(hosts)


def _host_items(c: _Cursor) -> list[_Cursor]:
    """The cursors of the environment's hosts, in the order of ``Environment.hosts``."""
    return [item for key in ("droplets", "hosts") if c.child(key) for item in c.child(key).items()]


def _check_placement(c: _Cursor, hosts: tuple[HostSpec, ...], settings: Settings) -> None:
    """One host at most holds PostgreSQL; when roles are split over hosts, one must if an app's
    database or Airflow needs it (its clients reach it over the private network)."""
    items = _host_items(c)
    _check_balancer(items, hosts)
    _check_balancer_tls(c, hosts, settings)
    pg = [i for i, h in enumerate(hosts) if "postgres" in h.roles]
    if len(pg) > 1:
        second, first = hosts[pg[1]].name, hosts[pg[0]].name
        items[pg[1]].child("roles").fail(f"host '{second}' has the postgres role, and so has '{first}'",
                                         f"remove postgres from the roles of '{second}': one host holds the databases")
    if pg or len(hosts) < 2:
        return
    for item, h in zip(items, hosts):
        needs = [f"app '{a.name}'" for a in settings.apps if a.database] if "app" in h.roles else []
        needs += ["Airflow"] if "airflow" in h.roles and settings.airflow else []
        if needs:
            item.child("roles").fail(f"{needs[0]} on host '{h.name}' needs PostgreSQL, and no host of the "
                                     "environment has the postgres role",
                                     "add postgres to one host's roles, e.g. a host 'db-1' with roles: [base, postgres]")


def _check_balancer(items: list[_Cursor], hosts: tuple[HostSpec, ...]) -> None:
    """At most one lb host, with nginx and without app; with one, at least one app (web) host."""
    lbs = [i for i, h in enumerate(hosts) if "lb" in h.roles]
    if not lbs:
        return
    first = hosts[lbs[0]].name
    if len(lbs) > 1:
        items[lbs[1]].child("roles").fail(f"host '{hosts[lbs[1]].name}' has the lb role, and so has '{first}'",
                                          f"remove lb from the roles of '{hosts[lbs[1]].name}': one host balances")
    roles = items[lbs[0]].child("roles")
    if "app" in hosts[lbs[0]].roles:
        roles.fail(f"host '{first}' has both lb and app (both serve port 80)",
                   "put the app on web hosts of their own, e.g. 'web-1' with roles: [base, nginx, app]")
    if "nginx" not in hosts[lbs[0]].roles:
        roles.fail(f"the lb role of host '{first}' runs on nginx", f"add nginx to the roles of '{first}'")
    if not any("app" in h.roles for h in hosts):
        roles.fail(f"host '{first}' balances web hosts, and no host has the app role",
                   "add app to the roles of one or more web hosts, e.g. 'web-1' with roles: [base, nginx, app]")


def _check_balancer_tls(c: _Cursor, hosts: tuple[HostSpec, ...], settings: Settings) -> None:
    """With an lb host, HTTPS of the default server and of the apps' own servers is the lb's: the
    firewall must let in 443 (and 80, where letsencrypt validates and HTTP redirects)."""
    lb = next((h.name for h in hosts if "lb" in h.roles), None)
    servers = [settings.nginx.tls] + [a.tls for a in settings.apps if a.server_name]
    if lb is None or not any(t.on for t in servers) or c.child("firewall") is None:
        return
    allow = c.child("firewall").child("allow")
    for port in ("80/tcp", "443/tcp"):
        if port not in settings.firewall_allow:
            allow.fail(f"host '{lb}' serves HTTPS for the web hosts, and {port.split('/')[0]} is not allowed",
                       f"add {port.split('/')[0]} to firewall.allow (HTTPS, and port 80 for the ACME "
                       "validations and the redirect to HTTPS)")


def _check_workers(c: _Cursor, hosts: tuple[HostSpec, ...], settings: Settings) -> None:
    """``airflow_worker`` hosts run Celery workers for the one ``airflow`` host (executor celery), with
    Docker, and never beside the airflow role."""
    airflow = [h.name for h in hosts if "airflow" in h.roles]
    for item, h in zip(_host_items(c), hosts):
        if "airflow_worker" not in h.roles:
            continue
        roles = item.child("roles")
        if "airflow" in h.roles:
            roles.fail(f"host '{h.name}' has both airflow and airflow_worker (workers run on the worker hosts)",
                       "remove airflow_worker from its roles, or airflow to make it a worker host")
        if not (settings.airflow and settings.airflow.celery):
            roles.fail(f"airflow_worker on host '{h.name}' needs the CeleryExecutor",
                       "set airflow.executor: celery (with an airflow: section), or remove airflow_worker")
        if len(airflow) != 1:
            roles.fail(f"airflow_worker on host '{h.name}' needs exactly one host with the airflow role, "
                       f"found {len(airflow)}" + (f" ({', '.join(airflow)})" if airflow else ""),
                       "give the airflow role to one host (its scheduler and Redis serve the workers)")
        if "docker" not in h.roles:
            roles.fail(f"airflow_worker on host '{h.name}' needs Docker (the worker is a container)",
                       "add docker to its roles, e.g. roles: [base, docker, airflow_worker]")


def _roles(item: _Cursor) -> tuple[str, ...]:
    roles = item.child("roles", required=True)
    out = []
    for r in roles.items():
        out.append(r.choice(ROLES))
    if not out:
        roles.fail("expected at least one role", f"list roles from: {', '.join(ROLES)}")
    return tuple(out)


def _ssh(c: _Cursor | None, workspace: Workspace) -> SshSettings:
    if c is None:
        return SshSettings()
    c.mapping(("user", "bootstrap_user", "port", "key", "connect_timeout"))
    key = c.child("key")
    user = c.child("user")
    boot = c.child("bootstrap_user")
    port = c.child("port")
    timeout = c.child("connect_timeout")
    return SshSettings(
        user=user.str(re.compile(r"^[a-z_][a-z0-9_-]*$"), "'deploy'") if user else "deploy",
        bootstrap_user=boot.str() if boot else "root",
        port=port.int(1, 65535) if port else 22,
        key=(workspace.root / Path(key.str()).expanduser()) if key else None,
        connect_timeout=float(timeout.int(1, 300)) if timeout else 10.0,
    )


def _ca_certificates(c: _Cursor | None, provider: str, workspace: Workspace) -> tuple[Path, ...]:
    """Listed CA files; for the local provider the default is the controller's extra CAs."""
    if c is None:
        if provider != "local":
            return ()
        return tuple(sorted(Path(p) for p in glob.glob(DEFAULT_LOCAL_CA_GLOB, recursive=True)))
    out = []
    for item in c.items():
        out.append(item.local_path(workspace.root, "file", "list PEM certificate files that exist", expand_user=True))
    return tuple(out)


def _settings(c: _Cursor, workspace: Workspace, provider: str = "local") -> Settings:
    tz = c.child("timezone")
    timezone = tz.str(re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$"), "'Europe/Berlin'") if tz else "UTC"
    nginx, airflow = _nginx(c.child("nginx")), _airflow(c.child("airflow"), workspace)
    if airflow and airflow.server_name and airflow.server_name == nginx.server_name:
        c.child("airflow").child("server_name").fail(
            "is also nginx.server_name (the app's server)", "give Airflow a name of its own, e.g. airflow.<domain>")
    nginx = replace(nginx, tls=_resolve_tls(nginx.tls, nginx.server_name, provider, c.child("nginx")))
    apps = _apps(c, workspace, airflow)
    apps = tuple(replace(a, tls=_resolve_tls(a.tls, a.server_name, provider, _app_cursor(c, i)))
                 if a.server_name else replace(a, tls=ServerTls("off")) for i, a in enumerate(apps))
    if airflow:
        airflow = replace(airflow, tls=_resolve_tls(airflow.tls, airflow.server_name, provider, c.child("airflow"))
                          if airflow.server_name else ServerTls("off"))
    return Settings(
        timezone=timezone, swap_mb=_swap(c.child("swap")), firewall_allow=_firewall(c.child("firewall")),
        docker=_docker(c.child("docker")), postgres=_postgres(c.child("postgres")),
        nginx=nginx, apps=apps, airflow=airflow, tls=_tls(c.child("tls"), workspace),
        backups=_backups(c.child("backups"), c.key.rsplit(".", 1)[-1]),
        deploy=_deploy(c.child("deploy")),
    )


_BATCH = re.compile(r"^([1-9]\d{0,3})(%?)$")


def _deploy(c: _Cursor | None) -> DeploySettings:
    if c is None:
        return DeploySettings()
    c.mapping(("batch_size",))
    size = c.child("batch_size")
    if size is None:
        return DeploySettings()
    m = _BATCH.fullmatch(str(size.node)) if not isinstance(size.node, bool) else None
    if not m or (m.group(2) and int(m.group(1)) > 100):
        size.fail(f"expected a number of hosts like 2 or a share like '50%', got {size.node!r}",
                  "write a whole number from 1, or a percentage from 1% to 100%")
    return DeploySettings(batch_size=str(size.node))


def _app_cursor(c: _Cursor, i: int) -> _Cursor:
    """The cursor of the i-th app (under ``app:`` or ``apps:``)."""
    return c.child("app") if c.child("app") is not None else list(c.child("apps").items())[i]


def _swap(c: _Cursor | None) -> int | None:
    if c is None or c.node == "auto":
        return None
    if c.node is False or c.node == "off":
        return 0
    m = _SIZE_MB.fullmatch(str(c.node))
    if not m:
        c.fail(f"expected auto, off or a size like 2G or 512M, got {c.node!r}", "write auto, off, 2G or 512M")
    return int(m.group(1)) * (1024 if m.group(2).upper() == "G" else 1)


def _firewall(c: _Cursor | None) -> tuple[str, ...]:
    if c is None:
        return Settings.firewall_allow
    c.mapping(("allow",))
    allow = c.child("allow", required=True)
    out = []
    for item in allow.items():
        value = str(item.node)
        m = re.fullmatch(r"^(\d{1,5})(?:/(tcp|udp))?$", value)
        if not m or not 0 < int(m.group(1)) < 65536:
            item.fail(f"expected a port like 22 or 53/udp, got {item.node!r}", "list ports like 22, 443 or 53/udp")
        out.append(f"{m.group(1)}/{m.group(2) or 'tcp'}")
    if "22/tcp" not in out:
        allow.fail("SSH (22) must stay allowed or the next run locks itself out", "add 22 to firewall.allow")
    return tuple(out)


def _docker(c: _Cursor | None) -> DockerSettings:
    if c is None:
        return DockerSettings()
    c.mapping(("source", "log_max_size", "log_max_file"))
    src, size, files = c.child("source"), c.child("log_max_size"), c.child("log_max_file")
    return DockerSettings(
        source=src.choice(DOCKER_SOURCES) if src else "distro",
        log_max_size=size.str(re.compile(r"^\d+[kmg]$"), "'10m'") if size else "10m",
        log_max_file=files.int(1, 100) if files else 3,
    )


def _postgres(c: _Cursor | None) -> PostgresSettings:
    if c is None:
        return PostgresSettings()
    c.mapping(("listen_docker_bridge", "docker_subnet", "docker_bridge_address"))
    bridge, subnet, addr = c.child("listen_docker_bridge"), c.child("docker_subnet"), c.child("docker_bridge_address")
    return PostgresSettings(
        listen_docker_bridge=bridge.bool() if bridge else False,
        docker_subnet=subnet.str(re.compile(r"^\d+\.\d+\.\d+\.\d+/\d+$"), "'172.16.0.0/12'") if subnet
        else PostgresSettings.docker_subnet,
        docker_bridge_address=addr.str(re.compile(r"^\d+\.\d+\.\d+\.\d+$"), "'172.17.0.1'") if addr
        else PostgresSettings.docker_bridge_address,
    )


def _nginx(c: _Cursor | None) -> NginxSettings:
    if c is None:
        return NginxSettings()
    c.mapping(("server_name", "tls", "client_max_body_size"))
    name, body = c.child("server_name"), c.child("client_max_body_size")
    names = "_" if name is None or name.node == "_" else _server_names(name)
    return NginxSettings(server_name=names, tls=_server_tls(c.child("tls")),
                         client_max_body_size=_nginx_size(body) if body else NginxSettings.client_max_body_size)


def _nginx_size(c: _Cursor) -> str:
    """An nginx size, lower-cased: ``0`` (no limit), ``512k``, ``100m``, ``1g``."""
    if isinstance(c.node, int) and not isinstance(c.node, bool) and c.node >= 0:
        return str(c.node)
    return c.str(_SIZE, "'100m'").lower()


def _server_tls(c: _Cursor | None) -> ServerTls:
    """``letsencrypt``, ``off``, or ``{custom: {certificate: SECRET, key: SECRET}}``."""
    if c is None:
        return ServerTls("auto")
    if isinstance(c.node, dict):
        c.mapping(("custom",))
        custom = c.child("custom", required=True)
        custom.mapping(("certificate", "key"))
        cert, key = (replace(custom.child(k, required=True).secret(), generate="never") for k in ("certificate", "key"))
        return ServerTls("custom", cert, key)
    mode = "off" if c.node is False else c.node
    if mode == "custom":
        c.fail("a custom certificate needs its secrets",
               "write tls: {custom: {certificate: {env: CERT_PEM}, key: {env: KEY_PEM}}}")
    return ServerTls(_Cursor(c.path, mode, c.key, c.line).choice(("letsencrypt", "off")))


def _tls(c: _Cursor | None, workspace: Workspace) -> TlsSettings:
    if c is None:
        return TlsSettings()
    c.mapping(("acme_server", "email", "acme_ca"))
    server, email, ca = c.child("acme_server"), c.child("email"), c.child("acme_ca")
    return TlsSettings(
        acme_server=server.str(re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$"),
                               "'https://acme-staging-v02.api.letsencrypt.org/directory'") if server else LETSENCRYPT,
        email=email.str(re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"), "'ops@example.com'")
        if email else "",
        acme_ca=ca.local_path(workspace.root, "file", "point tls.acme_ca at the ACME server's CA (PEM)",
                              expand_user=True) if ca else None,
    )


def _resolve_tls(tls: ServerTls, names: str, provider: str, c: _Cursor | None) -> ServerTls:
    """``auto`` becomes letsencrypt for DNS names (off on the local provider); letsencrypt needs
    names an HTTP-01 validation can reach: no ``_``, no wildcard."""
    real = names != "_" and all(_HOSTNAME.fullmatch(n) for n in names.split())
    if tls.mode == "auto":
        return replace(tls, mode="letsencrypt" if real and provider != "local" else "off")
    if tls.mode == "letsencrypt" and not real:
        where = c.child("tls") if c is not None and c.child("tls") else c
        (where or c).fail(f"letsencrypt needs DNS names (no '_', no wildcard), the server name is {names!r}",
                          "set server_name to the domain(s) pointing at the droplet, or tls: off")
    return tls


# module:variable, or module:factory(...) with literal arguments (as gunicorn takes them): strings of
# plain characters, numbers, True, False, None, positional or by keyword.
_WSGI_LITERAL = r"""(?:'[A-Za-z0-9_./:@ -]*'|"[A-Za-z0-9_./:@ -]*"|-?[0-9]+(?:\.[0-9]+)?|True|False|None)"""
_WSGI_ARG = rf"(?:[A-Za-z_][A-Za-z0-9_]* ?= ?)?{_WSGI_LITERAL}"
_WSGI = re.compile(rf"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*(\((?:{_WSGI_ARG}(?:, ?{_WSGI_ARG})*)?\))?$")
_SIZE = re.compile(r"^[0-9]{1,6}[kKmMgG]?$")          # nginx sizes: 0 (no limit), 512k, 100m, 1g
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")        # a Debian package name
_REL_PATH = re.compile(r"^(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_][A-Za-z0-9_./-]*$")
_SHARED_DIR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")   # no dot first: not .env
_URL_PATH = re.compile(r"^/[A-Za-z0-9._~/%?=&+,:@-]*$")
_PREFIX = re.compile(r"^(/[a-z0-9_-]+)+$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SERVER_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
RESERVED_USERS = ("root", "daemon", "bin", "sys", "nobody", "postgres", "www-data", "airflow", "docker", "nginx",
                  "sshd", "systemd-network", "messagebus")
_APP_KEYS = ("name", "database", "source", "wsgi", "requirements", "env", "release_command", "db_rollback_command",
             "keep_releases", "health_path", "health", "port", "workers", "secret_key", "exclude", "server_name",
             "path", "tls", "packages", "request_timeout", "shared_dirs")


def _apps(c: _Cursor, workspace: Workspace, airflow: AirflowSettings | None) -> tuple[AppSettings, ...]:
    """``apps:`` (a list) or ``app:`` (the one-app shorthand), each validated, then checked together."""
    one, many = c.child("app"), c.child("apps")
    if one is not None and many is not None:
        many.fail("set either 'app:' (one app) or 'apps:' (a list), not both (keys under defaults count too)",
                  "move the app of 'app:' into the 'apps:' list")
    items = [one] if one is not None else list(many.items()) if many is not None else []
    apps: list[AppSettings] = []
    for i, item in enumerate(items):
        app = _app(item, workspace, default_port=AppSettings.port + 10 * i)
        _check_against(item, app, apps, airflow)
        apps.append(app)
    return tuple(apps)


def _check_against(c: _Cursor, app: AppSettings, earlier: list[AppSettings], airflow: AirflowSettings | None) -> None:
    """Names, ports, databases and where nginx serves it: no clash with the apps before it or Airflow."""
    ports = {app.port + 1, app.port + 2}
    for other in earlier:
        if other.name == app.name:
            c.child("name").fail(f"app name '{app.name}' is used twice", "give every app its own name")
        if ports & {other.port + 1, other.port + 2}:
            (c.child("port") or c).fail(f"ports {app.port + 1}-{app.port + 2} clash with app '{other.name}'",
                                        f"set a port at least 10 apart from {other.port}")
        if app.is_root and other.is_root:
            c.fail(f"apps '{other.name}' and '{app.name}' both want the root of the default server",
                   "give one of them 'server_name:' (a server of its own) or 'path:' (e.g. /blog)")
        if app.path and app.path == other.path:
            c.child("path").fail(f"path {app.path} is also app '{other.name}'s", "give every app its own path")
        if app.server_name and other.server_name and set(app.server_name.split()) & set(other.server_name.split()):
            c.child("server_name").fail(f"a server name of app '{other.name}' is repeated",
                                        "give every app its own server names")
        if app.database and other.database and app.database.name == other.database.name \
                and app.database.user != other.database.user:
            c.child("database").fail(f"database {app.database.name} is app '{other.name}''s with another owner",
                                     "use another database name, or the same user")
    if airflow and 8080 in ports:
        (c.child("port") or c).fail("port 8080 is the Airflow api-server's", "choose another port, e.g. 8100")
    if airflow and not airflow.server_name and app.path and app.path == airflow.url_path:
        c.child("path").fail(f"{app.path} is Airflow's url_path", "choose another path for the app")
    if airflow and airflow.flower and not airflow.server_name and app.path == airflow.flower.url_path:
        c.child("path").fail(f"{app.path} is Flower's url_path (airflow.flower)", "choose another path for the app")
    if airflow and airflow.server_name and app.server_name and airflow.server_name in app.server_name.split():
        c.child("server_name").fail(f"{airflow.server_name} is airflow.server_name", "give the app another name")


def _app(c: _Cursor, workspace: Workspace, default_port: int = AppSettings.port) -> AppSettings:
    c.mapping(_APP_KEYS)
    d = AppSettings
    name = c.child("name", required=True).str(_NAME, "'names'")
    if len(name) > 32 or name in RESERVED_USERS:
        c.child("name").fail(f"'{name}' cannot be the app's system user name" + (" (too long)" if len(name) > 32 else
                             " (a system user)"), "choose another name of at most 32 characters, e.g. 'shop'")
    database = _database(c.child("database"))
    source = c.child("source")
    source_path = None
    if source:
        source_path = source.local_path(workspace.root, "folder", "point app.source at the folder to ship")
    env = _app_env(c.child("env"), database)
    health_path, health = c.child("health_path"), c.child("health")
    if health_path and health:
        health_path.fail("set either 'health_path' or 'health: {path: ...}', not both", "keep 'health:'")
    server, path = c.child("server_name"), c.child("path")
    server_name = _server_names(server) if server else None
    prefix = path.str(_PREFIX, "'/blog'") if path else ""
    if server_name and prefix:
        path.fail("'path' places an app on the default server; this app has a server of its own",
                  "remove 'path' or 'server_name'")
    tls = c.child("tls")
    if tls and not server_name:
        tls.fail("an app without a server of its own is served over the default server's HTTPS",
                 "set nginx.tls instead, or give the app a server_name")

    def opt(key: str, parse, default):
        found = c.child(key)
        return parse(found) if found else default

    requirements = opt("requirements", lambda x: x.str(_REL_PATH, "'requirements/prod.txt'"), d.requirements)
    return AppSettings(
        name=name, database=database, source=source_path,
        wsgi=opt("wsgi", lambda x: x.str(_WSGI, "'wsgi:app', 'package:create_app()' or "
                                                  "'package:create_app(\"production\")'"), d.wsgi),
        requirements=requirements,
        release_command=opt("release_command", _command, d.release_command),
        db_rollback_command=opt("db_rollback_command", _rollback_command, d.db_rollback_command),
        keep_releases=opt("keep_releases", lambda x: x.int(1, 100), d.keep_releases),
        health=_health(health) if health else HealthSettings(path=_health_path(health_path) if health_path
                                                             else HealthSettings.path),
        port=opt("port", lambda x: x.int(1024, 65000), default_port),
        workers=opt("workers", lambda x: x.int(1, 64), d.workers),
        env=env,
        secret_key=opt("secret_key", lambda x: x.secret(),
                       SecretRef("secret", f"{name.replace('-', '_')}_secret_key", "")),
        exclude=opt("exclude", lambda x: tuple(i.str() for i in x.items()), d.exclude),
        server_name=server_name, path=prefix, tls=_server_tls(tls),
        packages=opt("packages", lambda x: tuple(dict.fromkeys(i.str(_PACKAGE, "'libpq-dev'") for i in x.items())),
                     d.packages),
        request_timeout=opt("request_timeout", lambda x: x.int(5, 3600), d.request_timeout),
        shared_dirs=opt("shared_dirs", lambda x: _shared_dirs(x, requirements), d.shared_dirs),
    )


def _shared_dirs(c: _Cursor, requirements: str) -> tuple[str, ...]:
    """Relative folders of the release, none inside another, none holding the requirements."""
    out: list[str] = []
    for item in c.items():
        path = item.str(_SHARED_DIR, "'instance' or 'media/uploads' (relative, not starting with a dot)")
        for other in out:
            if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                item.fail(f"'{path}' overlaps '{other}'", "list each folder once, and none inside another")
        if requirements == path or requirements.startswith(path + "/"):
            item.fail(f"'{path}' holds the requirements file {requirements}, which ships with each release",
                      "share a folder that holds only what the app writes")
        out.append(path)
    return tuple(out)


def _database(c: _Cursor | None) -> DatabaseSettings | None:
    if c is None:
        return None
    c.mapping(("name", "user", "password", "url_env", "driver"))
    url_env, driver = c.child("url_env"), c.child("driver")
    names = tuple(i.str(_ENV_NAME, "'SQLALCHEMY_DATABASE_URI'") for i in url_env.items()) if url_env else ()
    return DatabaseSettings(
        name=c.child("name", required=True).str(_IDENT, "'names'"),
        user=c.child("user", required=True).str(_IDENT, "'names'"),
        password=c.child("password", required=True).secret(),
        url_env=tuple(n for n in names if n != "DATABASE_URL"),
        driver=driver.choice(DRIVERS) if driver else "",
    )


_AIRFLOW_ENV = re.compile(r"AIRFLOW__[A-Z0-9_]+__[A-Z0-9_]+|AIRFLOW_(?:CONN|VAR)_[A-Z0-9_]+")
# Settings Dropship wires together (the services, nginx, the DAG releases rely on them), and the
# inventory key that sets each instead; sizing-derived ones (PARALLELISM, WORKER_CONCURRENCY) may be set.
_AIRFLOW_WIRED = {
    "AIRFLOW__CORE__EXECUTOR": "set airflow.executor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "set airflow.database",
    "AIRFLOW__CELERY__RESULT_BACKEND": "set airflow.database",
    "AIRFLOW__CELERY__BROKER_URL": "set airflow.redis_password",
    "AIRFLOW__CORE__FERNET_KEY": "set airflow.fernet_key",
    "AIRFLOW__API_AUTH__JWT_SECRET": "set airflow.jwt_secret",
    "AIRFLOW__API__SECRET_KEY": "set airflow.api_secret_key",
    "AIRFLOW__CORE__DAGS_FOLDER": "set airflow.dags (deploys switch the folder the services read)",
    "AIRFLOW__API__BASE_URL": "set airflow.url_path or airflow.server_name",
    "AIRFLOW__CORE__AUTH_MANAGER": "Dropship's accounts need Airflow's FAB auth manager (airflow.users)",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "Dropship points tasks at the api-server, also from worker hosts",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker hosts need their own names: task logs are read there",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "the scheduler's health check needs it",
    "AIRFLOW__CELERY__FLOWER_URL_PREFIX": "set airflow.flower",
    "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": "set airflow.flower",
}


def _airflow_env(c: _Cursor | None) -> tuple[tuple[str, str | SecretRef], ...]:
    """Airflow's settings (``AIRFLOW__SECTION__KEY``), connections (``AIRFLOW_CONN_ID``) and variables
    (``AIRFLOW_VAR_NAME``): a value or a secret reference, never generated (a password, a connection URI)."""
    if c is None:
        return ()
    c.mapping(tuple(c.node.keys()) if isinstance(c.node, dict) else ())
    out = []
    for key in c.node:
        item = c.child(key)
        if not _AIRFLOW_ENV.fullmatch(str(key)):
            (item or c).fail(f"{key} is not an Airflow setting, connection or variable",
                             "name it AIRFLOW__<SECTION>__<KEY>, AIRFLOW_CONN_<CONN_ID> or AIRFLOW_VAR_<NAME>",
                             key=f"{c.key}.{key}", line=c.node.line_of(key))
        if item is None:
            c.fail(f"{key} has no value", "write a value, or a secret reference", key=f"{c.key}.{key}",
                   line=c.node.line_of(key))
        if key in _AIRFLOW_WIRED:
            item.fail(f"{key} is set by Dropship", f"remove it: {_AIRFLOW_WIRED[key]}")
        if isinstance(item.node, dict):
            out.append((str(key), replace(item.secret(), generate="never")))
        elif isinstance(item.node, (list, type(None))):
            item.fail(f"expected a string, a number or a secret reference, got {_kind(item.node)}",
                      "quote the value, or write {secret: name}")
        elif "\0" in str(item.node):
            item.fail("a value cannot hold a NUL character", "remove it")
        else:
            out.append((str(key), str(item.node)))
    return tuple(out)


def _app_env(c: _Cursor | None, database: DatabaseSettings | None) -> tuple[tuple[str, str | SecretRef], ...]:
    if c is None:
        return ()
    if not isinstance(c.node, dict):
        c.fail(f"expected a mapping of NAME: value, got {_kind(c.node)}", "write e.g. 'FLASK_CONFIG: production'")
    taken = {"DROPSHIP_RELEASE", "DROPSHIP_GUNICORN_FLAGS", "RELEASE_ID", "PORT", "SLOT", "SCRIPT_NAME"}
    taken |= {"DATABASE_URL", *database.url_env} if database else set()
    out = []
    for key in c.node:
        item = c.child(key)
        if item is None:
            c.fail(f"{key} has no value", "write a value, or a secret reference", key=f"{c.key}.{key}",
                   line=c.node.line_of(key))
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            item.fail("environment variable names are upper-case letters, digits and underscores",
                      "rename it, e.g. FLASK_CONFIG")
        if key in taken:
            item.fail(f"{key} is set by Dropship", "remove it, or name the variable differently")
        if isinstance(item.node, dict):
            value = item.secret()
        elif isinstance(item.node, bool) or not isinstance(item.node, (str, int, float)):
            item.fail(f"expected a string, a number or a secret reference, got {_kind(item.node)}",
                      "quote the value, or write {secret: name}")
        else:
            value = str(item.node)
            if "\0" in value:
                item.fail("a value cannot hold a NUL character", "remove it")
        out.append((key, value))
    return tuple(out)


def _command(c: _Cursor) -> str:
    value = c.str()
    if "\0" in value:
        c.fail("a command cannot hold a NUL character", "remove it")
    return value


def _rollback_command(c: _Cursor) -> str:
    value = _command(c)
    if "{revision}" not in value:
        c.fail("the command needs a {revision} placeholder", "e.g. 'flask --app wsgi db downgrade {revision}'")
    return value


def _health_path(c: _Cursor) -> str:
    return c.str(_URL_PATH, "'/healthz' (letters, digits and /._~%?=&+,:@- only)")


def _health(c: _Cursor) -> HealthSettings:
    c.mapping(("path", "expect_status", "expect_text", "timeout"))
    path, status, text, timeout = (c.child(k) for k in ("path", "expect_status", "expect_text", "timeout"))
    codes: tuple[int, ...] = ()
    if status is not None:
        items = list(status.items()) if isinstance(status.node, list) else [status]
        codes = tuple(i.int(100, 599) for i in items)
    expect = text.str() if text else ""
    if "\n" in expect or "\0" in expect:
        text.fail("expected text on one line", "use a short piece of the page, on one line")
    return HealthSettings(path=_health_path(path) if path else HealthSettings.path, expect_status=codes,
                          expect_text=expect, timeout=timeout.int(1, 600) if timeout else HealthSettings.timeout)


def _server_names(c: _Cursor) -> str:
    """Space-separated DNS names (a leading ``*.`` allowed), as nginx's ``server_name`` takes them."""
    names = c.str().split() if isinstance(c.node, str) else []
    if not names or any(not _SERVER_NAME.fullmatch(n) for n in names):
        c.fail(f"expected DNS names like 'shop.example.com www.shop.example.com', got {c.node!r}",
               "write lower-case DNS names separated by spaces")
    return " ".join(names)


def _airflow(c: _Cursor | None, workspace: Workspace) -> AirflowSettings | None:
    if c is None:
        return None
    c.mapping(("version", "image", "build", "dags", "url_path", "server_name", "admin_user", "admin_password", "fernet_key",
               "jwt_secret", "api_secret_key", "users", "database", "executor", "redis_password", "env", "tls",
               "flower"))
    version = c.child("version", required=True).str(re.compile(r"^\d+\.\d+\.\d+$"), "'3.3.2'")
    image, build = c.child("image"), c.child("build")
    if (image is None) == (build is None):
        c.fail("set exactly one of 'image' (a registry image) or 'build' (a Dockerfile folder)",
               "e.g. image: apache/airflow:" + version + "  or  build: {context: app_src/airflow}")
    built = None
    if build:
        build.mapping(("context", "base_image", "where"))
        ctx = build.child("context", required=True)
        path = ctx.local_path(workspace.root, "folder", "point build.context at the folder holding the Dockerfile")
        if not (path / "Dockerfile").is_file():
            ctx.fail(f"no Dockerfile in {path}", "point build.context at the folder holding the Dockerfile")
        base, where = build.child("base_image"), build.child("where")
        built = AirflowBuild(path, base.str() if base else LOCAL_PYTHON_BASE,
                             where.choice(("local", "host")) if where else "local")
    dags = c.child("dags")
    dags_path = None
    if dags:
        dags_path = dags.local_path(workspace.root, "folder", "point airflow.dags at the DAGs folder")
    db = c.child("database")
    database = AirflowSettings.database
    if db:
        db.mapping(("name", "user", "password"))
        database = DatabaseSettings(db.child("name", required=True).str(_IDENT, "'airflow'"),
                                    db.child("user", required=True).str(_IDENT, "'airflow'"),
                                    db.child("password", required=True).secret())
    env = _airflow_env(c.child("env"))
    opt = {k: c.child(k) for k in ("url_path", "admin_user", "admin_password", "fernet_key", "jwt_secret",
                                   "api_secret_key", "executor", "redis_password")}
    server, tls = c.child("server_name"), c.child("tls")
    server_name = server.str(_HOSTNAME, "'airflow.example.com'") if server else None
    if tls and not server_name:
        tls.fail("Airflow at a path is served over the default server's HTTPS",
                 "set nginx.tls instead, or give Airflow a server_name")
    path = opt["url_path"]
    url_path = path.str(re.compile(r"^/([a-z0-9_-]+)?$"), "'/airflow'") if path else ("" if server_name else "/airflow")
    if url_path == "/":
        if not server_name:
            path.fail("'/' is the app's: the UI needs a path of its own, or a server of its own",
                      "use a path like '/airflow', or set airflow.server_name")
        url_path = ""
    d = AirflowSettings
    executor = _executor(opt["executor"]) if opt["executor"] else d.executor
    return AirflowSettings(
        version=version, image=image.str() if image else None, build=built, dags=dags_path,
        url_path=url_path, server_name=server_name,
        admin_user=opt["admin_user"].str(_IDENT, "'admin'") if opt["admin_user"] else d.admin_user,
        admin_password=opt["admin_password"].secret() if opt["admin_password"] else d.admin_password,
        fernet_key=replace(opt["fernet_key"].secret(), generate="fernet") if opt["fernet_key"] else d.fernet_key,
        jwt_secret=opt["jwt_secret"].secret() if opt["jwt_secret"] else d.jwt_secret,
        api_secret_key=opt["api_secret_key"].secret() if opt["api_secret_key"] else d.api_secret_key,
        users=_airflow_users(c.child("users")),
        database=database,
        executor=executor,
        redis_password=opt["redis_password"].secret() if opt["redis_password"] else d.redis_password,
        env=tuple(env), tls=_server_tls(tls),
        flower=_flower(c.child("flower"), executor, url_path),
    )


def _flower(c: _Cursor | None, executor: str, airflow_path: str) -> AirflowFlower | None:
    """``flower: true`` (the defaults) or ``{url_path, user, password}``; the CeleryExecutor's only."""
    if c is None or (not isinstance(c.node, dict) and not c.bool()):
        return None
    if executor != EXECUTORS["celery"]:
        c.fail("Flower watches Celery workers", "set airflow.executor: celery, or remove airflow.flower")
    d = AirflowFlower()
    if not isinstance(c.node, dict):
        return d
    c.mapping(("url_path", "user", "password"))
    path, user, password = c.child("url_path"), c.child("user"), c.child("password")
    url_path = path.str(re.compile(r"^/[a-z0-9_-]+$"), "'/flower'") if path else d.url_path
    if url_path == airflow_path:
        path.fail(f"{url_path} is Airflow's url_path", "give Flower a path of its own, e.g. '/flower'")
    return AirflowFlower(url_path, user.str(_IDENT, "'flower'") if user else d.user,
                         password.secret() if password else d.password)


def _executor(c: _Cursor) -> str:
    """``local`` or ``celery`` (or Airflow's class name for either) as Airflow's class name."""
    name = c.choice((*EXECUTORS, *EXECUTORS.values()))
    return EXECUTORS.get(name, name)


_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
_PERSON = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


def _airflow_users(c: _Cursor | None) -> tuple[AirflowUser, ...]:
    """``airflow.users``: ``[{name, role, email, first_name?, last_name?, password?}]``; the password
    defaults to the generated secret ``airflow_user_<name>_password``."""
    users: list[AirflowUser] = []
    seen: dict[str, str] = {}
    for item in c.items() if c else ():
        item.mapping(("name", "role", "email", "first_name", "last_name", "password"))
        name = item.child("name", required=True).str(_USERNAME, "'alice' (lower-case letters, digits, . _ -)")
        role = item.child("role", required=True).choice(AIRFLOW_ROLES)
        email = item.child("email", required=True).str(_EMAIL, "'alice@example.com'")
        for key, value in (("name", name), ("email", email.lower())):
            if (key, value) in seen:
                item.child(key).fail(f"{value!r} is listed twice ({seen[(key, value)]})",
                                     f"give each user a {key} of its own")
            seen[(key, value)] = item.key
        first, last, password = (item.child(k) for k in ("first_name", "last_name", "password"))
        secret = re.sub(r"[^a-z0-9_]", "_", name)
        default = SecretRef("secret", f"airflow_user_{secret}_password", f"{item.path.name}:{item.line} {item.key}")
        if not password and ("secret", default.name) in seen:
            item.child("name").fail(f"{name!r} and {seen[('secret', default.name)]} would share the secret "
                                    f"{default.name}", "rename one, or give one a password: {secret: NAME}")
        seen[("secret", default.name)] = item.key
        users.append(AirflowUser(name, role, email, password.secret() if password else default,
                                 first.str(_PERSON, "'Alice'") if first else name,
                                 last.str(_PERSON, "'Smith'") if last else ""))
    return tuple(users)


_CALENDAR = re.compile(r"^[A-Za-z0-9*:/,.~ +-]{1,100}$")     # systemd OnCalendar's alphabet, one line
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_OBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$")


def _backups(c: _Cursor | None, env_name: str) -> BackupSettings | None:
    if c is None:
        return None
    c.mapping(("schedule", "keep_daily", "keep_weekly", "identity", "offsite"))
    d = BackupSettings
    schedule, daily, weekly, identity = (c.child(k) for k in ("schedule", "keep_daily", "keep_weekly", "identity"))
    offsite = c.child("offsite")
    site = None
    if offsite:
        offsite.mapping(("endpoint", "bucket", "prefix", "region", "access_key_id", "secret_access_key"))
        prefix, region = offsite.child("prefix"), offsite.child("region")
        site = OffsiteSettings(
            endpoint=offsite.child("endpoint", required=True).str(_ENDPOINT, "'https://fra1.digitaloceanspaces.com'"),
            bucket=offsite.child("bucket", required=True).str(_BUCKET, "'acme-backups'"),
            prefix=prefix.str(_OBJECT_PREFIX, "'staging'") if prefix else env_name,
            access_key_id=offsite.child("access_key_id", required=True).secret(),
            secret_access_key=offsite.child("secret_access_key", required=True).secret(),
            region=region.str(re.compile(r"^[a-z0-9-]{1,40}$"), "'fra1'") if region else OffsiteSettings.region,
        )
    return BackupSettings(
        schedule=schedule.str(_CALENDAR, "'daily' or '*-*-* 03:15:00' (systemd OnCalendar)") if schedule
        else d.schedule,
        keep_daily=daily.int(1, 366) if daily else d.keep_daily,
        keep_weekly=weekly.int(0, 520) if weekly else d.keep_weekly,
        identity=replace(identity.secret(), generate="age") if identity else d.identity,
        offsite=site,
    )
