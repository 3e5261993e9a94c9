"""The provider interface shared by the local (Docker) and DigitalOcean implementations."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class DropletSpec:
    """What the inventory asks for: one droplet of one environment."""

    name: str
    size: str
    region: str
    image: str
    tags: tuple[str, ...] = ()
    vpc_uuid: str = ""               # DigitalOcean: the VPC its private address is in ("" = the region's default)


@dataclass
class Droplet:
    """A droplet as the provider sees it now."""

    name: str
    id: str
    status: str                      # "new" | "active" | "off" | "archive"
    address: str                     # where SSH (and HTTP) reach it from the controller
    ssh_port: int = 22
    size: str = ""
    region: str = ""
    image: str = ""
    tags: tuple[str, ...] = ()
    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0
    # guest port -> port on `address` (local droplets publish 22/80/443 on loopback)
    ports: dict[int, int] = field(default_factory=dict)
    # "ssh-ed25519 AAAA..." lines read over a trusted channel (docker exec), when the provider can
    host_keys: list[str] = field(default_factory=list)
    # where the environment's other droplets reach it (VPC / Docker network), "" when unknown
    private_address: str = ""

    def port(self, guest_port: int) -> int:
        return self.ports.get(guest_port, guest_port)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "id": self.id, "status": self.status, "address": self.address,
            "ssh_port": self.ssh_port, "size": self.size, "region": self.region, "image": self.image,
            "tags": list(self.tags), "vcpus": self.vcpus, "memory_mb": self.memory_mb, "disk_gb": self.disk_gb,
            "ports": {str(k): v for k, v in self.ports.items()}, "private_address": self.private_address,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Droplet":
        return cls(
            name=d["name"], id=str(d["id"]), status=d.get("status", ""), address=d["address"],
            ssh_port=int(d.get("ssh_port", 22)), size=d.get("size", ""), region=d.get("region", ""),
            image=d.get("image", ""), tags=tuple(d.get("tags", ())), vcpus=int(d.get("vcpus", 0)),
            memory_mb=int(d.get("memory_mb", 0)), disk_gb=int(d.get("disk_gb", 0)),
            ports={int(k): int(v) for k, v in d.get("ports", {}).items()},
            private_address=d.get("private_address", ""),
        )


@dataclass(frozen=True)
class SizeInfo:
    """A size as the provider offers it."""

    slug: str
    vcpus: int
    memory_mb: int
    disk_gb: int


class Provider(Protocol):
    """Create, inspect, power, resize, snapshot and destroy an environment's droplets."""

    def create(self, spec: DropletSpec, public_key: str) -> Droplet:
        """Create (or return the existing) droplet; the key authorizes root login."""

    def get(self, name: str) -> Droplet | None: ...

    def list(self) -> list[Droplet]: ...

    def power(self, name: str, on: bool) -> Droplet: ...

    def check_resize(self, name: str, size: str, disk: bool = False) -> SizeInfo:
        """Preflight, changing nothing: the target size, or a one-line ProviderError (with the fix)
        when ``name`` cannot go to ``size``: unknown size, not available in its region, too small
        for its image, a disk it cannot shrink to (with ``disk=False`` the disk stays as it is, so
        the size's disk must be at least the droplet's), or an action still in progress."""

    def resize(self, name: str, size: str, disk: bool = False) -> Droplet:
        """Resize a powered-off droplet (CPU and RAM; also the disk, permanently, with ``disk``);
        it stays off. (A droplet still on is powered off first and back on after.)"""

    def snapshot(self, name: str, snapshot_name: str) -> str: ...

    def destroy(self, name: str) -> None: ...
