"""Host facts: parse_system on crafted probe output, and the real probe run on this machine."""
import os
import subprocess

from provision.facts import SYSTEM_PROBE, SystemFacts, parse_system

BASE = """\
os=debian
os_version=13
codename=trixie
virt=none
mem_kb=16384000
nproc=8
"""
MACHINE_MB = 16384000 // 1024     # 16000


def facts(extra: str = "", base: str = BASE) -> SystemFacts:
    return parse_system(base + extra)


def test_plain_machine():
    assert facts("pg=\n") == SystemFacts("debian", "13", "trixie", "none", MACHINE_MB, 8, "")


def test_cgroup_v1_memory_limit_below_ram_wins():
    assert facts(f"memory.limit_in_bytes={4096 * 1024 * 1024}\n").memory_mb == 4096


def test_smallest_cgroup_memory_limit_of_the_hierarchy_wins():
    assert facts(f"memory.limit_in_bytes={4096 * 1024 * 1024}\nmemory.limit_in_bytes={2048 * 1024 * 1024}\n").memory_mb == 2048


def test_cgroup_unlimited_memory_value_is_ignored():
    assert facts("memory.limit_in_bytes=9223372036854771712\nmemory.limit_in_bytes=9223372036854771712\n").memory_mb == MACHINE_MB


def test_cgroup_memory_limit_above_ram_is_ignored():
    assert facts(f"memory.limit_in_bytes={64 * 1024 ** 3}\n").memory_mb == MACHINE_MB


def test_cgroup_v2_max_is_ignored():
    assert facts("memory.max=max\ncpu.max=max 100000\n") == facts()


def test_cgroup_v2_limits():
    got = facts(f"memory.limit_in_bytes={1024 * 1024 * 1024}\ncpu.max=150000 100000\n")
    assert (got.memory_mb, got.cpus) == (1024, 2)


def test_cfs_quota_gives_cpus():
    assert facts("cpu.max=200000 100000\n").cpus == 2


def test_cfs_quota_rounds_up_and_keeps_at_least_one():
    assert facts("cpu.max=50000 100000\n").cpus == 1
    assert facts("cpu.max=250000 100000\n").cpus == 3


def test_cfs_quota_above_nproc_is_ignored():
    assert facts("cpu.max=1600000 100000\n").cpus == 8


def test_unlimited_cfs_quota_is_ignored():
    assert facts("cpu.cfs_quota_us=-1\ncpu.cfs_period_us=100000\n").cpus == 8


def test_half_read_quota_is_ignored():
    assert facts("cpu.max=200000 \n").cpus == 8


def test_postgres_version_and_container():
    got = parse_system(BASE.replace("virt=none", "virt=docker") + "pg=17\n")
    assert got.pg_version == "17"
    assert got.in_container
    assert not facts().in_container


def test_missing_values_have_defaults():
    got = parse_system("os=ubuntu\n")
    assert got == SystemFacts("ubuntu", "", "", "none", 0, 1, "")


def test_values_keep_everything_after_the_first_equals():
    assert parse_system(BASE + "codename=a=b\n").codename == "trixie"
    assert parse_system("os=debian\ncodename=a=b\n").codename == "a=b"


def os_release_id() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("ID="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def test_system_probe_on_this_machine():
    result = subprocess.run(["/bin/sh", "-c", SYSTEM_PROBE], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    got = parse_system(result.stdout)
    assert got.os == os_release_id()
    mem_total_mb = next(int(line.split()[1]) for line in open("/proc/meminfo")
                        if line.startswith("MemTotal:")) // 1024
    assert 0 < got.memory_mb <= mem_total_mb
    assert 1 <= got.cpus <= os.cpu_count()
    assert got.virt
    assert got.pg_version == "" or got.pg_version[0].isdigit()


def test_exec_into_containers_needs_sys_ptrace_in_the_bounding_set():
    assert facts("capbnd=000001ffffffffff\n").can_exec_into_containers           # a VM's root
    assert facts("capbnd=00000000a82c35fb\n").can_exec_into_containers            # a local droplet (read off one)
    assert not facts("capbnd=00000000a82435fb\n").can_exec_into_containers        # the same without SYS_PTRACE
    assert facts().can_exec_into_containers and facts("capbnd=zz\n").can_exec_into_containers   # unknown: assume yes
