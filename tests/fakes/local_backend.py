"""A backend for the fake DigitalOcean API whose droplets are real local droplets.

Each droplet the fake API creates becomes a systemd container with sshd (LocalProvider) whose
ports 22/80/443 are published at the same numbers on a loopback address of its own
(127.0.0.2 .. 127.0.0.254): that address is the droplet's "public IPv4", so SSH reaches it on
port 22 exactly as on DigitalOcean::

    backend = LocalDropletBackend(run_name(), Workspace(tmp_path))
    with fake_do_api(token="t", backend=backend) as api:
        ...
    backend.destroy_all()

The requested image is ignored: every droplet boots the local Debian 13 base image, or the image
given as ``boot_image`` (a test not about a first provision passes the warm one). The
environment name (use ``tests.support.run_name()``) makes container names unique per run and
lets ``reap_dead_runs`` remove the leftovers of a killed run.
"""
from __future__ import annotations

import errno
import glob
import random
import socket
import threading
from pathlib import Path

from provision.errors import ProviderError
from provision.inventory import DEFAULT_LOCAL_CA_GLOB
from provision.providers.base import DropletSpec
from provision.providers.docker_engine import docker, ensure_engine
from provision.providers.local import (
    BASE_IMAGE_NAME, GUEST_PORTS, LABEL, LocalProvider, container_name, reap,
)
from provision.workspace import Workspace

BACKEND_LABEL = f"{LABEL}.test.do-backend"
ADDRESS_ATTEMPTS = 5


def loopback_candidates() -> list[str]:
    """127.0.0.2 .. 127.0.0.254 in random order (concurrent runs rarely collide)."""
    hosts = list(range(2, 255))
    random.shuffle(hosts)
    return [f"127.0.0.{n}" for n in hosts]


def port_free(address: str, port: int) -> bool:
    """Nothing listens on ``address:port`` (a bind probe; a connect probe without privileges)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT leftovers don't count
        try:
            s.bind((address, port))
            return True
        except PermissionError:
            pass
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((address, port)) != 0


def bound_addresses() -> set[str]:
    """Addresses local droplets (running or stopped, any run) publish their ports on."""
    out = docker("ps", "-a", "--filter", f"label={LABEL}.bind", "--format",
                 f'{{{{.Label "{LABEL}.bind"}}}}', check=False)
    return set(out.stdout.split())


class LocalDropletBackend:
    """The fake API's Backend protocol on real local droplets, one LocalProvider per droplet."""

    def __init__(self, env: str, workspace: Workspace | Path,
                 ca_certificates: list[Path] | None = None, boot_image: str = BASE_IMAGE_NAME):
        self.env, self.boot_image = env, boot_image
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        # Like a local droplet, trust the controller's extra CAs (an egress proxy may need them).
        self.ca_certificates = [Path(p) for p in sorted(glob.glob(DEFAULT_LOCAL_CA_GLOB, recursive=True))] \
            if ca_certificates is None else list(ca_certificates)
        self.providers: dict[str, LocalProvider] = {}
        self.created: list[str] = []          # every droplet name ever created, for the tests
        self._lock = threading.RLock()

    # -- the Backend protocol

    def create(self, name: str, size: str, *, image: str, region: str, public_keys: list[str]) -> str:
        """Boot a local droplet on a loopback address of its own; return that address."""
        if not public_keys:
            raise ValueError(f"{name}: a local droplet needs at least one SSH key (root has no password)")
        spec = DropletSpec(name=name, size=size, region=region, image=self.boot_image)
        with self._lock:
            if name in self.providers:
                raise ValueError(f"{name}: already created by this backend")
            ensure_engine()
            taken = bound_addresses()
            tried = 0
            for address in loopback_candidates():
                if address in taken or not all(port_free(address, p) for p in GUEST_PORTS):
                    continue
                provider = self._provider(address)
                try:
                    droplet = provider.create(spec, public_keys[0])
                except ProviderError as e:
                    provider.destroy(name)
                    tried += 1
                    if "address already in use" in str(e) or "already allocated" in str(e):
                        if tried < ADDRESS_ATTEMPTS:
                            continue     # someone took it meanwhile: next address
                    raise
                for key in public_keys[1:]:
                    provider._authorize(name, key)
                self.providers[name] = provider
                self.created.append(name)
                return droplet.address
            raise RuntimeError("no free loopback address 127.0.0.2-254 with ports 22, 80 and 443 free")

    def destroy(self, name: str) -> None:
        """Remove the container and its volume (an unknown name is fine, as on the API)."""
        with self._lock:
            provider = self.providers.pop(name, None)
        (provider or self._provider("127.0.0.1")).destroy(name)

    def resize(self, name: str, size: str) -> None:
        self._require(name).resize(name, size)

    def power(self, name: str, on: bool) -> None:
        self._require(name).power(name, on)

    # -- for tests

    def container(self, name: str) -> str:
        return container_name(self.env, name)

    def address(self, name: str) -> str:
        return self._require(name).bind_address

    def destroy_all(self) -> int:
        """Remove every droplet of this backend's environment (also ones it lost track of)."""
        with self._lock:
            for name in list(self.providers):
                self.destroy(name)
        return reap({f"{LABEL}.env": self.env})

    # -- internals

    def _provider(self, address: str) -> LocalProvider:
        return LocalProvider(self.env, self.workspace, ca_certificates=self.ca_certificates,
                             bind_address=address, labels={BACKEND_LABEL: "1"}, same_ports=True)

    def _require(self, name: str) -> LocalProvider:
        with self._lock:
            provider = self.providers.get(name)
        if provider is None:
            raise KeyError(f"{name}: no such droplet in this backend")
        return provider
