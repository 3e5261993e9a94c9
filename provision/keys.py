"""The controller's SSH key pair for an environment (generated once, git-ignored)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DropshipError
from .inventory import Environment


def key_path(env: Environment) -> Path:
    return env.ssh.key or env.workspace.key_path(env.name)


def public_key(env: Environment) -> str:
    """The public half (``ssh-ed25519 AAAA... comment``) of the environment's key."""
    path = key_path(env)
    pub = path.with_name(path.name + ".pub")
    if pub.exists():
        return pub.read_text().strip()
    if not path.exists():
        raise DropshipError(f"SSH key {path} does not exist",
                            "run `invoke droplet.create` to generate it, or set ssh.key in the inventory")
    import paramiko

    try:
        key = paramiko.PKey.from_path(str(path))
    except (paramiko.SSHException, OSError) as exc:
        raise DropshipError(f"cannot read SSH key {path}: {exc}", "point ssh.key at an unencrypted private key") \
            from None
    return f"{key.get_name()} {key.get_base64()}"


def ensure_keypair(env: Environment) -> tuple[Path, str]:
    """Generate an ed25519 key pair for the environment unless it has one; return (path, public)."""
    path = key_path(env)
    if not path.exists():
        if env.ssh.key is not None:
            raise DropshipError(f"ssh.key {path} does not exist", "create it or remove ssh.key to let Dropship "
                                "generate one")
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        env.workspace.ensure_private_dir(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        path.with_name(path.name + ".pub").write_text(f"{public.decode()} dropship-{env.name}\n")
    return path, public_key(env)
