"""Rolling deploys and rollbacks behind the load balancer: the web hosts in batches
(``deploy.batch_size``), each drained from the lb's upstream, switched by the per-host work, gated
from the lb through its private address, and put back (a new host joins only then). A failing
batch is undone and put back; the hosts after it keep serving the old release.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .. import balancer
from .. import hosts as host_selection
from ..engine.model import q
from ..engine.runner import HostOutcome, Progress
from ..errors import DropshipError, RemoteError, changed_nothing
from ..inventory import AppSettings, Environment, HostSpec
from ..redact import Redactor
from ..report import Report
from ..roles.app import layout
from ..transport.hostkeys import KnownHosts
from ..transport.pool import fan_out
from ..transport.ssh import Session, Target, connect
from .host_deploy import Steps
from .on_hosts import read_hosts, run_on_hosts

Work = Callable[[HostSpec, Session], HostOutcome]


def serving_command(apps: tuple[AppSettings, ...]) -> str:
    """Exit 0 when every app has a live slot on the host (it can join the lb's upstream)."""
    return " && ".join(f"test -s {q(layout(a).live_file)}" for a in apps) or "true"


def serving_web_hosts(env: Environment) -> tuple[str, ...]:
    """The web hosts serving a live release of every app now (those that do not answer do not)."""
    apps = env.settings.apps
    try:
        found = read_hosts(env, balancer.web_hosts(env), lambda h: f"{serving_command(apps)} && echo SERVING; true",
                           lambda out, now: {"serving": "SERVING" in out}, "probe web hosts")
    except DropshipError:       # a web host without a droplet yet serves nothing
        return ()
    return tuple(h for h, r in found.items() if r.get("serving"))


class Upstream:
    """The lb's upstream as a rollout changes it, over the lb's session (``steps``)."""

    def __init__(self, env: Environment, steps: Steps, addresses: dict[str, str], web: list[str]):
        self.env, self.steps, self.addresses, self.all = env, steps, addresses, web
        text = steps.step("read the upstream", f"cat {q(balancer.UPSTREAM_FILE)} 2>/dev/null; true", timeout=30)
        self.members = balancer.members(text, web, addresses)
        self.departed = sorted(balancer.listed(text) - {addresses[h] for h in self.members})

    def write(self, label: str, what: str, down: tuple[str, ...] = ()) -> None:
        servers = balancer.backends(self.members, self.addresses, down)
        self.steps.step(label, balancer.upstream_command(servers, what), timeout=60,
                        fix=f"check the lb's nginx (`nginx -t` on {self.steps.session.name}); the upstream was "
                            "left as it was")

    def gate(self, host: str, apps: tuple[AppSettings, ...]) -> None:
        for app in apps:
            self.steps.step(f"gate {host} through {self.addresses[host]}"
                            f"{' (' + app.name + ')' if len(apps) > 1 else ''}",
                            balancer.gate_command(self.env, app, host, self.addresses[host]),
                            timeout=app.health.timeout + 30)


def drain_departed(env: Environment, lb: Target, addresses: dict[str, str], redactor: Redactor,
                   progress: Progress) -> HostOutcome:
    """Drop from the lb's upstream the servers of web hosts no longer in the inventory (provision)."""
    session = connect(lb, KnownHosts(env.workspace.known_hosts_path), redactor)
    steps = Steps(session, progress, redactor, "", "")
    try:
        upstream = Upstream(env, steps, addresses, [h.name for h in balancer.web_hosts(env)])
        if upstream.departed:
            upstream.write(f"drain {', '.join(upstream.departed)} (no longer in the inventory)", "drain")
            steps.outcome.changed += 1
    except RemoteError as exc:
        steps.outcome.failed, steps.outcome.error = 1, redactor(str(exc))
    finally:
        session.close()
    return steps.outcome


@dataclass
class Rollout:
    """One rolling ``command`` (deploy, rollback) over ``hosts``: ``work`` switches a host, ``undo``
    (deploys) puts a host of a failed batch back on its previous release; with ``first_alone`` the
    first web host runs before the rest of its batch (it runs the release command)."""

    env: Environment
    hosts: list[HostSpec]
    targets: list[Target]
    lb: Target
    addresses: dict[str, str]
    apps: tuple[AppSettings, ...]
    redactor: Redactor
    progress: Progress
    parallel: int
    command: str
    work: Work
    undo: Work | None = None
    first_alone: bool = False
    sessions: dict[str, Session] = field(default_factory=dict, repr=False)   # logged in, not yet used
    lb_session: Session | None = field(default=None, repr=False)

    @property
    def all_web(self) -> list[str]:
        """Every web host of the inventory (those not chosen stay in the upstream as they are)."""
        return [h.name for h in balancer.web_hosts(self.env)]

    def on(self, names: list[str], work: Work) -> dict[str, HostOutcome]:
        hosts = [h for h in self.hosts if h.name in names]
        targets = [t for t in self.targets if t.name in names]
        return run_on_hosts(self.env, hosts, targets, self.redactor, self.parallel, work, self.command,
                            sessions=self.sessions).hosts

    def switch(self, batch: list[str], first: bool) -> dict[str, HostOutcome]:
        if not (first and self.first_alone and len(batch) > 1):
            return self.on(batch, self.work)
        done = self.on(batch[:1], self.work)
        if done[batch[0]].failed:
            return done | {h: HostOutcome(h, skipped=1) for h in batch[1:]}
        return done | self.on(batch[1:], self.work)

    def log_in(self) -> dict[str, HostOutcome]:
        """Log in to the lb and every host before anything changes, their sessions kept for their
        work: a host that cannot be reached stops the rollout before its first batch, not at its own
        with the hosts before it switched. The outcomes when one could not be logged in to, else {}."""
        known = KnownHosts(self.env.workspace.known_hosts_path)
        logged = fan_out([self.lb, *self.targets], lambda t: connect(t, known, self.redactor), self.parallel)
        (_, self.lb_session, _), *hosts = logged      # (the lb's own session: it may hold DAGs to deploy too)
        self.sessions = {t.name: s for t, s, _ in hosts if s is not None}
        for session in [self.lb_session, *self.sessions.values()]:
            if session is not None:
                session.keep_alive()        # a later batch's host waits for the batches before it
        refused = {t.name: exc for t, _, exc in logged if exc is not None}
        if not refused:
            return {}
        self.close()
        for exc in refused.values():
            if not isinstance(exc, DropshipError):
                raise exc
        names = {t.name for t in self.targets} | {self.lb.name}
        return {h.name: HostOutcome(h.name, failed=1, error=self.redactor(changed_nothing(str(refused[h.name]),
                                                                                        self.command)))
                if h.name in refused else HostOutcome(h.name, skipped=1) for h in self.env.hosts if h.name in names}

    def close(self) -> None:
        for session in [self.lb_session, *self.sessions.values()]:
            if session is not None:
                session.close()
        self.lb_session, self.sessions = None, {}

    def run(self, extra: dict) -> Report:
        started = time.monotonic()
        report = Report(self.command, self.env.name, extra=extra)
        refused = self.log_in()
        if refused:
            report.hosts, report.seconds = refused, time.monotonic() - started
            return report
        try:
            others = [h.name for h in self.hosts if "app" not in h.roles]
            outcomes = self.on(others, self.work) if others else {}
            web = [h.name for h in self.hosts if "app" in h.roles]
            steps = Steps(self.lb_session, self.progress, self.redactor, "", "")
            try:
                self.batches(steps, web, outcomes)
            except DropshipError as exc:         # the lb's nginx refused a change, or the lb was lost
                steps.outcome.failed, steps.outcome.error = 1, self.redactor(str(exc))
        finally:
            self.close()
        lb = steps.outcome
        lb.seconds = time.monotonic() - started          # its upstream changes span the rollout
        outcomes[self.lb.name] = lb
        outcomes |= {h: HostOutcome(h, skipped=1) for h in web if h not in outcomes}
        order = [h.name for h in self.env.hosts]
        report.hosts = {h: outcomes[h] for h in sorted(outcomes, key=lambda n: order.index(n) if n in order else 0)}
        report.seconds = time.monotonic() - started
        return report

    def batches(self, steps: Steps, web: list[str], outcomes: dict[str, HostOutcome]) -> None:
        """Batch after batch into ``outcomes``; an lb step that fails raises (the hosts done are kept)."""
        upstream = Upstream(self.env, steps, self.addresses, self.all_web)
        upstream.write(f"upstream: {', '.join(upstream.members) or 'no web host serves yet'}", "upstream change")
        plan = balancer.batches(web, self.env.settings.deploy.batch_size)
        for i, batch in enumerate(plan, 1):
            self.progress.step(self.lb.name, "ok", f"batch {i}/{len(plan)}: {', '.join(batch)}")
            down = balancer.drainable(upstream.members, batch)
            if down:
                upstream.write(f"drain {', '.join(down)}", "drain", down)
            done = self.switch(batch, i == 1)
            failed = [h for h in batch if done[h].failed]
            for h in batch if not failed else ():
                try:
                    upstream.gate(h, self.apps)
                except RemoteError as exc:
                    done[h].failed, done[h].error = 1, self.redactor(str(exc))
                    failed.append(h)
                    break
            outcomes |= done
            if failed:
                undone = self.on([h for h in batch if not done[h].skipped], self.undo) if self.undo else {}
                self.stopped(outcomes, failed[0], i, len(plan), batch, undone, web)
                upstream.write(f"put back {', '.join(down) or 'nothing'}", "undrain")
                return
            upstream.members = [h for h in self.all_web if h in upstream.members or h in batch]
            upstream.write(f"put back {', '.join(batch)}", "undrain")
            self.progress.step(self.lb.name, "ok", f"batch {i}/{len(plan)} done: {', '.join(batch)} "
                               f"{'serves' if len(batch) == 1 else 'serve'} again")

    def stopped(self, outcomes: dict[str, HostOutcome], host: str, i: int, n: int, batch: list[str],
                undone: dict[str, HostOutcome], web: list[str]) -> None:
        """The failed host's one-line error says where the rollout stopped and how to recover."""
        back = [h for h in batch if h in undone and not undone[h].failed]
        stuck = [h for h in batch if h in undone and undone[h].failed]
        done, rest = web[:web.index(batch[0])], web[web.index(batch[-1]) + 1:]
        said = [f"{self.command} stopped at batch {i}/{n}"]
        said += [f"{', '.join(done)} {'rolled back' if self.command == 'rollback' else 'on the new release'}"] \
            if done else []
        said += [f"{', '.join(back)} back on the previous release"] if back else []
        said += [f"{', '.join(stuck)} could not be rolled back ({undone[stuck[0]].error})"] if stuck else []
        said += [f"{', '.join(rest)} untouched (still on the old release)"] if rest else []
        fix = f"fix the cause, then run `invoke {self.command} --env {self.env.name}` again"
        if done and self.command == "deploy":
            fix += (f", or `invoke rollback --env {self.env.name} --hosts {','.join(done)}` to put "
                    f"{'them' if len(done) > 1 else 'it'} back on {'their' if len(done) > 1 else 'its'} previous release")
        first = outcomes[host]
        first.error = f"{first.error.split(' (fix: ')[0]}; {'; '.join(said)} (fix: {fix})"


class Detour:
    """One web host out of the lb's upstream while it is away (a resize), then gated from the lb and
    put back; each visit to the lb is its own short session."""

    def __init__(self, env: Environment, host: str, lb: Target, redactor: Redactor, progress: Progress):
        self.env, self.host, self.lb, self.redactor, self.progress = env, host, lb, redactor, progress

    def _visit(self, then: Callable[[Upstream], None]) -> None:
        addresses = host_selection.private_addresses(self.env)      # as recorded now (a power cycle may move one)
        balancer.require_addresses(self.env, addresses)
        session = connect(self.lb, KnownHosts(self.env.workspace.known_hosts_path), self.redactor)
        try:
            then(Upstream(self.env, Steps(session, self.progress, self.redactor, "", ""), addresses,
                          [h.name for h in balancer.web_hosts(self.env)]))
        finally:
            session.close()

    def leave(self) -> bool:
        """Mark the host down in the upstream (graceful reload); False when no other server would be
        left to serve (then it is not drained)."""
        drained = []

        def out(upstream: Upstream) -> None:
            drained.extend(balancer.drainable(upstream.members, [self.host]))
            if drained:
                upstream.write(f"drain {self.host} from {self.lb.name}", "drain", tuple(drained))
        self._visit(out)
        return bool(drained)

    def rejoin(self) -> None:
        """Gate the host from the lb through its private address, then put it back."""
        def back(upstream: Upstream) -> None:
            upstream.gate(self.host, self.env.settings.apps)
            upstream.members = [h for h in upstream.all if h in upstream.members or h == self.host]
            upstream.write(f"put back {self.host} in {self.lb.name}", "undrain")
        self._visit(back)
