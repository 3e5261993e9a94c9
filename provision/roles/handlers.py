"""Handlers shared by several roles, defined once (equal handlers run once per phase)."""
from __future__ import annotations

from ..engine.model import Handler
from ..engine import nginx, postgres

NGINX_TEST = nginx.TEST
DAEMON_RELOAD = Handler("systemctl daemon-reload", "systemctl daemon-reload")
# Waits for the old workers: when provision ends, HTTPS already answers with the new certificate.
RELOAD_NGINX = Handler("reload nginx", nginx.checked_reload("try-reload-or-restart"), "nginx")
RELOAD_POSTGRES = Handler("reload postgresql", postgres.reload_and_wait(), "postgresql")   # pg_hba.conf in force


def retire_timer(timer: str) -> Handler:
    """A timer whose unit files were removed: stopped, no longer wanted, forgotten by systemd (a timer
    whose service vanished first is left "failed": that is reset too)."""
    return Handler(f"stop {timer}", f"systemctl stop {timer} 2>/dev/null || true\n"
                                    f"rm -f /etc/systemd/system/timers.target.wants/{timer}\nsystemctl daemon-reload\n"
                                    f"systemctl reset-failed {timer} 2>/dev/null || true")
