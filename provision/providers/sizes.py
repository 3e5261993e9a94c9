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
    m = _SLUG.match(slug)
    if not m:
        raise ValueError(f"size {slug!r} is not a size slug like 's-2vcpu-4gb'")
    mem = float(m.group("mem"))
    memory_mb = int(mem * 1024) if m.group("unit") == "gb" else int(mem)
    return Size(slug, int(m.group("cpu")), memory_mb)
