"""Commands about nginx shared by provisioning and deploys (pure)."""
from __future__ import annotations


def reload_and_wait() -> str:
    """``systemctl reload nginx``, then wait (at most 5 s) until the old workers stop taking
    connections: a reload is only a signal, and until then new connections may still reach them."""
    return """master=$(cat /run/nginx.pid 2>/dev/null)
old=$(cat /proc/$master/task/$master/children 2>/dev/null)
systemctl reload nginx
# The reload is only a signal: wait until the old workers stop taking connections ("is shutting down").
i=0
for w in $old; do
  while [ $i -lt 500 ] && [ -r /proc/$w/cmdline ] && tr '\\0' ' ' < /proc/$w/cmdline | grep -q 'worker process *$'; do
    i=$((i + 1)); sleep 0.01
  done
done"""
