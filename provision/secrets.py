"""Secrets resolved from the environment or the git-ignored ``.secrets/<env>.yaml``.

Generated secrets (database passwords) are created once, kept in that file (mode 0600) and
registered with the redactor so they never reach output or logs.
"""
from __future__ import annotations

import base64
import os
import secrets as _random
import tempfile
from pathlib import Path

import yaml

from .errors import DropshipError
from .inventory import Environment, SecretRef
from .redact import Redactor


def fernet_key() -> str:
    """A key for cryptography's Fernet (Airflow's encryption of connections and variables)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def redactor_for(env: Environment) -> Redactor:
    """A redactor for everything a command on ``env`` prints: every secret the environment references
    that exists already (``{env: VAR}`` ones too) and every value of its secrets file, with their
    URL-quoted forms (see ``Redactor.add``). Never generates a secret.
    """
    redactor = Redactor()
    store = SecretStore(env, redactor)
    for ref in env.secret_refs():
        store.peek(ref)
    for value in store.stored():
        redactor.add(value)
    return redactor


class SecretStore:
    def __init__(self, env: Environment, redactor: Redactor):
        self.env = env
        self.redactor = redactor
        self.path: Path = env.workspace.secrets_path(env.name)
        self._file: dict | None = None

    def _load(self) -> dict:
        if self._file is None:
            try:
                data = yaml.safe_load(self.path.read_text()) or {}
            except FileNotFoundError:
                data = {}
            except yaml.YAMLError:
                raise DropshipError(f"{self.path}: not valid YAML",
                                    "fix it by hand: one 'name: value' per line") from None
            if not isinstance(data, dict):
                raise DropshipError(f"{self.path}: expected 'name: value' lines", "fix the file by hand")
            self._file = {str(k): str(v) for k, v in data.items()}
        return self._file

    def stored(self) -> list[str]:
        """Every value in the secrets file (also those of apps since removed from the inventory)."""
        return list(self._load().values())

    def peek(self, ref: SecretRef) -> str | None:
        """The value if it exists already; never generates."""
        value = os.environ.get(ref.name) if ref.kind == "env" else \
            os.environ.get(f"DROPSHIP_SECRET_{ref.name.upper()}") or self._load().get(ref.name)
        if value:
            self.redactor.add(value)
        return value

    def resolve(self, ref: SecretRef, generate: bool = True) -> str:
        """The secret's value, generating and storing ``{secret: name}`` ones on first use."""
        value = self.peek(ref)
        if value:
            return value
        if ref.kind == "env":
            raise DropshipError(f"{ref.where}: environment variable {ref.name} is not set",
                                f"export {ref.name}=...")
        if not generate:
            raise DropshipError(f"{ref.where}: secret '{ref.name}' is not in {self.path}",
                                f"add '{ref.name}: ...' to {self.path}")
        if ref.generate == "age":
            from .agekey import new_identity

            value = new_identity()
        else:
            value = fernet_key() if ref.generate == "fernet" else _random.token_urlsafe(24)
        self._store(ref.name, value)
        self.redactor.add(value)
        return value

    def _store(self, name: str, value: str) -> None:
        data = dict(self._load())
        data[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write("# Dropship secrets for this environment. Never commit this file.\n")
            yaml.safe_dump(data, fh, default_flow_style=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._file = data
