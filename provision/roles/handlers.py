"""Handlers shared by several roles, defined once (equal handlers run once per phase)."""
from __future__ import annotations

from ..engine.model import Handler, reload

NGINX_TEST = "nginx -t -q"
DAEMON_RELOAD = Handler("systemctl daemon-reload", "systemctl daemon-reload")
RELOAD_NGINX = reload("nginx", check=NGINX_TEST)


def retire_timer(timer: str) -> Handler:
    """A timer whose unit files were removed: stopped, no longer wanted, forgotten by systemd (a timer
    whose service vanished first is left "failed": that is reset too)."""
    return Handler(f"stop {timer}", f"systemctl stop {timer} 2>/dev/null || true\n"
                                    f"rm -f /etc/systemd/system/timers.target.wants/{timer}\nsystemctl daemon-reload\n"
                                    f"systemctl reset-failed {timer} 2>/dev/null || true")
