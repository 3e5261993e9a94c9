"""``invoke up``: create the droplets, provision them, deploy, and say where to open what runs."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import balancer
from .. import hosts as host_selection
from ..engine.runner import Progress
from ..inventory import Environment
from ..keys import key_path
from ..report import Report
from ..roles.tls import terminates_web
from ..transport.pool import PARALLEL
from .airflow import prepare_image
from .deploy import DeployOptions, deploy, deployed_roles
from .droplets import create as create_droplets
from .provision import ProvisionOptions, provision


@dataclass
class Up:
    droplets: list
    reports: list[Report] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)


def up(env: Environment, progress: Progress, parallel: int = PARALLEL, on_report=None) -> Up:
    """Create, provision and (where hosts have apps or DAGs) deploy; stops at the first failed stage.
    The Airflow image is made while the droplets are created (on a new machine both build images
    of their own). ``on_report`` sees each stage's report as soon as it ends."""
    with ThreadPoolExecutor(1) as pool:
        image = pool.submit(prepare_image, env) if any("airflow" in h.roles for h in env.hosts) else None
        result = Up(create_droplets(env, host_selection.select(env, None), progress, parallel))
        if image is not None:
            image.result()            # a failed build ends here, in its one line; provision finds the image
    stages = [lambda: provision(env, ProvisionOptions(parallel=parallel), progress)]
    if any(deployed_roles(env, h) for h in env.hosts):
        stages.append(lambda: deploy(env, DeployOptions(parallel=parallel), progress))
    for stage in stages:
        report = stage()
        result.reports.append(report)
        if on_report:
            on_report(report)
        if not report.ok:
            break
    return result


def where_to_open(env: Environment, droplets) -> list[str]:
    """Per droplet: what it serves (with an lb, the apps are opened there; the web hosts behind it
    only say so), the Airflow UI (and where its password is), the SSH command."""
    lb = balancer.lb_host(env)
    lines = []
    for d in droplets:
        host = env.host(d.name)
        tls = env.settings.nginx.tls.on and terminates_web(env, host)
        port = 443 if tls else 80
        scheme = "https" if tls else "http"
        http = f"{scheme}://{d.address}:{d.port(port)}/" if d.port(port) != port else f"{scheme}://{d.address}/"
        fronts_apps = "lb" in host.roles or ("app" in host.roles and lb is None)
        af = env.settings.airflow if "airflow" in host.roles else None
        if fronts_apps or (af and not af.server_name):
            lines.append(f"{d.name}: open {http}")
        else:
            lines.append(f"{d.name}:" + (f" behind {lb.name}" if lb and "app" in host.roles else ""))
        for app in env.settings.apps if fronts_apps else ():
            if app.server_name:
                name = app.server_name.split()[0]
                lines.append(f"  {app.name}: {'https' if app.tls.on else 'http'}://{name}/ "
                             f"(with {name} resolving to {d.address})")
            elif app.path:
                lines.append(f"  {app.name}: {http}{app.path.lstrip('/')}/")
        if af:
            ui = f"{'https' if af.tls.on else 'http'}://{af.server_name}{af.url_path}/ (with {af.server_name} resolving to {d.address})" \
                if af.server_name else f"{http}{af.url_path.lstrip('/')}/"
            lines.append(f"  Airflow UI: {ui} (user {af.admin_user}; password: "
                         f"'{af.admin_password.name}' in {env.workspace.secrets_path(env.name)})")
        lines.append(f"  ssh -i {key_path(env)} -p {d.ssh_port} "
                     f"-o UserKnownHostsFile={env.workspace.known_hosts_path} {env.ssh.user}@{d.address}")
    return lines
