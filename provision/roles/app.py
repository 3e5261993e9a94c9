"""The app's home on a host: its user, release folders, slot units and the nginx site.

Deploys (workflows/deploy.py) fill the releases and switch the slots; this role only lays out
what they need, and never touches the upstream file a deploy has switched.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.files import Absent, Directory, File, Symlink
from ..engine.model import Handler, Resource, reload
from ..engine.system import User
from ..templates import render
from . import Role, RoleContext

NAME = "app"
SLOTS = ("blue", "green")
DAEMON_RELOAD = Handler("systemctl daemon-reload", "systemctl daemon-reload")


@dataclass(frozen=True)
class AppLayout:
    """Where an app lives on a host (pure)."""

    app: str
    base_port: int = 8000

    @property
    def root(self) -> str:
        return f"/srv/{self.app}"

    @property
    def user(self) -> str:
        return self.app

    def release(self, release_id: str) -> str:
        return f"{self.root}/releases/{release_id}"

    def slot(self, slot: str) -> str:
        return f"{self.root}/slots/{slot}"

    def port(self, slot: str) -> int:
        return self.base_port + 1 + SLOTS.index(slot)

    def unit(self, slot: str) -> str:
        return f"{self.app}@{slot}.service"

    @property
    def upstream_file(self) -> str:
        return f"/etc/nginx/dropship/{self.app}-upstream.conf"

    @property
    def live_file(self) -> str:
        return f"{self.root}/live"

    @property
    def lock_dir(self) -> str:
        return f"{self.root}/deploy.lock"

    @property
    def audit_log(self) -> str:
        return f"{self.root}/audit.log"

    @property
    def venvs(self) -> str:
        return f"{self.root}/shared/venvs"


def layout(ctx_or_settings) -> AppLayout:
    app = ctx_or_settings.settings.app if hasattr(ctx_or_settings, "settings") else ctx_or_settings
    return AppLayout(app.name, app.port)


def packages(ctx: RoleContext) -> list[str]:
    return ["python3-venv", "curl", "rsync"]


def resources(ctx: RoleContext) -> list[Resource]:
    app = ctx.settings.app
    if app is None:
        return []
    lay = layout(ctx)
    nginx = reload("nginx", check="nginx -t -q")
    site = f"/etc/nginx/sites-available/{app.name}.conf"
    out: list[Resource] = [
        User(lay.user, shell="/usr/sbin/nologin", home=lay.root, system=True, role=NAME),
        Directory(lay.root, role=NAME),
        Directory(f"{lay.root}/releases", role=NAME),
        Directory(f"{lay.root}/slots", role=NAME),
        Directory(f"{lay.root}/shared", role=NAME),
        Directory(lay.venvs, role=NAME),
    ]
    out += [File(f"{lay.slot(s)}.env", render("app/slot.env.j2", slot=s, port=lay.port(s)), role=NAME)
            for s in SLOTS]
    out += [
        File(f"/etc/systemd/system/{app.name}@.service",
             render("app/unit.service.j2", app=app.name, user=lay.user, root=lay.root, workers=app.workers,
                    wsgi=app.wsgi), role=NAME, notify=(DAEMON_RELOAD,)),
        File(lay.upstream_file, render("app/upstream.conf.j2", slot=SLOTS[0], port=lay.port(SLOTS[0])),
             role=NAME, replace=False),
        File(site, render("app/site.conf.j2", app=app.name, upstream=f"{app.name.replace('-', '_')}_app",
                          upstream_file=lay.upstream_file, server_name=ctx.settings.nginx.server_name),
             role=NAME, notify=(nginx,)),
        Absent("/etc/nginx/sites-enabled/dropship.conf", role=NAME, notify=(nginx,)),
        Symlink(f"/etc/nginx/sites-enabled/{app.name}.conf", site, role=NAME, notify=(nginx,)),
    ]
    return out


ROLE = Role(NAME, packages, resources)
