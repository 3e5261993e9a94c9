"""Celery workers on hosts of their own (``airflow_worker``, with the CeleryExecutor): the same image
and env file as the airflow host's (the database, Redis and the execution API at private
addresses), a compose project with only ``airflow-worker``, and the DAG folder deploys switch.
"""
from __future__ import annotations

from ..engine.compose import ComposeProject
from ..engine.files import File
from ..engine.model import Resource
from ..templates import render
from . import Role, RoleContext
from .airflow import LAYOUT, airflow_env, folders, image_ref
from .airflow_celery import LOG_PORT, WORKER

NAME = "airflow_worker"


def worker_compose(version: str, image: str, root: str) -> bytes:
    """The worker-only compose file (pure)."""
    return render("airflow/worker-compose.yaml.j2", version=version, image=image, root=root, log_port=LOG_PORT)


def worker_health_command(seconds: int = 300) -> str:
    """Wait until the worker's own health check (a Celery ping through Redis) passes."""
    return f"""
i=0
while [ $i -lt {seconds // 5} ]; do
  h=$({LAYOUT.compose} ps --format '{{{{.Health}}}}' {WORKER} 2>/dev/null)
  [ "$h" = healthy ] && exit 0
  i=$((i + 1)); sleep 5
done
echo "the Celery worker is not healthy after {seconds} s: ${{h:-not running}}"; exit 1
"""


def resources(ctx: RoleContext) -> list[Resource]:
    af = ctx.settings.airflow
    if af is None or not af.celery:
        return []
    lay = LAYOUT
    env, image = airflow_env(ctx), image_ref(ctx)
    compose = worker_compose(af.version, image, lay.root)
    return [
        *folders(NAME),
        File(f"{lay.root}/airflow.env", env, mode=0o600, role=NAME, secret=True),
        File(f"{lay.root}/compose.yaml", compose, role=NAME),
        ComposeProject(lay.root, "airflow", (compose, env, image.encode()), (WORKER,),
                       health_check=worker_health_command(), role=NAME),
    ]


ROLE = Role(NAME, lambda ctx: [], resources)
