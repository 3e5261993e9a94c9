"""Settings derived from a host's size (pure): what provisioning tunes from CPUs and memory, and
so what a resize changes. The roles render them; ``droplet.resize`` plans and re-applies them."""
from __future__ import annotations

from dataclasses import dataclass

WORKER_MB = 256          # budget per gunicorn worker (two slots run per app: live and warm)
AIRFLOW_TASK_MB = 512    # budget per concurrently running Airflow task (LocalExecutor: a process each)
AIRFLOW_SERVICES_MB = 2048   # Airflow's own services on the host (api-server, scheduler, ..., the Celery worker)


@dataclass(frozen=True)
class Memory:
    max_connections: int
    shared_buffers_mb: int
    effective_cache_size_mb: int
    maintenance_work_mem_mb: int
    work_mem_mb: int


def memory_settings(memory_mb: int, max_connections: int = 100) -> Memory:
    """PostgreSQL, pgtune-style: 25 % shared buffers, 75 % cache, the rest per connection."""
    return Memory(
        max_connections=max_connections,
        shared_buffers_mb=max(128, memory_mb // 4),
        effective_cache_size_mb=max(256, memory_mb * 3 // 4),
        maintenance_work_mem_mb=min(1024, max(64, memory_mb // 16)),
        work_mem_mb=min(64, max(4, memory_mb // (4 * max_connections))),
    )


def gunicorn_workers(cpus: int, memory_mb: int, apps: int = 1) -> int:
    """Gunicorn's 2 × CPUs + 1, within what memory holds for ``apps`` apps of two slots each (≥ 2)."""
    return max(2, min(2 * max(1, cpus) + 1, memory_mb // (2 * WORKER_MB * max(1, apps))))


def airflow_parallelism(cpus: int, memory_mb: int) -> int:
    """Task processes at once: 4 per CPU, within what memory holds (≥ 2)."""
    return max(2, min(4 * max(1, cpus), memory_mb // AIRFLOW_TASK_MB))


def airflow_worker_concurrency(cpus: int, memory_mb: int) -> int:
    """Task processes the Celery worker runs at once, beside the other services on the same host:
    2 per CPU, within the memory the services leave (≥ 1)."""
    return max(1, min(2 * max(1, cpus), (memory_mb - AIRFLOW_SERVICES_MB) // AIRFLOW_TASK_MB))


def derived(cpus: int, memory_mb: int, app_workers: dict[str, int | None], airflow: bool,
            postgres: bool = True, celery: bool = False) -> dict[str, str]:
    """Every size-derived setting of a host, by a name a person reads (``postgres shared_buffers``,
    ``gunicorn workers (names)``…); ``app_workers`` maps each app to its fixed workers or None (auto)."""
    out: dict[str, str] = {}
    if postgres:
        pg = memory_settings(memory_mb)
        out.update({"postgres shared_buffers": f"{pg.shared_buffers_mb}MB",
                    "postgres effective_cache_size": f"{pg.effective_cache_size_mb}MB",
                    "postgres maintenance_work_mem": f"{pg.maintenance_work_mem_mb}MB",
                    "postgres work_mem": f"{pg.work_mem_mb}MB"})
    for app, fixed in app_workers.items():
        out[f"gunicorn workers ({app})"] = str(fixed or gunicorn_workers(cpus, memory_mb, len(app_workers)))
    if airflow:
        out["airflow parallelism"] = str(airflow_parallelism(cpus, memory_mb))
    if airflow and celery:
        out["airflow worker concurrency"] = str(airflow_worker_concurrency(cpus, memory_mb))
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(setting, old, new)`` of each setting whose value differs."""
    return [(k, before.get(k, "-"), v) for k, v in after.items() if before.get(k) != v]
