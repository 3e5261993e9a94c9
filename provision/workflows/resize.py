"""``droplet.resize``: bring droplets to their inventory size (or ``--size``), one at a time.

Preflight for every host before anything stops (the provider's rules: the size exists, is offered
in the region, fits the image and the disk; no action in progress), then per host: snapshot →
stop the apps' slots and Airflow → shutdown (a hard power-off after a timeout) → resize → power on
→ SSH → retune what derives from the size (re-run of the size-dependent roles) → health gates →
the downtime seen by a prober outside. A web host behind the load balancer is drained from its
upstream first and put back after a gate from the lb (the prober then asks the lb: the service
stays up while the web tier resizes host by host). A failure powers the droplet back on (at the old size when
the resize itself failed) and names the step and the snapshot to restore from.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .. import balancer
from .. import hosts as host_selection
from .. import release as rel
from .. import sizing
from ..engine.runner import HostOutcome, Progress
from ..errors import DropshipError, RemoteError
from ..inventory import Environment, HostSpec
from ..prober import Downtime, Prober
from ..providers.base import Droplet, Provider, SizeInfo
from ..redact import Redactor
from ..report import Report
from ..roles.airflow import LAYOUT as AIRFLOW, stack_health_command
from ..roles.app import SLOTS, layout
from ..state import load_droplets, mark_resizing, resizing, save_droplets
from ..transport.hostkeys import KnownHosts
from ..transport.ssh import Session, Target, connect
from .deploy import rolling_lb
from .droplets import provider_for
from .provision import ProvisionOptions, provision
from .rolling import Detour

SIZE_ROLES = ("base", "postgres", "app", "airflow", "airflow_worker")   # the roles whose settings derive from the size
SSH_WAIT = 300
SETTLE = 2.0             # the prober must see only good answers this long before the downtime is read
EXPECTED_DOWNTIME = {"local": "about 30-90 s (a reboot, then the services' start and health gates)",
                     "digitalocean": "about 1-4 min (shutdown, resize, boot, services' start and health gates)"}


@dataclass(frozen=True)
class ResizeOptions:
    size: str | None = None            # a size not in the inventory (--size)
    hosts: tuple[str, ...] | None = None
    snapshot: bool = True
    disk: bool = False                 # also grow the disk: permanent
    dry_run: bool = False


@dataclass
class HostPlan:
    host: HostSpec
    droplet: Droplet
    target: SizeInfo
    settings: list[tuple[str, str, str]]     # (setting, old, new)
    resume: bool = False                     # a resize to this size began and did not end: finish it

    @property
    def name(self) -> str:
        return self.host.name

    def to_dict(self) -> dict:
        return {"from": self.droplet.size, "to": self.target.slug, "vcpus": self.target.vcpus,
                "memory_mb": self.target.memory_mb, "disk_gb": self.target.disk_gb,
                "settings": [{"setting": k, "old": a, "new": b} for k, a, b in self.settings]}


def size_settings(env: Environment, host: HostSpec, vcpus: int, memory_mb: int) -> dict[str, str]:
    """What provisioning derives from this size on ``host`` (local droplets share this machine's CPUs)."""
    cpus = min(vcpus, os.cpu_count() or vcpus) if env.provider == "local" else vcpus
    apps = {a.name: a.workers for a in env.settings.apps} if "app" in host.roles else {}
    af = env.settings.airflow if "airflow" in host.roles else None
    out = sizing.derived(cpus, memory_mb, apps, airflow=af is not None, postgres="postgres" in host.roles,
                         celery=bool(af and af.celery))
    if "airflow_worker" in host.roles and env.settings.airflow:
        out["airflow worker concurrency"] = str(sizing.airflow_worker_concurrency(cpus, memory_mb))
    return out


def plan(env: Environment, options: ResizeOptions, provider: Provider) -> tuple[list[HostPlan], list[str]]:
    """Preflight of every chosen droplet (nothing changes): the plans, and the names already at size."""
    chosen = [h for h in host_selection.select(env, options.hosts) if h.droplet is not None]
    if not chosen:
        raise DropshipError(f"environment {env.name} has no droplets to resize", "list them under 'droplets:'")
    plans, same = [], []
    unfinished = resizing(env)
    for h in chosen:
        d = provider.get(h.name)
        if d is None:
            raise DropshipError(f"{h.name}: no droplet yet", f"run `invoke droplet.create --env {env.name}`")
        want = options.size or h.droplet.size
        resume = d.size == want and (unfinished.get(h.name) == want or d.status == "off")
        if d.size == want and not options.disk and not resume:
            same.append(h.name)
            continue
        target = provider.check_resize(h.name, want, options.disk and not resume)
        plans.append(HostPlan(h, d, target, sizing.changes(size_settings(env, h, d.vcpus, d.memory_mb),
                                                           size_settings(env, h, target.vcpus, target.memory_mb)),
                              resume))
    return plans, same


def behind_lb(env: Environment, host: HostSpec) -> bool:
    """The host serves the apps behind the lb with another web host beside it (it can be drained)."""
    return balancer.lb_host(env) is not None and "app" in host.roles and bool(env.settings.apps) and \
        len(balancer.web_hosts(env)) > 1


def plan_lines(env: Environment, p: HostPlan, options: ResizeOptions) -> list[str]:
    """What a dry run prints for one host."""
    t = p.target
    lb = balancer.lb_host(env)
    drain = behind_lb(env, p.host)
    lines = [f"{p.droplet.size} -> {t.slug} ({t.vcpus} vCPU, {t.memory_mb} MB, {t.disk_gb} GB disk"
             f"{', disk grows: permanent' if options.disk else ''})",
             "steps: finish a resize that did not end: power on (if off), retune, health gates" if p.resume else
             f"steps: {'snapshot, ' if options.snapshot else ''}{f'drain from {lb.name}, ' if drain else ''}"
             f"stop apps and Airflow, shutdown, resize, power on, retune, health gates"
             f"{f', gate from {lb.name}, put back' if drain else ''}"]
    lines += [f"{k}: {a} -> {b}" for k, a, b in p.settings] or ["no size-derived setting changes"]
    lines.append(f"expected downtime: none through {lb.name} (the other web hosts serve)" if drain else
                 f"expected downtime: {EXPECTED_DOWNTIME.get(env.provider, 'a few minutes')}")
    return lines


def resize(env: Environment, options: ResizeOptions, progress: Progress) -> Report:
    """Preflight every host, then resize them one at a time; the first failure stops the rest."""
    started = time.monotonic()
    provider = provider_for(env)
    plans, same = plan(env, options, provider)
    report = Report("droplet.resize", env.name, dry_run=options.dry_run)
    for name in same:
        progress.step(name, "ok", f"already {options.size or env.host(name).droplet.size}")
        report.hosts[name] = HostOutcome(name, ok=1)
    for p in plans:
        for line in plan_lines(env, p, options):
            progress.step(p.name, "plan", line)
    report.extra["plan"] = {p.name: p.to_dict() for p in plans}
    if options.dry_run:
        for p in plans:
            report.hosts[p.name] = HostOutcome(p.name, changed=1)     # would change
        report.seconds = time.monotonic() - started
        return report
    downtimes: dict[str, dict] = {}
    redactor = Redactor()
    for i, p in enumerate(plans):
        lb = rolling_lb(env, [p.host], env.settings.apps, redactor) if behind_lb(env, p.host) else None
        detour = Detour(env, p.name, lb, redactor, progress) if lb else None
        outcome, down = HostResize(env, p, provider, progress, options, detour).run()
        report.hosts[p.name] = outcome
        if down is not None:
            downtimes[p.name] = {"seconds": None if down.seconds is None else round(down.seconds, 2),
                                 "failed_requests": down.failed, "requests": down.total}
        if outcome.failed:
            for rest in plans[i + 1:]:
                progress.step(rest.name, "skipped", "not resized: an earlier host failed")
                report.hosts[rest.name] = HostOutcome(rest.name, skipped=1)
            break
    report.extra["downtime"] = downtimes
    report.seconds = time.monotonic() - started
    return report


class HostResize:
    """The resize of one droplet, step by step; ``run`` never raises for a failed step."""

    def __init__(self, env: Environment, p: HostPlan, provider: Provider, progress: Progress,
                 options: ResizeOptions, detour: Detour | None = None):
        self.env, self.p, self.provider, self.progress, self.options = env, p, provider, progress, options
        self.detour, self.drained = detour, False
        self.name = p.name
        self.outcome = HostOutcome(p.name)
        self.redactor = Redactor()
        self.known = KnownHosts(env.workspace.known_hosts_path)
        self.snapshot_id = ""
        self.powered_off = self.resized = False

    def step(self, label: str, fn):
        started = time.monotonic()
        try:
            result = fn()
        except (DropshipError, OSError) as exc:
            self.progress.step(self.name, "failed", f"{label}: {self.redactor(str(exc))}", time.monotonic() - started)
            raise _Failed(label, exc) from None
        self.progress.step(self.name, "ok", label, time.monotonic() - started)
        self.outcome.ok += 1
        return result

    def run(self) -> tuple[HostOutcome, Downtime | None]:
        started = time.monotonic()
        p, prober = self.p, None
        try:
            if self.options.snapshot and not p.resume:
                stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
                self.snapshot_id = self.step("snapshot", lambda: self.provider.snapshot(
                    self.name, f"pre-resize-{stamp}"))
            if self.detour:
                self.drained = self.step(f"drain from {self.detour.lb.name}", self.detour.leave)
            probe = probe_target(self.env, p.host, p.droplet, self.drained)
            # through the lb a slower answer is still an answer: the bar is a failed request, not a slow one
            slack = {"timeout": 2.0, "workers": 64} if self.drained else {}
            prober = Prober(*probe, **slack) if probe else None
            if prober:
                prober.__enter__()
            mark_resizing(self.env, self.name, p.target.slug)
            self.powered_off = p.droplet.status == "off"
            if p.resume:
                self.progress.step(self.name, "ok", f"finishing a resize to {p.target.slug} that did not end "
                                   f"(the droplet is {p.droplet.status})")
            else:
                self.step("stop the apps' slots and Airflow", self.stop_services)
                self.step("shutdown (power off after a timeout)", lambda: self.provider.power(self.name, False))
                self.powered_off = True
                self.step(f"resize to {p.target.slug}", lambda: self.provider.resize(
                    self.name, p.target.slug, self.options.disk))
            self.resized = True
            if self.powered_off:
                droplet = self.step("power on", lambda: self.provider.power(self.name, True))
                self.powered_off = False
                self.record(droplet)
            self.step("wait for SSH", lambda: self.session().close())
            self.step("retune size-derived settings", self.retune)
            self.step("health gates", self.health_gates)
            if self.detour:
                self.step(f"gate from {self.detour.lb.name}, put back", self.detour.rejoin)
                self.drained = False
            down = None
            if prober:
                self.step("first good answer from outside", lambda: _wait_good(prober))
                prober.__exit__(None, None, None)
                down = prober.result()
                self.progress.step(self.name, "ok", f"downtime: {down.describe()}, probed at "
                                   f"{prober.rate():.0f} requests/s from here")
            mark_resizing(self.env, self.name, None)
            self.outcome.changed += 1
            return self._done(started), down
        except _Failed as failed:
            if prober:
                prober.__exit__(None, None, None)
            self.outcome.failed += 1
            self.outcome.error = self.redactor(self.recover(failed))
            return self._done(started), prober.result() if prober else None

    def _done(self, started: float) -> HostOutcome:
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def recover(self, failed: "_Failed") -> str:
        """Power the droplet back on if the failure left it off; the one-line error with the way back."""
        now = "at the new size" if self.resized else "at the old size"
        if self.powered_off:
            try:
                droplet = self.provider.power(self.name, True)
                self.record(droplet)
                self.progress.step(self.name, "ok", f"powered back on {now} ({droplet.size})")
            except (DropshipError, OSError) as exc:
                now = f"still off ({exc})"
        snap = (f"snapshot {self.snapshot_id} holds the droplet as it was before the resize"
                if self.snapshot_id else "no snapshot was taken")
        if self.drained:
            snap += f"; it stays drained from {self.detour.lb.name} (the other web hosts serve)"
        return (f"{self.name}: resize: {failed.step} failed: {failed.exc}; the droplet is {now}; {snap} "
                f"(fix: fix the cause, then run `invoke droplet.resize --env {self.env.name} --hosts {self.name}` "
                f"again, or `invoke provision --env {self.env.name} --hosts {self.name}` to retune at this size)")

    def record(self, droplet: Droplet) -> None:
        state = load_droplets(self.env)
        before = state[self.name].private_address if self.name in state else ""
        if before and droplet.private_address and droplet.private_address != before:
            self.progress.step(self.name, "ok", f"private address moved {before} -> {droplet.private_address}: "
                               f"run `invoke provision --env {self.env.name}` so the hosts that let it in know it")
        state[self.name] = droplet
        save_droplets(self.env, state)

    def session(self, wait: float = SSH_WAIT) -> Session:
        """A logged-in session, waiting for sshd after a boot."""
        target: Target = host_selection.targets(self.env, [self.p.host])[0]
        deadline = time.monotonic() + wait
        while True:
            try:
                return connect(target, self.known, self.redactor)
            except RemoteError as exc:
                if "unreachable" not in exc.detail or time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def stop_services(self) -> None:
        """Stop the slots (they are enabled: they start at boot) and Airflow (provision starts it)."""
        roles, script = self.p.host.roles, []
        if "app" in roles:
            units = [layout(a).unit(s) for a in self.env.settings.apps for s in SLOTS]
            script.append(f"systemctl stop {' '.join(rel.q(u) for u in units)} 2>/dev/null || true")
        if ("airflow" in roles or "airflow_worker" in roles) and self.env.settings.airflow:
            script.append(f"if [ -f {AIRFLOW.root}/compose.yaml ]; then {AIRFLOW.compose} stop --timeout 60; fi")
        if script:
            _run(self.session(30), "\n".join(script), 300)

    def retune(self) -> None:
        roles = tuple(r for r in self.p.host.roles if r in SIZE_ROLES)
        report = provision(self.env, ProvisionOptions(roles=roles, hosts=(self.name,)), self.progress)
        if not report.ok:
            raise DropshipError(report.hosts[self.name].error or "provision failed")
        touched = " ".join(c.resource for c in report.hosts[self.name].changes)
        apps = [a for a in self.env.settings.apps if layout(a).unit_file in touched] \
            if "app" in self.p.host.roles else []
        if apps:   # the slots started at boot with the old unit (worker count)
            units = [layout(a).unit(s) for a in apps for s in SLOTS]
            _run(self.session(30), "\n".join(f"systemctl is-enabled -q {rel.q(u)} && systemctl restart {rel.q(u)}"
                                             for u in units) + "\ntrue", 300)

    def health_gates(self) -> None:
        """Each app's health gate on its live slot, and Airflow's health endpoint."""
        session = self.session(30)
        try:
            if "app" in self.p.host.roles:
                for app in self.env.settings.apps:
                    lay = layout(app)
                    live = session.script(f"cat {rel.q(lay.live_file)} 2>/dev/null", timeout=30).stdout.strip()
                    if live not in SLOTS:
                        continue        # never deployed: nothing to gate
                    url = f"http://127.0.0.1:{lay.port(live)}{app.path}{app.health.path}"
                    _check(session, f"{app.name} health", rel.health_command(
                        url, app.health.expect_status, app.health.expect_text, max(60, app.health.timeout)))
            af = self.env.settings.airflow
            if "airflow" in self.p.host.roles and af:
                _check(session, "Airflow health", stack_health_command(AIRFLOW.port, af.url_path))
        finally:
            session.close()


class _Failed(Exception):
    def __init__(self, step: str, exc: BaseException):
        super().__init__(step)
        self.step, self.exc = step, exc


def probe_target(env: Environment, host: HostSpec, droplet: Droplet,
                 via_lb: bool = False) -> tuple[str, str | None] | None:
    """(URL, Host header) a prober outside asks: the first app's health path through nginx (the lb's,
    ``via_lb``), else Airflow's health endpoint; None when the host serves neither."""
    lb = balancer.lb_host(env) if via_lb else None
    seen = load_droplets(env).get(lb.name) if lb else droplet
    base = f"http://{seen.address}:{seen.port(80)}" if seen else f"http://{lb.address}"
    if "app" in host.roles and env.settings.apps:
        app = env.settings.apps[0]
        name = app.server_name.split()[0] if app.server_name else None
        return f"{base}{app.path}{app.health.path}", name
    af = env.settings.airflow
    if "airflow" in host.roles and af:
        return f"{base}{af.url_path}/api/v2/monitor/health", af.server_name
    return None


def _run(session: Session, script: str, timeout: float) -> None:
    try:
        result = session.script(script, timeout=timeout)
    finally:
        session.close()
    if result.rc != 0:
        raise DropshipError(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else f"exit {result.rc}")


def _check(session: Session, what: str, script: str) -> None:
    result = session.script(script, timeout=600)
    if result.rc != 0:
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else f"exit {result.rc}"
        raise DropshipError(f"{what}: {last}")


def _wait_good(prober: Prober, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not prober.good_since(SETTLE):
        if time.monotonic() > deadline:
            raise DropshipError(f"{prober.url} does not answer from outside within {timeout:.0f} s")
        time.sleep(0.2)
