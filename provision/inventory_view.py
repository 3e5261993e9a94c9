"""The resolved environment as text for `invoke inventory.check` (secrets masked, pure)."""
from __future__ import annotations

import os

from .inventory import Environment, SecretRef
from .secrets import SecretStore
from .redact import Redactor


def _secret_state(env: Environment, ref: SecretRef) -> str:
    value = SecretStore(env, Redactor()).peek(ref)
    if ref.kind == "env":
        return f"${ref.name} ({'set' if value else 'NOT SET'})"
    return f"secret '{ref.name}' ({'stored' if value else 'generated on first provision'})"


def describe(env: Environment) -> str:
    s = env.settings
    lines = [f"environment {env.name}: provider {env.provider}"]
    if env.token:
        lines.append(f"  token: {_secret_state(env, env.token)}")
    lines.append(f"  ssh: user {env.ssh.user} (bootstrap {env.ssh.bootstrap_user}), key "
                 f"{os.path.relpath(env.ssh.key or env.workspace.key_path(env.name))}")
    for h in env.hosts:
        where = (f"droplet {h.droplet.size} {h.droplet.region} {h.droplet.image}"
                 + (f" tags {','.join(h.droplet.tags)}" if h.droplet.tags else "")) if h.droplet \
            else f"fixed {h.address}:{h.port or env.ssh.port}"
        lines.append(f"  host {h.name}: {where}; roles {', '.join(h.roles)}")
    lines.append(f"  timezone {s.timezone}; swap {'auto' if s.swap_mb is None else (s.swap_mb or 'off')}; "
                 f"firewall allows {', '.join(s.firewall_allow)}")
    lines.append(f"  docker: {s.docker.source}, logs {s.docker.log_max_size} x {s.docker.log_max_file}")
    bridge = f" + {s.postgres.docker_bridge_address}" if s.postgres.listen_docker_bridge else ""
    lines.append(f"  postgres: localhost{bridge} + the host's private address (its clients on other hosts only)")
    web = [h.name for h in env.hosts if "app" in h.roles]
    for app in s.apps:
        where = f"server {app.server_name}" if app.server_name else f"path {app.path or '/'} of the default server"
        db = app.database
        data = f"database {db.name} user {db.user} password {_secret_state(env, db.password)}" if db else "no database"
        apt = f"; apt packages {' '.join(app.packages)}" if app.packages else ""
        kept = f"; shared dirs {', '.join(app.shared_dirs)} (in /srv/{app.name}/data" + (
            f"; each of {', '.join(web)} keeps its own copy, backed up only on a host that also runs postgres)"
            if len(web) > 1 else ")") if app.shared_dirs else ""
        lines.append(f"  app {app.name}: {where}; slots on ports {app.port + 1}-{app.port + 2}; health "
                     f"{app.health.path}; {data}{apt}{kept}")
    if env.ca_certificates:
        lines.append(f"  CA certificates: {', '.join(str(p) for p in env.ca_certificates)}")
    return "\n".join(lines)


def size_line(env: Environment, host: str) -> str:
    """``inventory.yaml:12: environments.production.droplets[0].size``: where a droplet's size is set."""
    from . import yamlsource
    from .errors import InventoryError

    path = env.inventory_path
    where = f"environments.{env.name}.droplets[].size of {host}"
    try:
        envs = yamlsource.load(path.read_text(encoding="utf-8"), path)["environments"]
        for i, d in enumerate(envs[env.name]["droplets"]):
            if isinstance(d, dict) and d.get("name") == host:
                line = d.line_of("size") if "size" in d else d.line
                return f"{path}:{line}: environments.{env.name}.droplets[{i}].size"
    except (OSError, InventoryError, KeyError, TypeError, AttributeError):
        pass
    return f"{path}: {where}"
