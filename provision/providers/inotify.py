"""The machine's inotify instances: every local droplet's systemd (and its dbus, fail2ban, containerd)
holds several, and Debian's default of 128 per user runs out at about 18 droplets, when a new
droplet's systemd exits at once."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

LIMIT = "fs.inotify.max_user_instances"
LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_instances")
WANTED = 1024         # what scripts/setup.sh raises it to
NEEDED = 12           # a booting droplet's systemd, journald, logind and dbus, with room to spare
_IN_CLOEXEC = 0o2000000


def limit() -> int | None:
    try:
        return int(LIMIT_FILE.read_text())
    except (OSError, ValueError):
        return None


def headroom(most: int) -> int | None:
    """How many more inotify instances root can open now (up to ``most``): opened, counted, closed.
    None when this process is not root (local droplets' processes are root's) or cannot tell."""
    if os.geteuid() != 0:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    opened: list[int] = []
    try:
        while len(opened) < most:
            fd = libc.inotify_init1(_IN_CLOEXEC)
            if fd < 0:
                break
            opened.append(fd)
    finally:
        for fd in opened:
            os.close(fd)
    return len(opened)


def shortage(room: int | None, allowed: int | None) -> str | None:
    """The cause of a droplet that stopped while booting when inotify instances ran out (pure)."""
    if room is None or allowed is None or room >= NEEDED:
        return None
    return (f"this machine's inotify instances are used up (room for {room} more; {LIMIT}={allowed}, and "
            "every local droplet's systemd takes several)")


def fix() -> str:
    return f"raise the limit: `sysctl -w {LIMIT}={WANTED}` (scripts/setup.sh does), then run again"
