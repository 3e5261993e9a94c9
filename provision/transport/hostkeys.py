"""Pinned host keys in OpenSSH ``known_hosts`` format (``.dropship/known_hosts``).

The file is usable by plain ``ssh -o UserKnownHostsFile=.dropship/known_hosts`` too.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import paramiko


def host_id(address: str, port: int) -> str:
    """The name OpenSSH and paramiko file a host's key under."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_key_line(line: str) -> paramiko.PKey:
    """``ssh-ed25519 AAAA... [comment]`` -> PKey."""
    keytype, b64 = line.split()[:2]
    return paramiko.PKey.from_type_string(keytype, base64.b64decode(b64))


class KnownHosts:
    """Read and update the pinned keys; writes are atomic and serialized across threads/processes."""

    _lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            keys.load(str(self.path))
        return keys

    def lookup(self, address: str, port: int) -> dict[str, paramiko.PKey]:
        return dict(self._read().lookup(host_id(address, port)) or {})

    def pin(self, address: str, port: int, keys: list[paramiko.PKey]) -> None:
        """Replace whatever was pinned for ``address:port`` with ``keys``."""
        name = host_id(address, port)
        with self._locked() as hk:
            _drop(hk, name)
            for key in keys:
                hk.add(name, key.get_name(), key)

    def forget(self, address: str, port: int) -> None:
        with self._locked() as hk:
            _drop(hk, host_id(address, port))

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock, open(self.path.with_suffix(".lock"), "w") as lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX)
            hk = self._read()
            yield hk
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".known_hosts-")
            os.close(fd)
            hk.save(tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)


def _drop(hk: paramiko.HostKeys, name: str) -> None:
    """Remove every key of ``name`` (``del``/``pop`` on HostKeys removes only its first line)."""
    while name in hk:
        del hk[name]
