"""The load balancer (pure): the lb host, the web hosts behind it, the upstream file a deploy owns,
the batches a rolling deploy takes, and the commands that rewrite the upstream and gate a web host
through its private address from the lb.

The upstream names each web host by its private address on port 80 (its own nginx, blue/green
slots unchanged); a host being switched is marked ``down``; with no web host serving yet, a local
placeholder server answers 503.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import DropshipError
from .inventory import AppSettings, Environment, HostSpec
from .placement import checked_ipv4
from .release import health_command, nginx_swap_command

UPSTREAM = "dropship_web"
UPSTREAM_FILE = "/etc/nginx/dropship/lb-upstream.conf"
SITE = "/etc/nginx/sites-available/dropship-lb.conf"
SITE_ENABLED = "/etc/nginx/sites-enabled/dropship-lb.conf"
PLACEHOLDER = "127.0.0.1:8099"          # the lb site's own 503 server, while no web host serves
WEB_PORT = 80
FORWARDED_PROTO = "$dropship_forwarded_proto"   # the nginx role's map: the lb's X-Forwarded-Proto, from the lb
_SERVER = re.compile(r"^\s*server\s+(\d{1,3}(?:\.\d{1,3}){3}):80\b")


@dataclass(frozen=True)
class Backend:
    """A web host in the lb's upstream; ``down`` while a deploy switches it."""

    host: str
    address: str
    down: bool = False


def lb_host(env: Environment) -> HostSpec | None:
    """The host with the lb role (the inventory allows at most one)."""
    return next((h for h in env.hosts if "lb" in h.roles), None)


def web_hosts(env: Environment) -> list[HostSpec]:
    """The hosts behind the load balancer: those with the app role, in inventory order."""
    return [h for h in env.hosts if "app" in h.roles]


def site_servers(env: Environment) -> list[tuple[str, str]]:
    """The lb site's server blocks, the default one first, each as (its names, the server names whose
    HTTPS it serves): the default server's names with every app's own, except an app's server while
    HTTPS is on for it or for the default server (a certificate and a redirect each): a block of its own."""
    s = env.settings
    own = [a.server_name for a in s.apps if a.server_name and (a.tls.on or s.nginx.tls.on)]
    names = s.nginx.server_name.split()
    for app in s.apps:
        names += (app.server_name or "").split() if app.server_name not in own else []
    return [(" ".join(dict.fromkeys(names)), s.nginx.server_name)] + [(n, n) for n in dict.fromkeys(own)]


def upstream_file(backends: list[Backend]) -> bytes:
    """The upstream's servers: each web host (``down`` while switched), or the 503 placeholder."""
    lines = ["# Managed by Dropship deploys: the web hosts behind the load balancer."]
    if not backends:
        lines.append(f"server {PLACEHOLDER};   # no web host serves yet")
    for b in backends:
        lines.append(f"server {checked_ipv4(b.address, b.host)}:{WEB_PORT} max_fails=1 fail_timeout=5s"
                     f"{' down' if b.down else ''};   # {b.host}")
    return ("\n".join(lines) + "\n").encode()


def backends(members: list[str], addresses: dict[str, str], down: tuple[str, ...] = ()) -> list[Backend]:
    """``members`` (host names) as upstream servers, those in ``down`` marked down."""
    return [Backend(h, addresses[h], h in down) for h in members]


def listed(text: str) -> set[str]:
    """The web hosts' addresses the upstream file ``text`` lists (down or not)."""
    return {s["address"] for s in servers(text)}


def servers(text: str) -> list[dict]:
    """The web hosts the upstream file ``text`` lists, in its order: ``host`` (its comment),
    ``address`` and whether requests go there (``serving``: not marked ``down``)."""
    return [{"host": line.partition("#")[2].strip(), "address": m.group(1),
             "serving": " down" not in line.partition("#")[0]}
            for line in text.splitlines() if (m := _SERVER.match(line))]


def serving(text: str) -> set[str]:
    """The addresses the upstream file ``text`` sends requests to (listed and not ``down``)."""
    return {s["address"] for s in servers(text) if s["serving"]}


def members(text: str, hosts: list[str], addresses: dict[str, str]) -> list[str]:
    """Which of ``hosts`` the upstream file ``text`` lists, in the order of ``hosts``; a server whose
    host left the inventory is not among them (the next rewrite drains it)."""
    found = listed(text)
    return [h for h in hosts if addresses.get(h) in found]


def batches(hosts: list[str], size: str) -> list[list[str]]:
    """``hosts`` in batches of ``size``: a count ("2") or a share of them ("50%", rounded up); at least 1."""
    if not hosts:
        return []
    n = math.ceil(len(hosts) * int(size[:-1]) / 100) if size.endswith("%") else int(size)
    n = max(1, min(n, len(hosts)))
    return [hosts[i:i + n] for i in range(0, len(hosts), n)]


def drainable(members: list[str], batch: list[str]) -> tuple[str, ...]:
    """The hosts of ``batch`` to mark down: those in the upstream, unless no other server would be left
    (then each host's own blue/green switch keeps it serving)."""
    drain = tuple(h for h in batch if h in members)
    return drain if len(drain) < len(members) else ()


def upstream_command(servers: list[Backend], what: str) -> str:
    """Rewrite the lb's upstream (``what``: drain, undrain...), `nginx -t`, graceful reload."""
    return nginx_swap_command(UPSTREAM_FILE, upstream_file(servers), what)


def app_host_header(env: Environment, app: AppSettings) -> str:
    """The Host the lb sends for ``app``: its first server name, else the default server's ("" for ``_``)."""
    names = (app.server_name or env.settings.nginx.server_name).split()
    return "" if names[0] == "_" else names[0]


def gate_command(env: Environment, app: AppSettings, host: str, address: str) -> str:
    """From the lb: ``app``'s health path through the web host's nginx at its private address."""
    h = app.health
    url = f"http://{checked_ipv4(address, host)}{app.path}{h.path}"
    return health_command(url, h.expect_status, h.expect_text, h.timeout, host=app_host_header(env, app))


def require_addresses(env: Environment, addresses: dict[str, str]) -> None:
    """With an lb host, every web host's private address (and the lb's) must be known and IPv4."""
    lb = lb_host(env)
    for h in ([lb] + web_hosts(env)) if lb else []:
        if not addresses.get(h.name):
            raise DropshipError(f"{h.name}: its private address is not known (the load balancer reaches the web "
                                "hosts over the private network)",
                                f"run `invoke droplet.list --env {env.name}` to record the droplets' addresses, "
                                "or set private_address on a fixed host")
        checked_ipv4(addresses[h.name], h.name)


def lb_address_for(env: Environment, host: HostSpec, addresses: dict[str, str]) -> str:
    """The lb's private address when ``host`` is a web host behind it ("" otherwise, or while unknown)."""
    lb = lb_host(env)
    if lb is None or "app" not in host.roles or not addresses.get(lb.name):
        return ""
    return checked_ipv4(addresses[lb.name], lb.name)


def forwarded_proto(env: Environment, host: HostSpec, addresses: dict[str, str]) -> str:
    """The X-Forwarded-Proto a web host's nginx passes to its apps: behind the lb, the scheme the lb's
    clients used (the nginx role's map, trusting the header from the lb's address alone)."""
    return FORWARDED_PROTO if lb_address_for(env, host, addresses) else "$scheme"


def firewall_rules(env: Environment, host: HostSpec, addresses: dict[str, str]) -> tuple[str, ...]:
    """ufw on a web host: port 80 from the lb's private address."""
    address = lb_address_for(env, host, addresses)
    return (f"{WEB_PORT}/tcp from {address}",) if address else ()
