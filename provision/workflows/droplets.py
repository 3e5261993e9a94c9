"""Droplet lifecycle for an environment: create, list, resize, destroy, forget a host key."""
from __future__ import annotations

import os

from ..errors import DropshipError
from ..inventory import Environment, HostSpec
from ..keys import ensure_keypair
from ..providers.base import Droplet, Provider
from ..redact import Redactor
from ..secrets import SecretStore
from ..state import first_contact, load_droplets, save_droplets
from ..transport.hostkeys import KnownHosts, parse_key_line
from ..transport.pool import fan_out

DO_API_URL_VARIABLE = "DIGITALOCEAN_API_URL"   # points the DigitalOcean provider elsewhere (tests)


def provider_for(env: Environment, redactor: Redactor | None = None) -> Provider:
    if env.provider == "local":
        from ..providers.local import LocalProvider

        return LocalProvider(env.name, env.workspace, ca_certificates=list(env.ca_certificates))
    from ..providers.digitalocean import DigitalOceanProvider

    token = SecretStore(env, redactor or Redactor()).resolve(env.token)
    return DigitalOceanProvider(token, env.name, endpoint=os.environ.get(DO_API_URL_VARIABLE))


def _droplet_hosts(env: Environment, hosts: list[HostSpec]) -> list[HostSpec]:
    fixed = [h.name for h in hosts if h.droplet is None]
    if fixed and len(fixed) == len(hosts):
        raise DropshipError(f"{', '.join(fixed)}: fixed-address hosts are not managed by a provider",
                            "list them under 'droplets:' to let Dropship create them")
    return [h for h in hosts if h.droplet is not None]


# Droplets created at once, whatever the commands' parallelism: each one being created polls the
# provider's API every 2 s, and DigitalOcean allows 250 requests a minute.
CREATE_AT_ONCE = 8


def create(env: Environment, hosts: list[HostSpec], progress, parallel: int = CREATE_AT_ONCE) -> list[Droplet]:
    """Create the droplets (idempotent, at most CREATE_AT_ONCE at a time), pin host keys given by the
    provider, record them."""
    _, public = ensure_keypair(env)
    provider = provider_for(env)
    known = KnownHosts(env.workspace.known_hosts_path)

    def one(h: HostSpec) -> Droplet:
        progress.step(h.name, "creating", f"{h.droplet.size} in {h.droplet.region} from {h.droplet.image}")
        d = provider.create(h.droplet, public)
        if d.host_keys:
            known.pin(d.address, d.ssh_port, [parse_key_line(k) for k in d.host_keys])
        progress.step(h.name, "active", f"ssh {d.address}:{d.ssh_port}")
        return d

    state = load_droplets(env)
    results = fan_out(_droplet_hosts(env, hosts), one, min(parallel, CREATE_AT_ONCE))
    created = {h.name: d for h, d, exc in results if exc is None}
    for name, d in created.items():
        if not d.host_keys and (name not in state or state[name].id != d.id):
            known.forget(d.address, d.ssh_port)     # a new droplet: a key pinned at its address is stale
    state.update(created)
    # No host key from the provider: the first SSH contact may pin the key offered, once.
    unpinned = {n for n, d in created.items() if not d.host_keys and not known.lookup(d.address, d.ssh_port)}
    save_droplets(env, state, first_contact(env) | unpinned)
    errors = [(h, exc) for h, _, exc in results if exc is not None]
    for h, exc in errors:
        if not isinstance(exc, DropshipError):
            raise exc
        progress.step(h.name, "failed", str(exc))
    if errors:
        raise DropshipError(f"{len(errors)} of {len(results)} droplet(s) not created", "see the lines above")
    return [created[h.name] for h, _, _ in results]


def list_droplets(env: Environment) -> list[Droplet]:
    """The provider's view; refreshes the recorded addresses."""
    droplets = provider_for(env).list()
    state = load_droplets(env)
    for d in droplets:
        state[d.name] = d
    save_droplets(env, state)
    return droplets


def leftovers(env: Environment, droplets: list[Droplet]) -> list[str]:
    """The environment's droplets that its inventory no longer lists (pure)."""
    listed = {h.name for h in env.hosts}
    return [d.name for d in droplets if d.name not in listed]


def destroy_plan(env: Environment, names: tuple[str, ...] | None, left: list[str]) -> list[str]:
    """The droplets ``droplet.destroy`` removes (pure): ``names`` (a host of the inventory, or one of
    the droplets ``left`` over that it no longer lists), else every droplet of the inventory and those."""
    hosts = {h.name: h for h in env.hosts}
    if not names:
        return [h.name for h in _droplet_hosts(env, list(env.hosts))] + left
    unknown = [n for n in names if n not in hosts and n not in left]
    if unknown:
        raise DropshipError(f"unknown host(s) {', '.join(unknown)} in environment {env.name}",
                            f"use one of: {', '.join(sorted([*hosts, *left]))}")
    chosen = [hosts[n] for n in names if n in hosts]
    return ([h.name for h in _droplet_hosts(env, chosen)] if chosen else []) + [n for n in names if n in left]


def served_by_lb(env: Environment, names: list[str]) -> None:
    """Refuse to destroy web hosts the environment's lb still sends requests to (their requests
    would fail): removing them from the inventory and provisioning drains them first."""
    from .. import balancer
    from .on_hosts import read_hosts

    lb = balancer.lb_host(env)
    state = load_droplets(env)
    addresses = {n: state[n].private_address for n in names if n in state and state[n].private_address}
    if lb is None or lb.name in names or not addresses:
        return
    upstream = read_hosts(env, [lb], lambda h: f"cat {balancer.UPSTREAM_FILE} 2>/dev/null; true",
                          lambda out, now: {"text": out}, "read the upstream")[lb.name]
    if "error" in upstream:
        raise DropshipError(f"{upstream['error'].split(' (fix: ')[0]}; destroyed nothing",
                            f"start {lb.name} (its upstream tells whether they still serve), or destroy it too")
    still = [n for n, a in addresses.items() if a in balancer.serving(upstream["text"])]
    if still:
        them = ", ".join(still)
        raise DropshipError(f"{them} still in {lb.name}'s upstream: destroying would fail the requests sent "
                            "there; destroyed nothing",
                            f"remove {them} from the inventory and run `invoke provision --env {env.name}`, "
                            f"which drains {'them' if len(still) > 1 else 'it'} from {lb.name}, then destroy")


def destroy(env: Environment, names: list[str], progress) -> None:
    provider = provider_for(env)
    known = KnownHosts(env.workspace.known_hosts_path)
    state = load_droplets(env)
    for name in names:
        provider.destroy(name)
        if name in state:
            known.forget(state[name].address, state[name].ssh_port)
            del state[name]
        progress.step(name, "destroyed", "")
    save_droplets(env, state)


def resize(env: Environment, hosts: list[HostSpec], size: str, progress) -> list[Droplet]:
    from ..providers.sizes import parse_size

    try:
        parse_size(size)
    except ValueError as exc:
        raise DropshipError(str(exc), "use a slug like 's-2vcpu-4gb'") from None
    provider = provider_for(env)
    state = load_droplets(env)
    out = []
    for h in _droplet_hosts(env, hosts):
        progress.step(h.name, "resizing", f"to {size}")
        d = provider.resize(h.name, size)
        state[h.name] = d
        out.append(d)
        progress.step(h.name, "resized", f"{d.vcpus} vCPU, {d.memory_mb} MB")
    save_droplets(env, state)
    return out


def forget_key(env: Environment, host: str) -> None:
    state = load_droplets(env)
    spec = env.host(host)
    if spec.address:
        address, port = spec.address, spec.port or env.ssh.port
    elif host in state:
        address, port = state[host].address, state[host].ssh_port
    else:
        raise DropshipError(f"{host}: no address known", f"run `invoke droplet.list --env {env.name}`")
    KnownHosts(env.workspace.known_hosts_path).forget(address, port)
