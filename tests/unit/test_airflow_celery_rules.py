"""The CeleryExecutor: Redis's configuration and unit drop-in, Airflow's Celery settings, the compose
file's worker, the firewall, the worker's concurrency, and ``airflow.executor`` in the inventory."""
import yaml

from provision import sizing
from provision.engine.system import Service
from provision.inventory import EXECUTORS
from provision.roles import airflow, airflow_celery, base, host_resources
from provision.roles.handlers import DAEMON_RELOAD
from tests.unit.test_inventory import AIRFLOW, assert_located, error, load
from tests.unit.test_templates import context, file_at, with_airflow

CELERY = "CeleryExecutor"


def celery_context(**changes):
    return with_airflow(context(), executor=CELERY, **changes)


# --- Redis --------------------------------------------------------------------------------------------

def test_redis_conf_exact():
    assert airflow_celery.redis_conf("s3cr3t-pw", ["127.0.0.1", "-::1", "172.17.0.1"]).decode() == (
        "# Managed by Dropship (airflow role): Redis as the Celery executor's broker. Debian's settings, then\n"
        "# these: on localhost and the Docker bridge (Airflow's containers reach it as host.docker.internal),\n"
        "# and the private address when airflow_worker hosts exist (ufw lets only them in), with a password.\n"
        "# Secret inside: keep it 0640 root:redis.\n"
        "include /etc/redis/redis.conf\n"
        "bind 127.0.0.1 -::1 172.17.0.1\n"
        "port 6379\n"
        "protected-mode yes\n"
        'requirepass "s3cr3t-pw"\n')


def test_redis_password_is_one_quoted_argument_whatever_it_holds():
    assert airflow_celery.redis_quote('a b"c\\d') == '"a b\\"c\\\\d"'
    assert airflow_celery.redis_quote("x\ny\x00é") == '"x\\x0ay\\x00\\xc3\\xa9"'
    assert "\nbind" not in airflow_celery.redis_conf("x\nbind 0.0.0.0", ["127.0.0.1"]).decode().split("requirepass")[1]


def test_redis_runs_dropships_config_after_docker():
    resources = airflow.resources(celery_context())
    dropin = file_at(resources, airflow_celery.REDIS_DROPIN)
    assert dropin.content.decode() == (
        "# Managed by Dropship (airflow role): Redis reads Dropship's configuration, and listens on the Docker\n"
        "# bridge, which exists once Docker runs.\n"
        "[Unit]\nAfter=docker.service\nWants=docker.service\n\n"
        "[Service]\nExecStart=\n"
        "ExecStart=/usr/bin/redis-server /etc/redis/dropship.conf --supervised systemd --daemonize no\n")
    assert dropin.notify[0] == DAEMON_RELOAD and dropin.notify[1].name == "restart redis-server"
    conf = file_at(resources, airflow_celery.REDIS_CONFIG)
    assert (conf.owner, conf.group, conf.mode, conf.secret) == ("root", "redis", 0o640, True)
    assert [h.name for h in conf.notify] == ["restart redis-server"]
    assert b'requirepass "redis-pw-123456"\n' in conf.content and b"bind 127.0.0.1 -::1 172.17.0.1\n" in conf.content
    keys = [r.key for r in resources]
    assert keys.index(f"file {airflow_celery.REDIS_DROPIN}") < keys.index(f"file {airflow_celery.REDIS_CONFIG}") \
        < keys.index("service redis-server") < keys.index("compose airflow")
    assert any(isinstance(r, Service) and r.name == "redis-server" for r in resources)


def test_redis_only_with_the_celery_executor():
    local = context()
    assert airflow.packages(local) == [] and airflow_celery.resources(local) == []
    assert airflow.packages(celery_context()) == ["redis-server"]
    packages = next(r for r in host_resources(celery_context()) if r.key.startswith("packages"))
    assert "redis-server" in packages.names


def test_firewall_lets_docker_networks_reach_redis_only_with_celery():
    assert base.firewall_rules(celery_context()) == ("22/tcp", "80/tcp", "443/tcp", "5432/tcp from 172.16.0.0/12 to 172.17.0.1",
                                                     "6379/tcp from 172.16.0.0/12 to 172.17.0.1")
    assert base.firewall_rules(with_airflow(context())) == ("22/tcp", "80/tcp", "443/tcp",
                                                            "5432/tcp from 172.16.0.0/12 to 172.17.0.1")


# --- Airflow's settings -------------------------------------------------------------------------------

def test_celery_env_lines_exact():
    af = celery_context().settings.airflow
    secrets = {"airflow_redis_password": "p@ss/w:rd", "airflow_db_password": "db pw"}
    assert airflow_celery.celery_env(af, secrets, 6) == [
        ("AIRFLOW__CELERY__BROKER_URL", "redis://:p%40ss%2Fw%3Ard@host.docker.internal:6379/0"),
        ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql://airflow:db%20pw@host.docker.internal:5432/airflow"),
        ("AIRFLOW__CELERY__WORKER_CONCURRENCY", "6"),
    ]


def test_env_file_with_celery_and_without():
    env = file_at(airflow.resources(celery_context()), "/srv/airflow/airflow.env").content.decode()
    assert "AIRFLOW__CORE__EXECUTOR=\"CeleryExecutor\"\n" in env
    assert env.endswith("AIRFLOW__CORE__PARALLELISM=\"8\"\n"
                        "AIRFLOW__CELERY__BROKER_URL=\"redis://:redis-pw-123456@host.docker.internal:6379/0\"\n"
                        "AIRFLOW__CELERY__RESULT_BACKEND=\"db+postgresql://airflow:af-db-pw-123456"
                        "@host.docker.internal:5432/airflow\"\n"
                        "AIRFLOW__CELERY__WORKER_CONCURRENCY=\"4\"\n")
    local = file_at(airflow.resources(context()), "/srv/airflow/airflow.env").content.decode()
    assert "AIRFLOW__CORE__EXECUTOR=\"LocalExecutor\"\n" in local and "CELERY" not in local


# --- the compose file -----------------------------------------------------------------------------------

WORKER = """
  # The CeleryExecutor's worker: it runs the tasks the scheduler queues on Redis (the host's); its
  # health check pings it through Redis (a Celery CLI start each time, hence the longer interval).
  airflow-worker:
    <<: *airflow
    command: ["airflow", "celery", "worker"]
    healthcheck:
      test: ["CMD-SHELL", "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping --timeout 10 -d \\"celery@$${HOSTNAME}\\""]
      interval: 60s
      timeout: 60s
      retries: 3
      start_period: 180s
      start_interval: 10s
"""


def test_compose_worker_service_exact():
    local = file_at(airflow.resources(with_airflow(context())), "/srv/airflow/compose.yaml").content.decode()
    celery = file_at(airflow.resources(celery_context()), "/srv/airflow/compose.yaml").content.decode()
    assert "airflow-worker" not in local
    assert celery == local.replace("LocalExecutor", CELERY) + WORKER
    services = yaml.safe_load(celery)["services"]
    assert services["airflow-worker"]["image"] == services["airflow-scheduler"]["image"]
    assert services["airflow-worker"]["env_file"] == ["/srv/airflow/airflow.env"] and "ports" not in \
        services["airflow-worker"]


def test_the_stack_waits_for_the_worker_and_status_lists_it():
    env = celery_context().env
    assert airflow.services(env) == (*airflow.SERVICES, "airflow-worker")
    assert airflow.services(context().env) == airflow.SERVICES
    project = next(r for r in airflow.resources(celery_context()) if r.key == "compose airflow")
    assert project.services == airflow.services(env)
    up = next(c for c in project.plan({"stamp": "", "services": {}})[0].commands if " up -d " in c)
    assert up.endswith(" airflow-apiserver airflow-scheduler airflow-dag-processor airflow-triggerer airflow-worker")


# --- sizing -----------------------------------------------------------------------------------------

def test_worker_concurrency_from_the_hosts_size():
    assert sizing.airflow_worker_concurrency(2, 4096) == 4
    assert sizing.airflow_worker_concurrency(4, 8192) == 8
    assert sizing.airflow_worker_concurrency(8, 8192) == 12       # memory bounds it
    assert sizing.airflow_worker_concurrency(1, 1024) == 1        # never below one
    assert sizing.airflow_worker_concurrency(0, 16384) == 2
    assert sizing.derived(2, 4096, {}, True, celery=True)["airflow worker concurrency"] == "4"
    assert "airflow worker concurrency" not in sizing.derived(2, 4096, {}, True)
    assert "airflow worker concurrency" not in sizing.derived(2, 4096, {}, False, celery=True)


# --- the inventory ----------------------------------------------------------------------------------

def test_executor_celery_in_the_inventory(tmp_path):
    env = load(tmp_path, AIRFLOW + "      executor: celery\n")["local"]
    assert env.settings.airflow.executor == CELERY and env.settings.airflow.celery
    assert ("secret", "airflow_redis_password") in {(r.kind, r.name) for r in env.secret_refs()}
    local = load(tmp_path, AIRFLOW)["local"]
    assert local.settings.airflow.executor == "LocalExecutor" and not local.settings.airflow.celery
    assert "airflow_redis_password" not in {r.name for r in local.secret_refs()}
    for written, meant in [*EXECUTORS.items(), *((v, v) for v in EXECUTORS.values())]:
        assert load(tmp_path, AIRFLOW + f"      executor: {written}\n")["local"].settings.airflow.executor == meant
    own = load(tmp_path, AIRFLOW + "      executor: celery\n      redis_password: {env: BROKER_PW}\n")["local"]
    assert own.settings.airflow.redis_password.kind == "env"


def test_an_unknown_executor_is_one_located_error(tmp_path):
    err = error(tmp_path, AIRFLOW + "      executor: kubernetes\n")
    assert_located(err, tmp_path, 11, "environments.local.airflow.executor", "'kubernetes'", "local, celery")
