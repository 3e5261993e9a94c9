"""Templates rendered through the roles (StrictUndefined), role figures and host_resources ordering."""
import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import jinja2
import pytest

from provision import sizing, templates
from provision.inventory import AirflowSettings, BackupSettings, HostSpec, OffsiteSettings, SecretRef, ServerTls
from provision.engine.files import Directory, File
from provision.engine.model import PHASE_LOCKDOWN, PHASE_PACKAGES
from provision.engine.postgres import PgDatabase, PgRole
from provision.engine.system import Download, Packages, Swapfile
from provision.facts import SystemFacts
from provision.inventory import load_inventory
from provision.roles import RoleContext, host_resources, registry
from provision.roles import base, docker, postgres
from provision.templates import render, template_names

REPO_INVENTORY = Path(__file__).resolve().parents[2] / "inventory.yaml"
DEBIAN = SystemFacts("debian", "13", "trixie", "none", 4096, 2)
UBUNTU = SystemFacts("ubuntu", "24.04", "noble", "none", 4096, 2)
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1tZXN0a2V5Zm9ydGVzdHNvbmx5MDEyMzQ1Njc4 dropship"
DB_PASSWORD = "generated-db-password-1234"


@lru_cache(maxsize=None)
def repo_environments():
    return load_inventory(REPO_INVENTORY)     # frozen objects: safe to share between tests


def context(facts=DEBIAN, env_name="local", ca=(), **settings) -> RoleContext:
    env = repo_environments()[env_name]
    env = replace(env, ca_certificates=tuple(ca), settings=replace(env.settings, **settings))
    return RoleContext(env, env.hosts[0], facts, PUBLIC_KEY, {"app_db_password": DB_PASSWORD, **AIRFLOW_SECRETS},
                       airflow_image="dropship/airflow:3.3.2-test")


AIRFLOW_SECRETS = {"airflow_admin_password": "admin-pw-123456", "airflow_fernet_key": "f" * 43 + "=",
                   "airflow_jwt_secret": "jwt-secret-123456", "airflow_api_secret_key": "api-secret-123456", "airflow_db_password": "af-db-pw-123456",
                   "airflow_redis_password": "redis-pw-123456"}
REGISTRY_AIRFLOW = AirflowSettings(version="3.3.2", image="apache/airflow:3.3.2", build=None, dags=None)


def with_airflow(ctx: RoleContext, **changes) -> RoleContext:
    """The context of a host that also runs Airflow from a registry image."""
    af = replace(REGISTRY_AIRFLOW, **changes)
    return replace(ctx, env=replace(ctx.env, settings=replace(ctx.env.settings, airflow=af)),
                   host=replace(ctx.host, roles=ctx.host.roles + ("airflow",)))


def with_worker_host(ctx: RoleContext) -> RoleContext:
    """A Celery airflow host and an airflow_worker host beside it; the worker host's context."""
    airflow = with_airflow(ctx, executor="CeleryExecutor")
    worker = HostSpec("worker-1", ("base", "docker", "airflow_worker"))
    env = replace(airflow.env, hosts=(airflow.host, worker))
    return replace(airflow, env=env, host=worker, addresses={airflow.host.name: "10.110.0.2", "worker-1": "10.110.0.3"})


BACKUPS = BackupSettings(schedule="*-*-* 03:15:00", offsite=OffsiteSettings(
    "http://172.30.0.1:9000", "dropship-test", "local", SecretRef("env", "S3_KEY", ""), SecretRef("env", "S3_SECRET", "")))
BACKUP_SECRETS = {"backup_age_identity": "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX",
                  "S3_KEY": "key-id", "S3_SECRET": "s3cr3t/+="}


def with_backups(ctx: RoleContext, backups: BackupSettings = BACKUPS) -> RoleContext:
    """The context of an environment with scheduled, off-site backups."""
    return replace(ctx, env=replace(ctx.env, settings=replace(ctx.env.settings, backups=backups)),
                   secrets={**ctx.secrets, **BACKUP_SECRETS})


def several_apps(ctx: RoleContext) -> RoleContext:
    """The repo's app at the root, one at a path (no database) and one on a server of its own."""
    names = ctx.settings.app
    blog = replace(names, name="blog", path="/blog", database=None, port=8010)
    shop = replace(names, name="shop", server_name="shop.example.com www.shop.example.com", port=8020)
    return replace(ctx, env=replace(ctx.env, settings=replace(ctx.env.settings, apps=(names, blog, shop))))


def tls_context(**changes):
    """Several apps and Airflow on servers of their own, with HTTPS: custom (the default server) and ACME."""
    ctx = several_apps(context(env_name="staging"))
    s = ctx.settings
    apps = tuple(replace(a, tls=ServerTls("letsencrypt")) if a.server_name else a for a in s.apps)
    nginx = replace(s.nginx, server_name="example.com", tls=ServerTls("custom", SecretRef("env", "CERT", "x"),
                                                                       SecretRef("env", "KEY", "x")))
    ctx = replace(ctx, env=replace(ctx.env, settings=replace(s, apps=apps, nginx=nginx, **changes)),
                  secrets={**ctx.secrets, "CERT": "CHAIN-PEM", "KEY": "KEY-PEM"})
    return with_airflow(ctx, server_name="airflow.example.com", url_path="", tls=ServerTls("letsencrypt"))


def file_at(resources, path) -> File:
    [f] = [r for r in resources if isinstance(r, File) and r.path == path]
    return f


@pytest.fixture
def rendered(monkeypatch):
    """Names of the templates rendered while the test runs."""
    names: list[str] = []
    real = templates._environment()

    class Recording:
        def get_template(self, name):
            names.append(name)
            return real.get_template(name)

    monkeypatch.setattr(templates, "_environment", lambda: Recording())
    return names


# --- every template, through the roles ----------------------------------------------------------

@pytest.mark.parametrize("facts", [DEBIAN, UBUNTU], ids=["debian-13", "ubuntu-24.04"])
@pytest.mark.parametrize("env_name", ["local", "staging"])
def test_every_template_renders_through_the_roles(rendered, facts, env_name):
    bridge = replace(context().settings.postgres, listen_docker_bridge=True)
    plain = context(facts, env_name)
    without_app = replace(plain, host=replace(plain.host, roles=tuple(r for r in plain.host.roles if r != "app")))
    own_server = with_airflow(plain, server_name="airflow.example.com", url_path="")
    for ctx in (plain, context(facts, env_name, postgres=bridge), without_app, with_airflow(plain), own_server,
                several_apps(plain), tls_context(), with_backups(with_airflow(plain)),
                with_airflow(plain, executor="CeleryExecutor"), (worker := with_worker_host(plain)),
                replace(worker, host=worker.env.hosts[0])):
        for role in registry().values():
            assert role.packages(ctx) or role.name.startswith("airflow")   # Airflow runs in Docker (Redis aside)
            for resource in role.resources(ctx):
                if isinstance(resource, File):
                    text = resource.content.decode()
                    assert "{{" not in text and "{%" not in text
    assert set(rendered) == {n for n in template_names() if not Path(n).name.startswith("_")}   # _x: included


def test_template_names_lists_every_file():
    assert template_names() == sorted(str(p.relative_to(templates.TEMPLATES))
                                      for p in templates.TEMPLATES.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", [n for n in template_names()
                                  if "{{" in (templates.TEMPLATES / n).read_text()])
def test_missing_variable_raises(name):
    with pytest.raises(jinja2.UndefinedError):
        render(name)


def test_templates_keep_trailing_newline():
    assert render("base/sudoers.j2", user="deploy") == b"# Managed by Dropship (base role): the deploy user " \
        b"runs Dropship's steps through sudo.\ndeploy ALL=(ALL:ALL) NOPASSWD: ALL\n"


# --- base ---------------------------------------------------------------------------------------

def test_base_files():
    resources = base.resources(context())
    sudoers = file_at(resources, "/etc/sudoers.d/90-dropship-deploy")
    assert (sudoers.mode, sudoers.validate) == (0o440, "visudo -cqf %s")
    keys = file_at(resources, "/home/deploy/.ssh/authorized_keys")
    assert (keys.content, keys.owner, keys.mode) == ((PUBLIC_KEY + "\n").encode(), "deploy", 0o600)
    sshd = file_at(resources, "/etc/ssh/sshd_config.d/00-dropship.conf")
    assert (sshd.phase, sshd.check) == (PHASE_LOCKDOWN, "sshd -t")
    assert b"PasswordAuthentication no" in sshd.content and b"PermitRootLogin no" in sshd.content
    jail = file_at(resources, "/etc/fail2ban/jail.d/dropship.local").content.decode()
    assert "bantime = 1h" in jail and "maxretry = 5" in jail


@pytest.mark.parametrize("memory_mb, swap_mb", [(512, 1024), (2048, 2048), (4096, 4096), (16384, 4096)])
def test_swap_sized_from_ram(memory_mb, swap_mb):
    assert base.swap_size_mb(memory_mb) == swap_mb
    [swap] = [r for r in base.resources(context(replace(DEBIAN, memory_mb=memory_mb))) if isinstance(r, Swapfile)]
    assert swap.size_mb == swap_mb


def test_swap_setting_wins():
    [swap] = [r for r in base.resources(context(swap_mb=0)) if isinstance(r, Swapfile)]
    assert swap.size_mb == 0


def test_ca_certificate_lands_as_crt(tmp_path):
    pem = tmp_path / "corp-root.pem"
    pem.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    f = file_at(base.resources(context(ca=[pem])), "/usr/local/share/ca-certificates/dropship/corp-root.crt")
    assert f.content == pem.read_bytes()
    assert f.phase <= PHASE_PACKAGES                  # trusted before apt talks to HTTPS sources
    assert "update-ca-certificates" in f.check + " ".join(h.command for h in f.notify)


# --- docker -------------------------------------------------------------------------------------

def test_daemon_json_is_valid_json():
    ctx = context(docker=replace(context().settings.docker, log_max_size="50m", log_max_file=7))
    daemon = file_at(docker.resources(ctx), "/etc/docker/daemon.json")
    assert json.loads(daemon.content) == {"log-driver": "json-file",
                                          "log-opts": {"max-file": "7", "max-size": "50m"}}
    assert [h.name for h in daemon.notify] == ["restart docker"]


def test_docker_distro_packages_per_os():
    debian, ubuntu = docker.packages(context(DEBIAN)), docker.packages(context(UBUNTU))
    assert "docker.io" in debian and "docker-compose" in debian and "docker-compose-v2" not in debian
    assert "docker.io" in ubuntu and "docker-compose-v2" in ubuntu and "docker-compose" not in ubuntu
    assert not any(isinstance(r, Download) for r in docker.resources(context(DEBIAN)))


@pytest.mark.parametrize("facts", [DEBIAN, UBUNTU], ids=["debian", "ubuntu"])
def test_docker_ce_source(facts):
    ctx = context(facts, docker=replace(context().settings.docker, source="docker-ce"))
    assert docker.packages(ctx) == ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
                                    "docker-compose-plugin"]
    resources = docker.resources(ctx)
    [download] = [r for r in resources if isinstance(r, Download)]
    assert (download.url, download.path, download.phase) == \
        (f"https://download.docker.com/linux/{facts.os}/gpg", docker.KEYRING, PHASE_PACKAGES)
    source = file_at(resources, "/etc/apt/sources.list.d/docker.list")
    assert source.phase == PHASE_PACKAGES
    assert source.content.decode() == (f"deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
                                       f"https://download.docker.com/linux/{facts.os} {facts.codename} stable\n")
    phase1 = [r for r in resources if r.phase == PHASE_PACKAGES]
    assert isinstance(phase1[0], Directory) and phase1[0].path == "/etc/apt/keyrings"


# --- postgres -----------------------------------------------------------------------------------

@pytest.mark.parametrize("memory_mb, expected", [
    (1024, sizing.Memory(100, 256, 768, 64, 4)),
    (4096, sizing.Memory(100, 1024, 3072, 256, 10)),
    (16384, sizing.Memory(100, 4096, 12288, 1024, 40)),
    (512, sizing.Memory(100, 128, 384, 64, 4)),
])
def test_postgres_memory_settings(memory_mb, expected):
    assert sizing.memory_settings(memory_mb) == expected


@pytest.mark.parametrize("facts, version", [
    (DEBIAN, "17"), (UBUNTU, "16"), (replace(DEBIAN, os_version="12"), "15"),
    (replace(UBUNTU, os_version="22.04"), "14"), (replace(UBUNTU, pg_version="15"), "15"),
    (replace(DEBIAN, os="fedora", os_version="40"), "17"),
])
def test_postgres_version(facts, version):
    ctx = context(facts)
    assert postgres.version(ctx) == version
    conf = file_at(postgres.resources(ctx), f"/etc/postgresql/{version}/main/conf.d/dropship.conf")
    assert conf.owner == "postgres"


def test_postgres_config_from_facts():
    ctx = context(UBUNTU)
    no_airflow = replace(ctx, host=replace(ctx.host, roles=tuple(r for r in ctx.host.roles if r != "airflow")))
    conf = file_at(postgres.resources(no_airflow), "/etc/postgresql/16/main/conf.d/dropship.conf")
    text = conf.content.decode()
    assert "sized for 4096 MB RAM, 2 CPU(s)" in text
    assert "listen_addresses = 'localhost'\n" in text
    with_airflow = file_at(postgres.resources(ctx), "/etc/postgresql/16/main/conf.d/dropship.conf").content.decode()
    assert "listen_addresses = 'localhost,172.17.0.1'\n" in with_airflow      # Airflow's containers reach it
    assert "shared_buffers = 1024MB\n" in text and "work_mem = 10MB\n" in text


def test_postgres_docker_bridge():
    pg = replace(context().settings.postgres, listen_docker_bridge=True)
    resources = postgres.resources(context(UBUNTU, postgres=pg))
    conf = file_at(resources, "/etc/postgresql/16/main/conf.d/dropship.conf").content.decode()
    hba = file_at(resources, "/etc/postgresql/16/main/pg_hba.conf").content.decode()
    assert "listen_addresses = 'localhost,172.17.0.1'" in conf
    assert "host    all       all       172.16.0.0/12   scram-sha-256\n" in hba
    assert "172.17" not in file_at(postgres.resources(context(UBUNTU)), "/etc/postgresql/16/main/pg_hba.conf") \
        .content.decode()


def test_postgres_app_role_and_database():
    resources = postgres.resources(context())
    [role] = [r for r in resources if isinstance(r, PgRole)]
    [db] = [r for r in resources if isinstance(r, PgDatabase)]
    assert (role.name, role.password) == ("names", DB_PASSWORD)
    assert (db.name, db.owner) == ("names", "names")


# --- host_resources -----------------------------------------------------------------------------

def test_host_resources_order_and_single_package_transaction(tmp_path):
    pem = tmp_path / "corp.crt"
    pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    ctx = context(UBUNTU, ca=[pem], docker=replace(context().settings.docker, source="docker-ce"))
    resources = host_resources(ctx)
    packages = [r for r in resources if isinstance(r, Packages)]
    assert len(packages) == 1
    at = resources.index(packages[0])
    assert all(r.phase <= PHASE_PACKAGES for r in resources[:at])
    assert all(r.phase > PHASE_PACKAGES for r in resources[at + 1:])
    assert {r.path for r in resources[:at] if isinstance(r, File)} == {
        "/usr/local/share/ca-certificates/dropship/corp.crt", "/etc/apt/sources.list.d/docker.list"}
    wanted = []
    for name in ("base", "docker", "postgres", "nginx", "app"):
        wanted += [p for p in registry()[name].packages(ctx) if p not in wanted]
    assert packages[0].names == tuple(wanted)
    assert len(set(packages[0].names)) == len(packages[0].names)


def test_host_resources_keys_are_unique():
    for facts in (DEBIAN, UBUNTU):
        keys = [r.key for r in host_resources(context(facts))]
        assert len(keys) == len(set(keys))


def test_host_resources_only_some_roles():
    resources = host_resources(context(), only=("nginx",))
    [packages] = [r for r in resources if isinstance(r, Packages)]
    assert packages.names == ("nginx",)
    assert {r.role for r in resources} == {"nginx", "packages"}


def test_nginx_site_and_index():
    ctx = context()
    resources = host_resources(replace(ctx, host=replace(ctx.host, roles=("base", "nginx"))), only=("nginx",))
    index = file_at(resources, "/var/www/dropship/index.html").content.decode()
    assert "<h1>web-1 is provisioned</h1>" in index and "<code>local</code>" in index
    site = file_at(resources, "/etc/nginx/sites-available/dropship.conf").content.decode()
    assert "server_name _;" in site and "root /var/www/dropship;" in site
    assert file_at(resources, "/etc/nginx/conf.d/00-dropship.conf").check == "nginx -t -q"


def test_app_role_lays_out_slots_and_takes_over_the_default_site():
    ctx = context()
    resources = host_resources(ctx, only=("nginx", "app"))
    paths = {getattr(r, "path", None) for r in resources}
    assert "/var/www/dropship/index.html" not in paths            # the app's site is the default server
    site = file_at(resources, "/etc/nginx/sites-available/names.conf").content.decode()
    assert "include /etc/nginx/dropship/names-upstream.conf;" in site and "proxy_pass http://names_app;" in site
    upstream = file_at(resources, "/etc/nginx/dropship/names-upstream.conf")
    assert upstream.replace is False and upstream.content == b"# Managed by Dropship deploys: the live slot (blue).\nserver 127.0.0.1:8001;\n"
    unit = file_at(resources, "/etc/systemd/system/names@.service").content.decode()
    assert "User=names" in unit and "EnvironmentFile=/srv/names/slots/%i/.env" in unit and "wsgi:app" in unit
    # the venv says which flags its gunicorn takes (an app may pin one older than --no-control-socket)
    assert "\nEnvironmentFile=-/srv/names/slots/%i/.venv/.gunicorn.env\n" in unit
    assert "\nExecStart=/srv/names/slots/%i/.venv/bin/gunicorn $DROPSHIP_GUNICORN_FLAGS --bind 127.0.0.1:${PORT} " in unit
    assert file_at(resources, "/srv/names/slots/green.env").content == b"# Managed by Dropship (app role): the green slot's port.\nPORT=8002\nSLOT=green\n"


def test_airflow_compose_checks_every_service_and_publishes_on_loopback_only():
    import yaml

    from provision.roles import airflow

    ctx = context()
    compose = yaml.safe_load(file_at(airflow.resources(ctx), "/srv/airflow/compose.yaml").content)
    services = compose["services"]
    assert set(services) == {"airflow-init", *airflow.SERVICES}
    for name in airflow.SERVICES:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["start_interval"] and check["retries"] >= 3
        assert services[name]["image"] == "dropship/airflow:3.3.2-test"
    assert "healthcheck" not in services["airflow-init"] and services["airflow-init"]["profiles"] == ["init"]
    assert services["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]
    assert [s for s in services if services[s].get("ports")] == ["airflow-apiserver"]
    registry = with_airflow(ctx)
    compose = yaml.safe_load(file_at(airflow.resources(registry), "/srv/airflow/compose.yaml").content)
    assert compose["services"]["airflow-scheduler"]["image"] == "apache/airflow:3.3.2"


def test_airflow_refuses_a_container_host_whose_docker_cannot_exec():
    from provision.errors import DropshipError
    from provision.roles import airflow

    no_ptrace = replace(DEBIAN, virt="docker", cap_bounding="00000000a82435fb")
    with pytest.raises(DropshipError, match="CAP_SYS_PTRACE.*droplet.destroy"):
        airflow.resources(context(no_ptrace))
    assert airflow.resources(context(replace(no_ptrace, cap_bounding="00000000a82c35fb")))


def test_airflow_ui_on_a_path_or_a_server_of_its_own():
    from provision.roles import airflow
    from provision.engine.files import Absent

    ctx = context()
    on_path = airflow.resources(ctx)
    location = file_at(on_path, airflow.NGINX_LOCATION).content.decode()
    assert "location /airflow/ {" in location and "proxy_pass http://127.0.0.1:8080;" in location
    assert any(isinstance(r, Absent) and r.path == airflow.NGINX_SERVER for r in on_path)
    env_file = file_at(on_path, "/srv/airflow/airflow.env").content.decode()
    assert "AIRFLOW__API__BASE_URL=\"/airflow\"\n" in env_file

    af = replace(ctx.env.settings.airflow, server_name="airflow.example.com", url_path="")
    own = replace(ctx, env=replace(ctx.env, settings=replace(ctx.env.settings, airflow=af)))
    resources = airflow.resources(own)
    server = file_at(resources, airflow.NGINX_SERVER).content.decode()
    assert "server_name airflow.example.com;" in server and "    location / {" in server
    assert "default_server" not in server
    assert any(isinstance(r, Absent) and r.path == airflow.NGINX_LOCATION for r in resources)
    env_file = file_at(resources, "/srv/airflow/airflow.env").content.decode()
    assert "AIRFLOW__API__BASE_URL=\"http://airflow.example.com\"\n" in env_file
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=\"http://airflow-apiserver:8080/execution/\"\n" in env_file
    compose = file_at(resources, "/srv/airflow/compose.yaml").content.decode()
    assert "http://localhost:8080/api/v2/version" in compose
