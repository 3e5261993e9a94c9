"""Airflow's database moving with the postgres role: Airflow is switched to the new host only where its
database has tables there, so that its run history, connections and variables are not left behind
where it reads them now; and `db.copy` stops Airflow while it copies that database."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

from .. import placement
from ..engine.model import PHASE_CONFIG, PHASE_SERVICES
from ..errors import RemoteError
from ..inventory import Environment, HostSpec
from ..release import url_host_sed
from ..roles.airflow import LAYOUT, database_server
from ..roles.airflow_celery import CONTAINER_HOST
from ..transport.ssh import Session
from .database import host_session, table_count_command

CONN = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
STOP = f"{LAYOUT.compose} stop"
START = f"{LAYOUT.compose} start"


def reads_now_command() -> str:
    """Where the host's Airflow services, running or stopped, read their database (the environment
    they were created with; nothing before the first): its file may already name the next one."""
    return (f"c=$({LAYOUT.compose} ps -aq 2>/dev/null | head -n 1); [ -z \"$c\" ] || "
            "docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' \"$c\" | "
            f"{url_host_sed(CONN, '')}; true")


def where(server: str, host: str, addresses: dict[str, str]) -> tuple[str, str]:
    """(the host name, a description) of the database server ``server`` as ``host``'s Airflow names it (pure)."""
    if server == CONTAINER_HOST:
        return host, f"PostgreSQL on {host}"
    name = next((n for n, a in sorted(addresses.items()) if a == server), "")
    return name, f"PostgreSQL on {name} ({server})" if name else server


def reads_from(before: str, host: str, source: str, addresses: dict[str, str]) -> bool:
    """Whether ``host``'s Airflow, reading its database at ``before``, reads it on ``source`` (pure)."""
    return bool(before) and where(before, host, addresses)[0] == source


def refusal(env: Environment, host: str, database: str, before: str, after: str,
            addresses: dict[str, str]) -> RemoteError:
    """Airflow's database moves from ``before`` to ``after``, where it has no tables (pure)."""
    source, old = where(before, host, addresses)
    _, new = where(after, host, addresses)
    return RemoteError(host, "airflow database move",
                       f"Airflow's database {database} moves from {old} (where Airflow reads it now) to {new}, "
                       "where it has no tables: Airflow would start there without its run history, connections "
                       "and variables; its services were left running as they were",
                       f"copy it first with `invoke db.copy --env {env.name} --from {source or 'HOST'}` (it stops "
                       "Airflow while it copies), then run provision again; or run it with --empty-database "
                       "to start Airflow on an empty database")


def has_tables(output: str, rc: int) -> bool:
    """Whether a table count's output says the database has tables (pure)."""
    return rc == 0 and output.strip().isdigit() and int(output.strip()) > 0


def check_move(env: Environment, host: HostSpec, session: Session, addresses: dict[str, str]) -> None:
    """Before ``host``'s Airflow services change: RemoteError when they read their database elsewhere
    now and the database they are about to read has no tables."""
    af = env.settings.airflow
    after = database_server(env, host, addresses)
    before = session.script(reads_now_command(), timeout=60).stdout.strip()
    if not before or before == after:
        return
    pg = placement.postgres_host(env)
    count = table_count_command(af.database.name)
    if pg.name == host.name:
        result = session.script(count, timeout=120)
    else:
        other = host_session(env, pg)
        try:
            result = other.script(count, timeout=120)
        finally:
            other.close()
    if not has_tables(result.stdout, result.rc):
        raise refusal(env, host.name, af.database.name, before, after, addresses)


def move_check(env: Environment, host: HostSpec, roles: tuple[str, ...], session: Session,
               addresses: dict[str, str], skip: bool = False) -> Callable[[int], None]:
    """A Converge's ``before_changes`` for ``host`` running ``roles``: `check_move`, once, before the
    airflow role changes the configuration (which closes the old database to Airflow), or, where the
    database moves to this host, its services (the postgres role made the database by then)."""
    pending = [host] if "airflow" in roles and env.settings.airflow and not skip else []
    pg = placement.postgres_host(env)
    at = PHASE_SERVICES if pg and pg.name == host.name else PHASE_CONFIG

    def check(phase: int) -> None:
        if pending and phase >= at:
            check_move(env, pending.pop(), session, addresses)
    return check


def airflow_hosts(env: Environment) -> list[HostSpec]:
    """The hosts that run Airflow's services (they write to its database)."""
    return [h for h in env.hosts if {"airflow", "airflow_worker"} & set(h.roles)]


def stopped_while(env: Environment, source: str, addresses: dict[str, str], copy: Callable[[], None],
                  on_line: Callable[[str], None]) -> bool:
    """Run ``copy`` (of Airflow's database from ``source``) with Airflow's services stopped on every
    host, so that nothing it writes meanwhile is left behind. False, and nothing run, when the airflow
    host no longer reads its database on ``source``. A failed copy starts them again; after a copy
    they stay stopped until a provision starts them on the new database."""
    main = next((h for h in env.hosts if "airflow" in h.roles), None)
    if main is None:
        return False
    sessions = {main.name: host_session(env, main)}
    try:
        before = sessions[main.name].script(reads_now_command(), timeout=60).stdout.strip()
        if not reads_from(before, main.name, source, addresses):
            return False
        sessions.update({h.name: host_session(env, h) for h in airflow_hosts(env) if h.name != main.name})
        with services_stopped(sessions, on_line, start_after=False):
            copy()
        return True
    finally:
        for session in sessions.values():
            session.close()


@contextmanager
def services_stopped(sessions: dict[str, Session], on_line: Callable[[str], None], start_after: bool = True):
    """Airflow's services stopped on the host of each session (by host name) while the block replaces
    their database; started again after it (unless not ``start_after``), and always when it fails. Where
    they do not stop, they are started again everywhere and nothing runs."""
    for name, session in sessions.items():
        on_line(f"airflow: stopping its services on {name} …")
        stopped = session.script(STOP, timeout=600)
        if stopped.rc != 0:
            _start(sessions, on_line)
            raise RemoteError(name, "stop Airflow", session.redact(stopped.stdout.strip()[-300:]),
                              "check Docker there; Airflow was started again and its database left as it was")
    try:
        yield
    except BaseException:
        _start(sessions, on_line)
        raise
    if start_after:
        _start(sessions, on_line)


def _start(sessions: dict[str, Session], on_line: Callable[[str], None]) -> None:
    for name, session in sessions.items():
        on_line(f"airflow: starting its services on {name} again …")
        session.script(START, timeout=600)
