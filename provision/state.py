"""What the controller knows of an environment's droplets (``.dropship/state/<env>.json``).

Besides the droplet records, it lists droplets just created by a provider that gives no host
keys (DigitalOcean): their first SSH contact may pin the key offered, once.
"""
from __future__ import annotations

import json
import os
import tempfile

from .inventory import Environment
from .providers.base import Droplet


def _read(env: Environment) -> dict:
    try:
        return json.loads(env.workspace.droplets_path(env.name).read_text())
    except FileNotFoundError:
        return {}


def _write(env: Environment, data: dict) -> None:
    path = env.workspace.ensure_private_dir(env.workspace.droplets_path(env.name))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def load_droplets(env: Environment) -> dict[str, Droplet]:
    return {name: Droplet.from_dict(d) for name, d in _read(env).get("droplets", {}).items()}


def save_droplets(env: Environment, droplets: dict[str, Droplet], first_contact: set[str] | None = None) -> None:
    data = _read(env)
    data["droplets"] = {n: d.to_dict() for n, d in sorted(droplets.items())}
    pending = set(data.get("first_contact", [])) if first_contact is None else first_contact
    data["first_contact"] = sorted(pending & set(droplets))
    _write(env, data)


def first_contact(env: Environment) -> set[str]:
    return set(_read(env).get("first_contact", []))


def contacted(env: Environment, names: set[str]) -> None:
    """Host keys of ``names`` are pinned now: no more first contact for them."""
    data = _read(env)
    if set(data.get("first_contact", [])) & names:
        data["first_contact"] = sorted(set(data["first_contact"]) - names)
        _write(env, data)


def resizing(env: Environment) -> dict[str, str]:
    """Droplets whose resize began and did not end: name -> the size it goes to."""
    return dict(_read(env).get("resizing", {}))


def mark_resizing(env: Environment, name: str, size: str | None) -> None:
    """Record that ``name`` is being resized to ``size`` (None: it is done)."""
    data = _read(env)
    marks = data.get("resizing", {})
    if size is None:
        marks.pop(name, None)
    else:
        marks[name] = size
    data["resizing"] = marks
    _write(env, data)
