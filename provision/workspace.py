"""Where Dropship keeps per-checkout state: SSH keys, pinned host keys, droplet records, secrets.

Everything lives beside the inventory file, in git-ignored folders:
``.dropship/`` (keys, known_hosts, state) and ``.secrets/`` (one YAML file per environment).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def beside(cls, inventory_path: str | os.PathLike) -> "Workspace":
        return cls(Path(inventory_path).resolve().parent)

    @property
    def state_dir(self) -> Path:
        return self.root / ".dropship"

    def key_path(self, env: str) -> Path:
        return self.state_dir / "keys" / f"{env}_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    def droplets_path(self, env: str) -> Path:
        return self.state_dir / "state" / f"{env}.json"

    def secrets_path(self, env: str) -> Path:
        return self.root / ".secrets" / f"{env}.yaml"

    def ensure_private_dir(self, path: Path) -> Path:
        """Create ``path``'s parent folders with mode 0700 and return ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
