"""HTTPS of a host's servers (part of the nginx role): which servers have a certificate, the
snippet their server block includes, the certificates (ACME or given as secrets) and renewal."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.certs import Certificate, Placeholder, RetiredCertificates
from ..engine.files import Absent, Directory, File
from ..engine.model import Resource
from ..engine.system import Service
from .. import balancer
from ..inventory import Environment, HostSpec, ServerTls
from ..templates import render
from . import RoleContext
from .handlers import DAEMON_RELOAD, NGINX_TEST, RELOAD_NGINX, retire_timer

NAME = "nginx"
TLS_DIR = "/etc/dropship/tls"
WEBROOT = "/var/www/dropship-acme"
SNIPPETS = "/etc/nginx/dropship"
ACME_CA = "/etc/dropship/acme-ca.pem"
RENEW_UNIT = "dropship-certbot-renew"
HOOK = "/etc/dropship/certbot-deploy-hook"


@dataclass(frozen=True)
class TlsServer:
    """One nginx server with HTTPS: its names and where its certificate lives on the host (pure)."""

    names: str                 # nginx server_name
    tls: ServerTls
    default: bool = False      # the default server (no server name of its own)

    @property
    def cert_name(self) -> str:
        return self.names.split()[0]

    @property
    def folder(self) -> str:
        return f"{TLS_DIR}/{self.cert_name}"

    @property
    def snippet(self) -> str:
        return f"{SNIPPETS}/tls-{self.cert_name}.conf"


def terminates_web(env: Environment, host: HostSpec) -> bool:
    """Whether ``host`` holds the certificates of the default server and the apps' own servers: the
    lb host when the environment has one (the web hosts behind it stay plain HTTP), else each host
    serving them (pure)."""
    lb = balancer.lb_host(env)
    return lb is None or lb.name == host.name


def servers(ctx: RoleContext) -> list[TlsServer]:
    """The host's servers whose ``tls`` is on: the default server, apps' and Airflow's own; with an
    lb host, the default server's and the apps' are the lb's."""
    s = ctx.settings
    web = terminates_web(ctx.env, ctx.host)
    out = [TlsServer(s.nginx.server_name, s.nginx.tls, default=True)] if web and ctx.has("nginx") and s.nginx.tls.on \
        else []
    if web and (ctx.has("app") or ctx.has("lb")):
        out += [TlsServer(a.server_name, a.tls) for a in s.apps if a.server_name and a.tls.on]
    if ctx.has("airflow") and s.airflow and s.airflow.server_name and s.airflow.tls.on:
        out.append(TlsServer(s.airflow.server_name, s.airflow.tls))
    return out


def include_for(ctx: RoleContext, names: str) -> str:
    """The snippet a server block of ``names`` includes ("" when it has no HTTPS)."""
    return next((t.snippet for t in servers(ctx) if t.names == names), "")


def scheme_of(ctx: RoleContext, names: str) -> str:
    return "https" if include_for(ctx, names) else "http"


def packages(ctx: RoleContext) -> list[str]:
    found = servers(ctx)
    return (["openssl"] if found else []) + (["certbot"] if any(t.tls.mode == "letsencrypt" for t in found) else [])


STOP_RENEWALS = retire_timer(f"{RENEW_UNIT}.timer")


def retired(keep: list[TlsServer]) -> list[Resource]:
    """What a host keeps of HTTPS it no longer serves: no renewal timer without an ACME certificate,
    no certificate but those of ``keep``."""
    custom = tuple(t.cert_name for t in keep if t.tls.mode == "custom")
    out: list[Resource] = [RetiredCertificates(TLS_DIR, SNIPPETS, tuple(t.cert_name for t in keep), role=NAME,
                                               custom=custom)]
    if not any(t.tls.mode == "letsencrypt" for t in keep):
        out += [Absent(f"/etc/systemd/system/{RENEW_UNIT}.timer", role=NAME, notify=(STOP_RENEWALS,)),
                Absent(f"/etc/systemd/system/{RENEW_UNIT}.service", role=NAME, notify=(DAEMON_RELOAD,)),
                Absent(HOOK, role=NAME)]
    return out


def resources(ctx: RoleContext) -> list[Resource]:
    found = servers(ctx)
    if not found:
        return retired(found)
    acme = ctx.settings.tls
    ca_bundle = ACME_CA if acme.acme_ca else ""
    out: list[Resource] = [Directory(TLS_DIR, mode=0o755, role=NAME), Directory(WEBROOT, role=NAME)]
    if ca_bundle:
        out.append(File(ACME_CA, acme.acme_ca.read_bytes(), role=NAME))
    for t in found:
        out.append(Directory(t.folder, mode=0o711, role=NAME))    # nginx's workers check its ``live`` mark
        if t.tls.mode == "custom":
            out += [File(f"{t.folder}/fullchain.pem", ctx.secrets[t.tls.certificate.name].encode(), mode=0o600,
                         secret=True, role=NAME, notify=(RELOAD_NGINX,)),
                    File(f"{t.folder}/privkey.pem", ctx.secrets[t.tls.key.name].encode(), mode=0o600,
                         secret=True, role=NAME, notify=(RELOAD_NGINX,)),
                    File(f"{t.folder}/live", b"", role=NAME)]
        else:
            out.append(Placeholder(t.folder, t.cert_name, role=NAME))
        out.append(File(t.snippet, render("tls/server.conf.j2", names=t.names, folder=t.folder, webroot=WEBROOT,
                                          default=t.default), role=NAME, check=NGINX_TEST, notify=(RELOAD_NGINX,)))
    issued = [t for t in found if t.tls.mode == "letsencrypt"]
    if issued:
        timer, service = f"/etc/systemd/system/{RENEW_UNIT}.timer", f"/etc/systemd/system/{RENEW_UNIT}.service"
        out += [File(HOOK, render("tls/reload-nginx.sh.j2"), mode=0o755, role=NAME),
                File(service, render("tls/renew.service.j2", ca_bundle=ca_bundle, hook=HOOK), role=NAME,
                     notify=(DAEMON_RELOAD,)),
                File(timer, render("tls/renew.timer.j2"), role=NAME, notify=(DAEMON_RELOAD,)),
                Service(f"{RENEW_UNIT}.timer", role=NAME, phase=4),
                Service("certbot.timer", role=NAME, phase=4, enabled=False)]    # the package's own: ours reports
        out += [Certificate(t.cert_name, tuple(t.names.split()), t.folder, WEBROOT, acme.acme_server, acme.email,
                            ca_bundle, role=NAME) for t in issued]
    return out + retired(found)
