"""Airflow on Docker Compose: its database on the host's PostgreSQL (reachable from containers over
the Docker bridge only) or on the postgres host (over the private network), folders, a secret env
file, the compose project, and the UI behind nginx.

DAGs are not part of this role: deploys ship them as releases (workflows/airflow.py) and
switch ``/srv/airflow/dags/current``, which every service reads.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.compose import ComposeProject, env_file
from ..engine.files import Absent, Directory, File, Symlink
from ..engine.model import Handler, Resource
from ..engine.postgres import PgDatabase, PgRole
from .. import placement
from ..errors import DropshipError
from ..inventory import Environment, HostSpec, SecretRef
from ..release import database_url
from ..sizing import airflow_parallelism, airflow_worker_concurrency
from ..templates import render
from . import Role, RoleContext, airflow_celery
from .airflow_celery import CONTAINER_HOST
from .handlers import DAEMON_RELOAD, RELOAD_NGINX
from .airflow_users import SEAL, AirflowAccounts, accounts
from .tls import include_for, scheme_of

NAME = "airflow"
UID = "50000"            # the Airflow image convention (user airflow, group root)
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
API_CONTAINER = "airflow-airflow-apiserver-1"       # compose's name of the api-server (project airflow)
SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
FLOWER = "airflow-flower"
FLOWER_PORT = 5555       # Flower, published on 127.0.0.1 only (nginx proxies it)


def services(env) -> tuple[str, ...]:
    """The compose services the airflow host runs (the Celery worker with the CeleryExecutor, unless
    airflow_worker hosts run the workers; Flower when asked for)."""
    af = env.settings.airflow
    return SERVICES + ((airflow_celery.WORKER,) if own_worker(env) else ()) + ((FLOWER,) if af and af.flower else ())


def flower_env(af, secrets: dict[str, str]) -> list[tuple[str, str]]:
    """Flower's path and login (env file lines); a password Flower cannot take is refused (pure)."""
    if not af.flower:
        return []
    password = secrets[af.flower.password.name]
    if "," in password or "\n" in password:
        raise DropshipError(f"secret {af.flower.password.name}: Flower's basic auth cannot hold ',' or a newline",
                            "choose a password without them")
    return [("AIRFLOW__CELERY__FLOWER_URL_PREFIX", af.flower.url_path),
            ("AIRFLOW__CELERY__FLOWER_BASIC_AUTH", f"{af.flower.user}:{password}")]


def own_worker(env) -> bool:
    """The airflow host runs a Celery worker: the CeleryExecutor without airflow_worker hosts."""
    af = env.settings.airflow
    return bool(af and af.celery) and not airflow_celery.worker_hosts(env)


@dataclass(frozen=True)
class AirflowLayout:
    root: str = "/srv/airflow"
    port: int = 8080     # the api-server, published on 127.0.0.1 only (nginx proxies it)

    @property
    def dags(self) -> str:
        return f"{self.root}/dags"

    @property
    def current(self) -> str:
        return f"{self.dags}/current"

    def release(self, release_id: str) -> str:
        return f"{self.dags}/releases/{release_id}"

    @property
    def compose(self) -> str:
        return f"docker compose --project-directory {self.root} -p airflow"


LAYOUT = AirflowLayout()
CONTAINER_DAGS = "/opt/airflow/dags"      # LAYOUT.dags as the containers mount it


def image_ref(ctx: RoleContext) -> str:
    """The image the services run: the registry image, or the tag the workflow built."""
    if ctx.settings.airflow.image:
        return ctx.settings.airflow.image
    if not ctx.airflow_image:
        raise DropshipError("the Airflow image was not built before the airflow role ran",
                            "run `invoke provision` or `invoke deploy`, which build it")
    return ctx.airflow_image


def database_server(env: Environment, host: HostSpec, addresses: dict[str, str]) -> str:
    """Where ``host``'s Airflow containers reach its database: the host itself (as the containers see
    it) when it has the postgres role, else the postgres host's private address."""
    return CONTAINER_HOST if "postgres" in host.roles else placement.database_address(env, host.name, addresses)


def airflow_env(ctx: RoleContext, server: str = "localhost") -> bytes:
    """Airflow's settings as compose env_file lines (secrets inside: the file is 0600). On an
    airflow_worker host the database, the broker and the execution API are at private addresses."""
    af, v = ctx.settings.airflow, ctx.secrets
    host = database_server(ctx.env, ctx.host, ctx.addresses)
    db = database_url(af.database.user, v[af.database.password.name], af.database.name,
                      host=host).replace("postgresql://", "postgresql+psycopg2://")
    execution, broker, remote = f"http://airflow-apiserver:8080{af.url_path}/execution/", CONTAINER_HOST, []
    if ctx.has("airflow_worker"):
        broker = airflow_celery.private_of(ctx.env, airflow_celery.airflow_host(ctx.env).name, ctx.addresses)
        execution = execution_url(broker, af.url_path)
        remote = [("AIRFLOW__CORE__HOSTNAME_CALLABLE", "socket.gethostname")]   # the host's name: logs are read there
    values = [
        ("AIRFLOW__CORE__EXECUTOR", af.executor),
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db),
        ("AIRFLOW__CORE__FERNET_KEY", v[af.fernet_key.name]),
        ("AIRFLOW__API_AUTH__JWT_SECRET", v[af.jwt_secret.name]),
        ("AIRFLOW__API__SECRET_KEY", v[af.api_secret_key.name]),
        ("AIRFLOW__CORE__LOAD_EXAMPLES", "False"),
        ("AIRFLOW__CORE__DAGS_FOLDER", f"{CONTAINER_DAGS}/current"),
        ("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False"),
        ("AIRFLOW__CORE__AUTH_MANAGER", FAB_AUTH_MANAGER),
        ("AIRFLOW__API__BASE_URL", base_url(scheme_of(ctx, af.server_name or ctx.settings.nginx.server_name), server,
                                            af.url_path)),
        ("AIRFLOW__API__WORKERS", "1"),
        ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", execution),
        ("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "True"),
        ("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "5"),
        ("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", "5"),
        ("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "5"),     # deployed DAG changes show in seconds
        ("AIRFLOW__CORE__PARALLELISM", str(airflow_parallelism(ctx.facts.cpus, ctx.facts.memory_mb))),
        *(airflow_celery.celery_env(af, v, airflow_worker_concurrency(ctx.facts.cpus, ctx.facts.memory_mb),
                                    broker, host) if af.celery else []),
        *(flower_env(af, v) if ctx.has("airflow") else []),
        *remote,
        *((k, v[val.name] if isinstance(val, SecretRef) else val) for k, val in af.env),
    ]
    return ("# Managed by Dropship (airflow role). Secrets inside: keep it 0600.\n" + env_file(values)).encode()


def execution_url(address: str, url_path: str) -> str:
    """Where a worker host's tasks reach the execution API: nginx on the airflow host's private address (pure)."""
    return f"http://{address}:{airflow_celery.EXECUTION_PORT}{url_path}/execution/"


def worker_extra_hosts(ctx: RoleContext) -> list[tuple[str, str]]:
    """(name, private address) of each worker host: the api-server reads task logs from them by name."""
    return [(h.name, airflow_celery.private_of(ctx.env, h.name, ctx.addresses))
            for h in airflow_celery.worker_hosts(ctx.env)]


def base_url(scheme: str, server: str, url_path: str) -> str:
    """Where browsers reach the UI: an absolute URL on a real name, else the path alone, so that the
    login's redirects work at any address and port (a local droplet's published one) (pure)."""
    return f"{scheme}://{server}{url_path}" if server != "localhost" else (url_path or "/")


def stack_health_command(port: int, url_path: str, seconds: int = 300) -> str:
    """Wait until the api-server reports the database, scheduler, triggerer and dag-processor healthy."""
    return f"""
i=0
while [ $i -lt {seconds // 2} ]; do
  h=$(curl -fsS --max-time 5 http://127.0.0.1:{port}{url_path}/api/v2/monitor/health 2>/dev/null) && \\
    [ "$(printf '%s' "$h" | grep -o '"status":"healthy"' | wc -l)" -ge 4 ] && exit 0
  i=$((i + 1)); sleep 2
done
echo "Airflow not healthy after {seconds} s: ${{h:-no answer from the api-server}}"; exit 1
"""


def packages(ctx: RoleContext) -> list[str]:
    return airflow_celery.packages(ctx)


def resources(ctx: RoleContext) -> list[Resource]:
    af = ctx.settings.airflow
    if af is None:
        return []
    if not ctx.facts.can_exec_into_containers:
        raise DropshipError("this host is a container without CAP_SYS_PTRACE: its Docker cannot run the "
                            "Airflow services' health checks or `docker compose exec`",
                            "recreate it (invoke droplet.destroy, then droplet.create: local droplets get "
                            "--cap-add SYS_PTRACE)")
    lay, v = LAYOUT, ctx.secrets
    server = af.server_name or (ctx.settings.nginx.server_name if ctx.settings.nginx.server_name != "_" else "localhost")
    env = airflow_env(ctx, server)
    image = image_ref(ctx)
    compose = render("airflow/compose.yaml.j2", version=af.version, executor=af.executor, image=image,
                     root=lay.root, port=lay.port, url_path=af.url_path, celery=own_worker(ctx.env),
                     worker_hosts=worker_extra_hosts(ctx), flower=af.flower, flower_port=FLOWER_PORT)
    nginx = RELOAD_NGINX
    local_db: list[Resource] = [    # else the postgres host makes the database (roles/postgres.py)
        Directory("/etc/systemd/system/postgresql@.service.d", role=NAME),
        File("/etc/systemd/system/postgresql@.service.d/dropship-docker.conf",
             render("airflow/postgres-after-docker.conf.j2"), role=NAME, notify=(DAEMON_RELOAD,)),
        PgRole(af.database.user, v[af.database.password.name], role=NAME),
        PgDatabase(af.database.name, af.database.user, role=NAME),
    ] if ctx.has("postgres") else []
    return local_db + [
        *folders(NAME),
        Absent(f"{lay.root}/config/passwords.json", role=NAME),      # the Simple auth manager's, before FAB
        File(f"{lay.root}/airflow.env", env, mode=0o600, role=NAME, secret=True),
        File(f"{lay.root}/compose.yaml", compose, role=NAME),
        *airflow_celery.resources(ctx),
        ComposeProject(lay.root, "airflow", (compose, env, image.encode()), services(ctx.env),
                       before_up=f"{lay.compose} --profile init run --rm airflow-init >/dev/null",
                       health_check=stack_health_command(lay.port, af.url_path), role=NAME),
        AirflowAccounts(af.database.name, lay.compose, accounts(af.accounts(), v), v[af.api_secret_key.name],
                        f"{lay.root}/config/{SEAL.rsplit('/', 1)[1]}",
                        "" if ctx.has("postgres") else API_CONTAINER, role=NAME),
        *nginx_files(af, lay.port, nginx, include_for(ctx, af.server_name) if af.server_name else ""),
        execution_server(ctx, lay.port, nginx),
    ]


def folders(role: str) -> list[Resource]:
    """The layout every host running Airflow services has: root, DAG releases (``current`` at an
    empty one until a deploy), logs and config."""
    lay = LAYOUT
    return [
        Directory(lay.root, role=role),
        Directory(lay.dags, UID, "root", 0o755, role=role),
        Directory(f"{lay.dags}/releases", UID, "root", 0o755, role=role),
        Directory(f"{lay.dags}/releases/empty", UID, "root", 0o755, role=role),
        Symlink(lay.current, "releases/empty", role=role, replace=False),
        Directory(f"{lay.root}/logs", UID, "root", 0o775, role=role),
        Directory(f"{lay.root}/config", UID, "root", 0o700, role=role),
    ]


NGINX_LOCATION = "/etc/nginx/dropship/locations/airflow.conf"    # in the app's (default) server
NGINX_SERVER = "/etc/nginx/conf.d/dropship-airflow.conf"         # a server of its own (airflow.server_name)


def nginx_files(af, port: int, reload_nginx: Handler, tls: str = "") -> list[Resource]:
    """The UI behind nginx: a location of the default server, or a server of its own (with the HTTPS
    snippet ``tls``); the other removed."""
    values = dict(url_path=af.url_path, port=port, server_name=af.server_name, tls=tls, flower=af.flower,
                  flower_port=FLOWER_PORT)
    if af.server_name:
        return [File(NGINX_SERVER, render("airflow/nginx-server.conf.j2", **values), role=NAME, notify=(reload_nginx,)),
                Absent(NGINX_LOCATION, role=NAME, notify=(reload_nginx,))]
    return [File(NGINX_LOCATION, render("airflow/nginx-location.conf.j2", **values), role=NAME, notify=(reload_nginx,)),
            Absent(NGINX_SERVER, role=NAME, notify=(reload_nginx,))]


NGINX_EXECUTION = "/etc/nginx/conf.d/dropship-airflow-execution.conf"   # for airflow_worker hosts


def execution_server(ctx: RoleContext, port: int, reload_nginx: Handler) -> Resource:
    """With worker hosts, nginx serves the execution API on the private address; else none."""
    if not airflow_celery.worker_hosts(ctx.env):
        return Absent(NGINX_EXECUTION, role=NAME, notify=(reload_nginx,))
    address = airflow_celery.private_of(ctx.env, ctx.host.name, ctx.addresses)
    return File(NGINX_EXECUTION, render("airflow/nginx-execution.conf.j2", address=address,
                                        listen_port=airflow_celery.EXECUTION_PORT, port=port,
                                        url_path=ctx.settings.airflow.url_path), role=NAME, notify=(reload_nginx,))


ROLE = Role(NAME, packages, resources)
