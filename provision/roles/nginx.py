"""nginx: default site removed, Dropship's site from templates, `nginx -t` before every reload."""
from __future__ import annotations

from .. import balancer
from ..engine.files import Absent, Directory, File, Symlink
from ..engine.model import Resource
from ..engine.system import Service
from ..templates import render
from . import Role, RoleContext
from .app import serves_root
from . import tls
from .handlers import NGINX_TEST, RELOAD_NGINX

NAME = "nginx"
TEST = NGINX_TEST
WEB_ROOT = "/var/www/dropship"
LOCATIONS = "/etc/nginx/dropship/locations"


def packages(ctx: RoleContext) -> list[str]:
    return ["nginx"] + tls.packages(ctx)


def resources(ctx: RoleContext) -> list[Resource]:
    handler = RELOAD_NGINX
    site = "/etc/nginx/sites-available/dropship.conf"
    common = [
        Absent("/etc/nginx/sites-enabled/default", role=NAME, notify=(handler,)),
        Directory("/etc/nginx/dropship", role=NAME),
        Directory(LOCATIONS, role=NAME),          # other roles drop `location` blocks here (airflow)
        File("/etc/nginx/conf.d/00-dropship.conf", render(
            "nginx/00-dropship.conf.j2", client_max_body_size=ctx.settings.nginx.client_max_body_size,
            lb_address=balancer.lb_address_for(ctx.env, ctx.host, ctx.addresses)),
             role=NAME, check=TEST, notify=(handler,)),
        Service("nginx", role=NAME),
    ]
    https = tls.resources(ctx)    # before any site includes its snippet; the certificates come after the reload
    if serves_root(ctx) or ctx.has("lb"):
        return common + https     # an app's site (or the load balancer's) is the default server
    return common[:-1] + https + [
        Directory(WEB_ROOT, role=NAME),
        File(f"{WEB_ROOT}/index.html", render("nginx/index.html.j2", host=ctx.host.name, env=ctx.env.name),
             role=NAME),
        File(site, render("nginx/site.conf.j2", server_name=ctx.settings.nginx.server_name, root=WEB_ROOT,
                          tls=tls.include_for(ctx, ctx.settings.nginx.server_name)),
             role=NAME, notify=(handler,)),
        Symlink("/etc/nginx/sites-enabled/dropship.conf", site, role=NAME, notify=(handler,)),
        common[-1],
    ]


ROLE = Role(NAME, packages, resources)
