"""The load balancer: an nginx site proxying to the web hosts over the private network.

The upstream file is the deploys' (they drain and add web hosts); provisioning writes it only
when absent: the web hosts that already serve a live release, else a 503 placeholder.
"""
from __future__ import annotations

from .. import balancer
from ..engine.files import Absent, File, Symlink
from ..engine.model import Resource
from ..inventory import AppSettings
from ..templates import render
from . import Role, RoleContext, tls
from .app import NGINX_DEFAULT_SITE
from .handlers import NGINX_TEST, RELOAD_NGINX

NAME = "lb"


def packages(ctx: RoleContext) -> list[str]:
    return ["nginx", "curl"]


def site_config(ctx: RoleContext) -> bytes:
    """The lb's site: a server block per entry of ``balancer.site_servers``, each including the tls
    role's snippet of its server when HTTPS is on for it (the certificates are the lb's)."""
    servers = [{"names": names, "tls": tls.include_for(ctx, owner)} for names, owner in balancer.site_servers(ctx.env)]
    timeout = max((a.request_timeout for a in ctx.settings.apps), default=AppSettings.request_timeout)
    return render("lb/site.conf.j2", upstream=balancer.UPSTREAM, upstream_file=balancer.UPSTREAM_FILE,
                  placeholder=balancer.PLACEHOLDER, servers=servers, read_timeout=timeout)


def resources(ctx: RoleContext) -> list[Resource]:
    live = balancer.backends(list(ctx.live_web), ctx.addresses)
    return [
        Absent(NGINX_DEFAULT_SITE, role=NAME, notify=(RELOAD_NGINX,)),     # the lb's site is the default
        File(balancer.UPSTREAM_FILE, balancer.upstream_file(live), role=NAME, replace=False),
        File(balancer.SITE, site_config(ctx), role=NAME, check=NGINX_TEST, notify=(RELOAD_NGINX,)),
        Symlink(balancer.SITE_ENABLED, balancer.SITE, role=NAME, notify=(RELOAD_NGINX,)),
    ]


ROLE = Role(NAME, packages, resources)
