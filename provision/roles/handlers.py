"""Handlers shared by several roles, defined once (equal handlers run once per phase)."""
from __future__ import annotations

from ..engine.model import Handler, reload

NGINX_TEST = "nginx -t -q"
DAEMON_RELOAD = Handler("systemctl daemon-reload", "systemctl daemon-reload")
RELOAD_NGINX = reload("nginx", check=NGINX_TEST)
