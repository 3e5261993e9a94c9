"""The apps' homes on a host: per app its user, release folders, slot units and nginx site.

Deploys (workflows/) fill the releases and switch the slots; this role only lays out what they
need, and never touches the upstream file a deploy has switched. An app is served at the root
of the default server, at a path of it (``app.path``), or on a server of its own
(``app.server_name``).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import balancer
from ..engine.files import Absent, Directory, File, Symlink
from ..engine.model import Resource
from ..engine.system import User, systemd_word
from ..inventory import AppSettings
from ..release import GUNICORN_ENV
from ..sizing import gunicorn_workers
from ..engine.uv import UvTool
from ..templates import render
from . import Role, RoleContext
from .handlers import DAEMON_RELOAD, RELOAD_NGINX
from .tls import include_for

NAME = "app"
SLOTS = ("blue", "green")
NGINX_DEFAULT_SITE = "/etc/nginx/sites-enabled/dropship.conf"     # the nginx role's, when no app is at the root
LOCATIONS = "/etc/nginx/dropship/locations"


@dataclass(frozen=True)
class AppLayout:
    """Where an app lives on a host (pure)."""

    app: str
    base_port: int = 8000
    prefix: str = ""          # the URL path it is served at ("" = a root)

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
    def unit_file(self) -> str:
        return f"/etc/systemd/system/{self.app}@.service"

    @property
    def upstream(self) -> str:
        return f"{self.app.replace('-', '_')}_app"

    @property
    def upstream_file(self) -> str:
        return f"/etc/nginx/dropship/{self.app}-upstream.conf"

    @property
    def site(self) -> str:
        return f"/etc/nginx/sites-available/{self.app}.conf"

    @property
    def site_enabled(self) -> str:
        return f"/etc/nginx/sites-enabled/{self.app}.conf"

    @property
    def location_file(self) -> str:
        return f"{LOCATIONS}/app-{self.app}.conf"

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

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

    @property
    def data(self) -> str:
        """The app's shared folders (``shared_dirs``), linked into each release."""
        return f"{self.root}/data"


def layout(app: AppSettings) -> AppLayout:
    return AppLayout(app.name, app.port, app.path)


def packages(ctx: RoleContext) -> list[str]:
    """What deploys use, and the apt packages the apps ask for (``packages:``)."""
    return list(dict.fromkeys(["python3-venv", "curl", "rsync", *(p for a in ctx.settings.apps for p in a.packages)]))


def site_config(ctx: RoleContext, app: AppSettings) -> bytes:
    """The app's nginx site: its upstream, plus the default server (root app) or a server of its own."""
    lay = layout(app)
    mode = "root" if app.is_root else ("server" if app.server_name else "path")
    names = app.server_name or ctx.settings.nginx.server_name
    return render("app/site.conf.j2", app=app.name, upstream=lay.upstream, upstream_file=lay.upstream_file,
                  mode=mode, server_name=names, locations=LOCATIONS, tls=include_for(ctx, names),
                  forwarded_proto=balancer.forwarded_proto(ctx.env, ctx.host, ctx.addresses),
                  read_timeout=app.request_timeout)


def workers(ctx: RoleContext, app: AppSettings) -> int:
    """The app's gunicorn workers: ``workers`` of the inventory, else derived from the host's size."""
    return app.workers or gunicorn_workers(ctx.facts.cpus, ctx.facts.memory_mb, len(ctx.settings.apps))


def app_resources(ctx: RoleContext, app: AppSettings) -> list[Resource]:
    lay = layout(app)
    out: list[Resource] = [
        User(lay.user, shell="/usr/sbin/nologin", home=lay.root, system=True, role=NAME),
        Directory(lay.root, role=NAME),
        Directory(lay.releases, role=NAME),
        Directory(f"{lay.root}/slots", role=NAME),
        Directory(f"{lay.root}/shared", role=NAME),
        Directory(lay.venvs, role=NAME),
    ]
    out += [File(f"{lay.slot(s)}.env", render("app/slot.env.j2", slot=s, port=lay.port(s), script_name=app.path),
                 role=NAME) for s in SLOTS]
    out += [
        File(lay.unit_file, render("app/unit.service.j2", app=app.name, user=lay.user, root=lay.root,
                                   workers=workers(ctx, app), timeout=app.request_timeout + 5, wsgi=systemd_word(app.wsgi),
                                   gunicorn_env=GUNICORN_ENV),
             role=NAME, notify=(DAEMON_RELOAD,)),
        File(lay.upstream_file, render("app/upstream.conf.j2", slot=SLOTS[0], port=lay.port(SLOTS[0])),
             role=NAME, replace=False),
        File(lay.site, site_config(ctx, app), role=NAME, notify=(RELOAD_NGINX,)),
        Symlink(lay.site_enabled, lay.site, role=NAME, notify=(RELOAD_NGINX,)),
    ]
    if app.path:
        proto = balancer.forwarded_proto(ctx.env, ctx.host, ctx.addresses)
        out.append(File(lay.location_file, render("app/location.conf.j2", path=app.path, upstream=lay.upstream,
                                                  forwarded_proto=proto, read_timeout=app.request_timeout),
                        role=NAME, notify=(RELOAD_NGINX,)))
    else:
        out.append(Absent(lay.location_file, role=NAME, notify=(RELOAD_NGINX,)))
    return out


def resources(ctx: RoleContext) -> list[Resource]:
    apps = ctx.settings.apps
    if not apps:
        return []
    out: list[Resource] = [UvTool(role=NAME)]     # builds the apps' virtualenvs (deploy)
    if any(a.is_root for a in apps):
        out.append(Absent(NGINX_DEFAULT_SITE, role=NAME, notify=(RELOAD_NGINX,)))   # an app's site is the default
    for app in apps:
        out += app_resources(ctx, app)
    return out


def serves_root(ctx: RoleContext) -> bool:
    """An app of this host is the default server (so the nginx role's own site stays off)."""
    return ctx.has(NAME) and any(a.is_root for a in ctx.settings.apps)


ROLE = Role(NAME, packages, resources)
