"""Host facts gathered in one command, parsed by pure functions.

Memory and CPUs come from the host's cgroup when it is limited (a local droplet's size is its
container's limits; /proc/meminfo and nproc show the whole machine there).
"""
from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROBE = r"""
. /etc/os-release 2>/dev/null
echo "os=${ID:-unknown}"; echo "os_version=${VERSION_ID:-}"; echo "codename=${VERSION_CODENAME:-}"
echo "virt=$(systemd-detect-virt -c 2>/dev/null || echo none)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "nproc=$(nproc)"
mp=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
cp=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
up=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
for d in memory; do p=$mp; while :; do
  f=/sys/fs/cgroup/$d$p/memory.limit_in_bytes; [ -r "$f" ] && echo "cg_mem=$(cat "$f")"
  [ -z "$p" ] || [ "$p" = / ] && break; p=$(dirname "$p"); done; done
for d in cpu cpu,cpuacct; do p=$cp; while [ -n "$cp" ]; do
  f=/sys/fs/cgroup/$d$p/cpu.cfs_quota_us
  [ -r "$f" ] && echo "cg_cpu=$(cat "$f") $(cat /sys/fs/cgroup/$d$p/cpu.cfs_period_us)"
  [ "$p" = / ] && break; p=$(dirname "$p"); done; done
p=$up; while [ -n "$up" ] && [ -f /sys/fs/cgroup/cgroup.controllers ]; do
  [ -r "/sys/fs/cgroup$p/memory.max" ] && echo "cg_mem=$(cat "/sys/fs/cgroup$p/memory.max")"
  [ -r "/sys/fs/cgroup$p/cpu.max" ] && echo "cg_cpu=$(cat "/sys/fs/cgroup$p/cpu.max")"
  [ "$p" = / ] && break; p=$(dirname "$p"); done
echo "pg=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
"""


@dataclass(frozen=True)
class SystemFacts:
    os: str
    os_version: str
    codename: str
    virt: str
    memory_mb: int
    cpus: int
    pg_version: str = ""

    @property
    def in_container(self) -> bool:
        return self.virt not in ("none", "")


def parse_system(output: str) -> SystemFacts:
    values: dict[str, list[str]] = {}
    for line in output.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            values.setdefault(k.strip(), []).append(v.strip())
    one = lambda k, d="": (values.get(k) or [d])[0]  # noqa: E731
    mem = int(one("mem_kb", "0") or 0) // 1024
    for limit in values.get("cg_mem", []):
        if limit.isdigit() and 0 < int(limit) // (1024 * 1024) < mem:
            mem = int(limit) // (1024 * 1024)
    cpus = int(one("nproc", "1") or 1)
    for quota in values.get("cg_cpu", []):
        parts = quota.split()
        if len(parts) == 2 and parts[0].lstrip("-").isdigit() and int(parts[0]) > 0 and int(parts[1]) > 0:
            cpus = min(cpus, max(1, -(-int(parts[0]) // int(parts[1]))))
    return SystemFacts(one("os", "unknown"), one("os_version"), one("codename"), one("virt", "none"),
                       mem, cpus, one("pg"))
