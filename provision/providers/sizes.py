"""DigitalOcean size slugs as CPU and memory figures (pure)."""
from __future__ import annotations

import re
from dataclasses import dataclass

_SLUG = re.compile(r"^(?:[a-z0-9]+-)?(?P<cpu>\d+)vcpu-(?P<mem>\d+(?:\.\d+)?)(?P<unit>gb|mb)(?:-[a-z0-9-]+)?$")


@dataclass(frozen=True)
class Size:
    slug: str
    vcpus: int
    memory_mb: int


def parse_size(slug: str) -> Size:
    """``s-2vcpu-4gb`` -> Size(vcpus=2, memory_mb=4096); ValueError if the slug has no figures."""
    m = _SLUG.fullmatch(slug)
    if not m:
        raise ValueError(f"size {slug!r} is not a size slug like 's-2vcpu-4gb'")
    mem = float(m.group("mem"))
    memory_mb = int(mem * 1024) if m.group("unit") == "gb" else int(mem)
    return Size(slug, int(m.group("cpu")), memory_mb)


# DigitalOcean's basic sizes (slug: vCPUs, memory MB, disk GB): the local provider's table, so a
# local resize keeps DigitalOcean's rules (a size must exist; a disk never shrinks).
BASIC_SIZES: dict[str, tuple[int, int, int]] = {
    "s-1vcpu-512mb-10gb": (1, 512, 10),
    "s-1vcpu-1gb": (1, 1024, 25),
    "s-1vcpu-2gb": (1, 2048, 50),
    "s-2vcpu-2gb": (2, 2048, 60),
    "s-2vcpu-4gb": (2, 4096, 80),
    "s-4vcpu-8gb": (4, 8192, 160),
    "s-8vcpu-16gb": (8, 16384, 320),
}


def table_size(slug: str):
    """The SizeInfo of a slug of ``BASIC_SIZES``; ValueError naming the known slugs otherwise."""
    from .base import SizeInfo

    if slug not in BASIC_SIZES:
        raise ValueError(f"size {slug!r} is not offered (known: {', '.join(BASIC_SIZES)})")
    return SizeInfo(slug, *BASIC_SIZES[slug])
