"""Which hosts and apps a command works on, and how to reach each host (pure apart from reading state)."""
from __future__ import annotations

from .errors import DropshipError
from .inventory import AppSettings, Environment, HostSpec
from .keys import key_path
from .state import first_contact, load_droplets
from .transport.ssh import Target


def select(env: Environment, names: tuple[str, ...] | None) -> list[HostSpec]:
    """The environment's hosts, or only ``names`` (unknown names are an error)."""
    if not names:
        return list(env.hosts)
    known = {h.name for h in env.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DropshipError(f"unknown host(s) {', '.join(unknown)} in environment {env.name}",
                            f"use one of: {', '.join(sorted(known))}")
    return [h for h in env.hosts if h.name in names]


def apps(env: Environment, name: str | None) -> tuple[AppSettings, ...]:
    """Every app of the environment, or the one called ``name`` (``--app``; an unknown name is an error)."""
    names = [a.name for a in env.settings.apps]
    if name is not None and name not in names:
        raise DropshipError(f"unknown app {name!r} in environment {env.name}",
                            f"use --app with one of: {', '.join(names) or 'none (no apps: in the inventory)'}")
    return tuple(a for a in env.settings.apps if name in (None, a.name))


def targets(env: Environment, hosts: list[HostSpec], accept_new_keys: bool = False) -> list[Target]:
    droplets = load_droplets(env)
    new = first_contact(env)
    out = []
    for h in hosts:
        if h.address:
            address, port = h.address, h.port or env.ssh.port
        elif h.name in droplets:
            address, port = droplets[h.name].address, droplets[h.name].ssh_port
        else:
            raise DropshipError(f"{h.name}: no droplet yet in environment {env.name}",
                                f"run `invoke droplet.create --env {env.name}`")
        out.append(Target(name=h.name, address=address, port=port,
                          users=tuple(dict.fromkeys((env.ssh.user, env.ssh.bootstrap_user))),
                          key_path=key_path(env), connect_timeout=env.ssh.connect_timeout,
                          accept_new_key=accept_new_keys or h.name in new))
    return out


def private_addresses(env: Environment) -> dict[str, str]:
    """Each host's address on the private network: a fixed host's from the inventory, a droplet's as
    the provider reported it (recorded by droplet.create / droplet.list)."""
    droplets = load_droplets(env)
    found = {h.name: h.private_address or (droplets[h.name].private_address if h.name in droplets else "")
             for h in env.hosts}
    return {name: address for name, address in found.items() if address}
