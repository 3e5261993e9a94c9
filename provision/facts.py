"""Host facts gathered in one command, parsed by pure functions.

Memory and CPUs come from the host's cgroup when it is limited (a local droplet's size is its
container's limits; /proc/meminfo and nproc show the whole machine there).
"""
from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROBE = r"""
. /etc/os-release 2>/dev/null
echo "os=${ID:-unknown}"; echo "os_version=${VERSION_ID:-}"; echo "codename=${VERSION_CODENAME:-}"
virt=none
if [ -r /run/systemd/container ]; then read -r virt < /run/systemd/container; elif [ -e /.dockerenv ]; then virt=docker; fi
echo "virt=$virt"
while read -r k v _; do [ "$k" = MemTotal: ] && echo "mem_kb=$v" && break; done < /proc/meminfo
n=0; while read -r k _; do [ "$k" = processor ] && n=$((n + 1)); done < /proc/cpuinfo; echo "nproc=$n"
mp=; cp=; up=
while IFS=: read -r id ctl path; do
  case ",$ctl," in *,memory,*) mp=$path ;; esac
  case ",$ctl," in *,cpu,*) cp=$path ;; esac
  [ "$id" = 0 ] && up=$path
done < /proc/self/cgroup
limits() {  # $1 base dir, $2 cgroup path, $3.. files: print "name=value" up the tree
  base=$1; p=$2; shift 2
  while :; do
    for f in "$@"; do [ -r "$base$p/$f" ] && read -r v < "$base$p/$f" && echo "$f=$v"; done
    [ -z "$p" ] && break; p=${p%/*}
  done
}
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  limits /sys/fs/cgroup "$up" memory.max cpu.max
else
  [ -n "$mp" ] && limits /sys/fs/cgroup/memory "$mp" memory.limit_in_bytes
  for d in cpu,cpuacct cpu; do
    [ -n "$cp" ] && [ -d "/sys/fs/cgroup/$d" ] && limits "/sys/fs/cgroup/$d" "$cp" cpu.cfs_quota_us cpu.cfs_period_us && break
  done
fi
while read -r k v; do [ "$k" = CapBnd: ] && echo "capbnd=$v" && break; done < /proc/self/status
pg=; for d in /etc/postgresql/*/; do [ -d "$d" ] && d=${d%/} && pg=${d##*/}; done; echo "pg=$pg"
"""


CAP_SYS_PTRACE = 19


@dataclass(frozen=True)
class SystemFacts:
    os: str
    os_version: str
    codename: str
    virt: str
    memory_mb: int
    cpus: int
    pg_version: str = ""
    cap_bounding: str = ""       # CapBnd of /proc/self/status (hex); "" when unknown

    @property
    def in_container(self) -> bool:
        return self.virt not in ("none", "")

    @property
    def can_exec_into_containers(self) -> bool:
        """Docker here can ``exec`` into containers running as another user: that needs CAP_SYS_PTRACE,
        which a container host (a local droplet) may lack."""
        try:
            return bool(int(self.cap_bounding, 16) >> CAP_SYS_PTRACE & 1) if self.cap_bounding else True
        except ValueError:
            return True


def parse_system(output: str) -> SystemFacts:
    values: dict[str, list[str]] = {}
    for line in output.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            values.setdefault(k.strip(), []).append(v.strip())
    one = lambda k, d="": (values.get(k) or [d])[0]  # noqa: E731
    mem = int(one("mem_kb", "0") or 0) // 1024
    for limit in values.get("memory.limit_in_bytes", []) + values.get("memory.max", []):
        if limit.isdigit() and 0 < int(limit) // (1024 * 1024) < mem:     # "max" / huge = unlimited
            mem = int(limit) // (1024 * 1024)
    cpus = int(one("nproc", "1") or 1)
    quotas = [v.split() for v in values.get("cpu.max", [])]
    quotas += [[q, p] for q, p in zip(values.get("cpu.cfs_quota_us", []), values.get("cpu.cfs_period_us", []))]
    for quota in quotas:
        if len(quota) == 2 and quota[0].isdigit() and quota[1].isdigit() and int(quota[0]) > 0 < int(quota[1]):
            cpus = min(cpus, max(1, -(-int(quota[0]) // int(quota[1]))))
    return SystemFacts(one("os", "unknown"), one("os_version"), one("codename"), one("virt", "none"),
                       mem, cpus, one("pg"), one("capbnd"))
