"""Commands about nginx shared by provisioning and deploys (pure)."""
from __future__ import annotations

TEST = "nginx -t -q"


def reload_and_wait(verb: str = "reload") -> str:
    """``systemctl reload nginx`` (or another ``verb``: ``try-reload-or-restart``), then wait (at most
    5 s) until the old workers stop taking connections: a reload is only a signal, and until then new
    connections may still reach them with the old configuration (an old certificate, a drained host)."""
    return f"""master=$(cat /run/nginx.pid 2>/dev/null) || true
old=$(cat /proc/$master/task/$master/children 2>/dev/null) || true
systemctl {verb} nginx
# The reload is only a signal: wait until the old workers stop taking connections ("is shutting down").
i=0
for w in $old; do
  while [ $i -lt 500 ] && [ -r /proc/$w/cmdline ] && tr '\\0' ' ' < /proc/$w/cmdline | grep -q 'worker process *$'; do
    i=$((i + 1)); sleep 0.01
  done
done"""



def checked_reload(verb: str = "reload") -> str:
    """``nginx -t`` first (the step fails on a bad configuration, nginx keeps the one it has), then
    :func:`reload_and_wait`."""
    return f"{TEST} || exit 1\n{reload_and_wait(verb)}"
