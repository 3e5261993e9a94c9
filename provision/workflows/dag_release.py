"""DAG releases on every host that reads them, switched together: the airflow host (scheduler and
dag-processor) and each airflow_worker host (its Celery worker).

Every host's DAG lock is taken first. A deploy uploads the release to each host and import-checks
it on the airflow host; a failure anywhere before the switch removes the uploads, so every host
stays on its release. Worker hosts switch first and the airflow host last: the scheduler queues
only tasks of DAGs the dag-processor parsed from the airflow host's folder, so by the time a new
DAG or task can be queued every worker already has its files (a worker running an old task on the
new files for the few seconds before the airflow host switches is the lesser risk than a task it
cannot find). A failed switch switches the hosts already switched back. Then the deploy waits for
the DAG processor, as on one host.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass

from .. import hosts as host_selection
from ..engine.runner import HostOutcome, Progress
from ..errors import DropshipError, RemoteError
from ..inventory import Environment, HostSpec
from ..redact import Redactor
from ..roles.airflow import LAYOUT
from ..transport.hostkeys import KnownHosts
from ..transport.ssh import connect
from .airflow import HostDags
from .host_deploy import Steps

DAG_LOCK, DAG_AUDIT = f"{LAYOUT.root}/deploy.lock", f"{LAYOUT.root}/audit.log"
EMPTY = "empty"        # the release every host starts on (roles/airflow.py)


@dataclass
class Member:
    """One host of the release: its steps (lock, audit, outcome) and DAG operations."""

    name: str
    steps: Steps
    dags: HostDags
    previous: str | None = None       # the release to switch back to


def dag_hosts(env: Environment, hosts: list[HostSpec]) -> list[HostSpec]:
    """The hosts of ``hosts`` that read DAGs, in switch order: worker hosts, then the airflow host."""
    return [h for h in hosts if "airflow_worker" in h.roles] + [h for h in hosts if "airflow" in h.roles]


def deploy_dags(env: Environment, hosts: list[HostSpec], ship, progress: Progress, redactor: Redactor,
                lock_wait: float = 0) -> dict[str, HostOutcome]:
    """Ship ``ship`` to ``hosts`` (dag_hosts order) and switch them together."""
    def body(members: list[Member]) -> str:
        uploaded: list[Member] = []
        try:
            for m in members:
                m.previous = m.dags.upload(ship)
                uploaded.append(m)
            dag_ids = members[-1].dags.check(ship.id)
        except RemoteError:
            for m in uploaded:
                m.dags.discard(ship.id)
            raise
        since = switch_all(members, ship.id)
        members[-1].dags.wait_parsed(dag_ids, since)
        for m in members:
            m.dags.prune([ship.id, m.previous or ""])
        return ship.id

    return together(env, hosts, "deploy", ship.id, progress, redactor, lock_wait, body)


def rollback_dags(env: Environment, hosts: list[HostSpec], to: str | None, progress: Progress,
                  redactor: Redactor) -> dict[str, HostOutcome]:
    """Switch ``hosts`` back together: to ``to``, or the airflow host's previous release (which every
    host must hold, checked before any switch)."""
    def body(members: list[Member]) -> str:
        target = members[-1].dags.rollback_target(to)
        for m in members:
            m.previous = m.dags.state().current
            m.dags.rollback_target(target)
        switch_all(members, target)
        return target

    return together(env, hosts, "rollback", to or "previous", progress, redactor, 0, body)


def switch_all(members: list[Member], release: str) -> float:
    """Switch every member to ``release`` in order; on a failure switch those done back. The last
    member's clock at its switch."""
    done: list[Member] = []
    since = 0.0
    try:
        for m in members:
            since = m.dags.switch(release)
            done.append(m)
    except RemoteError:
        for m in done:
            m.dags.switch(m.previous or EMPTY)
        raise
    return since


def together(env: Environment, hosts: list[HostSpec], action: str, what: str, progress: Progress,
             redactor: Redactor, lock_wait: float, body) -> dict[str, HostOutcome]:
    """``body(members)`` with every host's session open and its DAG lock held, audited on each; every
    host's outcome (a failure is the failing host's error, the others' "not switched")."""
    started = time.monotonic()
    known = KnownHosts(env.workspace.known_hosts_path)
    targets = {t.name: t for t in host_selection.targets(env, hosts)}
    members: list[Member] = []
    outcomes = {h.name: HostOutcome(h.name) for h in hosts}
    with ExitStack() as stack:
        try:
            for h in hosts:
                session = connect(targets[h.name], known, redactor)
                stack.callback(session.close)
                steps = Steps(session, progress, redactor, DAG_LOCK, DAG_AUDIT, lock_wait=lock_wait)
                stack.enter_context(steps.locked(action, what, env.name))
                members.append(Member(h.name, steps, HostDags(env, session, progress, redactor, steps.step)))
            try:
                done = body(members)
            except RemoteError as exc:
                for m in members:
                    m.steps.audit(action, what, f"failed at {exc.step}" if m.name == exc.host
                                  else f"not switched: {exc.host} failed")
                raise
            for m in members:
                m.steps.audit(action, done, "ok")
                m.steps.outcome.changed += 1
        except DropshipError as exc:
            culprit = getattr(exc, "host", None)
            for name, outcome in outcomes.items():
                outcome.failed = 1
                outcome.error = redactor(str(exc)) if culprit in (None, name) else \
                    f"DAG release {what}: not switched, {culprit} failed"
                if culprit not in (None, name):
                    progress.step(name, "failed", outcome.error)
    for m in members:
        o = outcomes[m.name]
        o.ok, o.changed = m.steps.outcome.ok, o.changed + m.steps.outcome.changed
    for o in outcomes.values():
        o.seconds = time.monotonic() - started
    return outcomes
