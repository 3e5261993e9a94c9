"""SSH sessions over Fabric connections with pinned host keys.

Fabric's default ``AutoAddPolicy`` is replaced: a host whose key is not pinned is refused unless
the caller allows first contact (a host the provider just created, or ``--accept-new-host-keys``),
and a changed key is always refused. Scripts go to the host on stdin in one round trip, so
secrets never appear on a command line, and output is streamed line by line.
"""
from __future__ import annotations

import os
import secrets
import select
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import paramiko

from ..errors import RemoteError
from ..redact import Redactor
from .hostkeys import KnownHosts, fingerprint, host_id
from .procstat import FIELD


@dataclass(frozen=True)
class Target:
    """Where and how to reach one host."""

    name: str
    address: str
    port: int
    users: tuple[str, ...]          # tried in order: the deploy user, then the bootstrap user
    key_path: Path
    connect_timeout: float = 10.0
    accept_new_key: bool = False


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class _HostKeyUnknown(Exception):
    def __init__(self, key: paramiko.PKey):
        super().__init__(fingerprint(key))
        self.key = key


class _PinnedPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys, or pin them when first contact is allowed."""

    def __init__(self, target: Target, known: KnownHosts):
        self.target, self.known = target, known

    def missing_host_key(self, client, hostname, key):
        if not self.target.accept_new_key:
            raise _HostKeyUnknown(key)
        self.known.pin(self.target.address, self.target.port, [key])


# Started in the background by every root shell (in a session of its own, off the channel): when
# the SSH session process above the shell (nearest `sshd*` ancestor, else the parent) is gone while
# the shell runs a step, the client is lost. It then ends the shell's process group (the shell, the
# step and its children: pip, pg_dump, curl…; systemd units are not in it): TERM, 3 s later KILL.
# Its check every second starts no process but the sleep.
WATCHDOG = "shell=$1\n" + FIELD + """
field $shell 20; mine=$v; field $shell 2; p=$v; watch=$p
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  c=; { read -r c < /proc/$p/comm; } 2>/dev/null
  case $c in sshd*) watch=$p; break;; esac
  field $p 2; p=$v
done
field $watch 20; theirs=$v
while [ -n "$mine" ] && field $shell 20 && [ "$v" = "$mine" ]; do
  field $watch 20
  if [ "$v" != "$theirs" ]; then
    field $shell 3; group=$v; field $$ 3
    if [ -n "$group" ] && [ "$group" -gt 1 ] && [ "$group" != "$v" ]; then
      kill -TERM -$group 2>/dev/null; sleep 3; kill -KILL -$group 2>/dev/null
    fi
    exit 0
  fi
  sleep 1
done"""
WATCHDOG_COMMAND = f"setsid /bin/sh -c {shlex.quote(WATCHDOG)} dropship-watchdog $$ </dev/null >/dev/null 2>&1 &\n"


class Session:
    """One logged-in SSH connection to one host."""

    def __init__(self, target: Target, connection, user: str, redactor: Redactor):
        self.target, self.connection, self.user, self.redact = target, connection, user, redactor
        self.name = target.name
        self._shell = None

    def run(self, command: str, stdin: bytes | None = None, on_line: Callable[[str], None] | None = None,
            timeout: float | None = None) -> Result:
        """Run ``command``; feed ``stdin``; call ``on_line`` for every stdout line as it arrives."""
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(self.name, "connection", "the SSH connection was lost",
                              "check the host is up and re-run: every step is idempotent")
        chan = transport.open_session(timeout=self.target.connect_timeout)
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err, pending = [], [], b""
        deadline = time.monotonic() + timeout if timeout else None
        # Read until EOF, not until the exit status: sshd may report the exit before the last output.
        while True:
            busy = False
            while chan.recv_ready():
                data = chan.recv(65536)
                out.append(data)
                busy = True
                if on_line:
                    pending = _each_line(pending + data, on_line)
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
                busy = True
            if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if deadline and time.monotonic() > deadline:
                chan.close()
                raise RemoteError(self.name, "command", f"no end within {timeout:.0f} s",
                                  "check the host's load and re-run")
            if not busy:
                select.select([chan], [], [], 0.2)
        if on_line and pending:
            on_line(pending.decode(errors="replace"))
        rc = chan.recv_exit_status()
        chan.close()
        return Result(rc, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def _root_channel(self, command: str):
        """A new channel of this connection running ``command`` as root (``sudo -n`` unless root)."""
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(self.name, "connection", "the SSH connection was lost",
                              "check the host is up and re-run: every step is idempotent")
        chan = transport.open_session(timeout=self.target.connect_timeout)
        chan.exec_command(command if self.user == "root" else f"sudo -n {command}")
        return chan

    def send_stream(self, command: str, chunks: Iterable[bytes], timeout: float | None = None,
                    on_line: Callable[[str], None] | None = None) -> Result:
        """Run ``command`` as root (``sudo -n`` unless logged in as root) on a new channel and stream
        ``chunks`` to its stdin, e.g. ``docker load`` fed by a local ``docker save``.

        Output is read while sending, so a chatty command cannot stall the upload; if the command
        ends early the rest of ``chunks`` is not consumed (an empty chunk only looks whether it has
        ended). ``on_line`` gets every stdout line as it arrives. Returns its exit status and output.
        """
        chan = self._root_channel(command)
        chan.settimeout(0.5)
        out: list[bytes] = []
        err: list[bytes] = []
        pending = [b""]
        deadline = time.monotonic() + timeout if timeout else None

        def drain() -> None:
            while chan.recv_ready():
                data = chan.recv(65536)
                out.append(data)
                if on_line:
                    pending[0] = _each_line(pending[0] + data, on_line)
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
            if deadline and time.monotonic() > deadline:
                chan.close()
                raise RemoteError(self.name, command.split()[0], f"no end within {timeout:.0f} s",
                                  "check the host's load and network, and re-run")

        ended = False
        for chunk in chunks:
            view = memoryview(chunk)
            while not ended:
                if chan.closed or chan.exit_status_ready():
                    ended = True     # the command stopped reading: keep its output, send no more
                    break
                if not view:
                    drain()
                    break
                try:
                    view = view[chan.send(bytes(view[:32768])):]
                except socket.timeout:
                    pass             # the window is full: read what came back and try again
                except OSError:
                    ended = True
                drain()
            if ended:
                break
        if not chan.closed:
            chan.shutdown_write()
        while not ((chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready()):
            drain()
            select.select([chan], [], [], 0.2)
        drain()
        if on_line and pending[0]:
            on_line(pending[0].decode(errors="replace"))
        chan.settimeout(None)
        rc = chan.recv_exit_status()
        chan.close()
        return Result(rc, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def receive(self, command: str, write: Callable[[bytes], None], timeout: float | None = None) -> Result:
        """Run ``command`` as root on a new channel and hand its stdout, as it arrives, to ``write``
        (e.g. a dump streamed to a local file); the result holds the exit status and stderr."""
        chan = self._root_channel(command)
        chan.shutdown_write()
        err: list[bytes] = []
        deadline = time.monotonic() + timeout if timeout else None
        while not ((chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready()):
            busy = False
            while chan.recv_ready():
                write(chan.recv(1 << 20))
                busy = True
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
                busy = True
            if deadline and time.monotonic() > deadline:
                chan.close()
                raise RemoteError(self.name, command.split()[0], f"no end within {timeout:.0f} s",
                                  "check the host's load and network, and re-run")
            if not busy:
                select.select([chan], [], [], 0.2)
        rc = chan.recv_exit_status()
        chan.close()
        return Result(rc, "", b"".join(err).decode(errors="replace"))

    def script(self, text: str, on_line: Callable[[str], None] | None = None,
               timeout: float | None = None) -> Result:
        """Run a POSIX shell script as root; its stderr is merged into stdout.

        Every script of a session goes to one root shell (``sudo -n /bin/sh`` unless logged in as
        root) opened on first use: one channel, one sudo, one PAM session per host and run.
        """
        chan = self._root_shell()
        mark = f"@@dropship-exit-{secrets.token_hex(6)}"
        chan.sendall(f"(\n{text}\n) </dev/null 2>&1\necho \"{mark} $?\"\n".encode())
        deadline = time.monotonic() + timeout if timeout else None
        out: list[str] = []
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(mark + " "):
                    return Result(int(line.split()[-1]), "\n".join(out) + ("\n" if out else ""), "")
                out.append(line)
                if on_line:
                    on_line(line)
            if chan.recv_ready():
                self._pending += chan.recv(65536)
                continue
            if chan.eof_received or chan.closed:
                while chan.recv_stderr_ready():
                    self._shell_err += chan.recv_stderr(65536)
                self._shell = None
                reason = self._shell_err.decode(errors="replace").strip().splitlines()
                raise RemoteError(self.name, "root shell", f"ended: {self.redact(reason[-1]) if reason else 'no output'}",
                                  "check that the SSH user can run `sudo -n /bin/sh` and re-run")
            if deadline and time.monotonic() > deadline:
                chan.close()
                self._shell = None
                raise RemoteError(self.name, "command", f"no end within {timeout:.0f} s",
                                  "check the host's load and re-run")
            select.select([chan], [], [], 0.2)
            while chan.recv_stderr_ready():
                self._shell_err += chan.recv_stderr(65536)

    def _root_shell(self):
        if self._shell is None:
            transport = self.connection.client.get_transport()
            if transport is None or not transport.is_active():
                raise RemoteError(self.name, "connection", "the SSH connection was lost",
                                  "check the host is up and re-run: every step is idempotent")
            chan = transport.open_session(timeout=self.target.connect_timeout)
            chan.exec_command("/bin/sh -s" if self.user == "root" else "sudo -n /bin/sh -s")
            chan.sendall(b"export LC_ALL=C\n" + WATCHDOG_COMMAND.encode())
            self._shell, self._pending, self._shell_err = chan, b"", b""
        return self._shell

    def alive(self) -> bool:
        """Whether the connection still stands (a session kept for later work may have been dropped)."""
        transport = self.connection.client.get_transport()
        return transport is not None and transport.is_active()

    def keep_alive(self, seconds: float = 30) -> None:
        """Send a keepalive every ``seconds`` of quiet, so that a session kept idle for later work
        is not dropped by a NAT or firewall that forgets idle connections."""
        transport = self.connection.client.get_transport()
        if transport is not None:
            transport.set_keepalive(int(seconds))

    def close(self) -> None:
        if self._shell is not None:
            try:
                self._shell.sendall(b"exit 0\n")
                self._shell.shutdown_write()
            except (OSError, EOFError):
                pass
            self._shell = None
        self.connection.close()


class LazySession:
    """A session to ``target`` logged in on its first script (a host's database commands on another
    host: most hosts of a deploy never run one)."""

    def __init__(self, target: Target, known: KnownHosts, redactor: Redactor):
        self.target, self.name, self._args, self._session = target, target.name, (target, known, redactor), None

    def script(self, text: str, on_line: Callable[[str], None] | None = None, timeout: float | None = None) -> Result:
        if self._session is None:
            self._session = connect(*self._args)
        return self._session.script(text, on_line=on_line, timeout=timeout)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _each_line(data: bytes, on_line: Callable[[str], None]) -> bytes:
    """Hand each whole line of ``data`` to ``on_line``; what follows the last newline is returned."""
    *lines, rest = data.split(b"\n")
    for line in lines:
        on_line(line.decode(errors="replace"))
    return rest


def fd_chunks(fd: int, wait: float = 0.2) -> Iterator[bytes]:
    """What arrives on ``fd`` (this process's stdin, a pipe) until its end, for ``send_stream``; an
    empty chunk each ``wait`` seconds of quiet, so that a command that never reads it can still end."""
    while True:
        if not select.select([fd], [], [], wait)[0]:
            yield b""
            continue
        data = os.read(fd, 65536)
        if not data:
            return
        yield data


def connect(target: Target, known: KnownHosts, redactor: Redactor, users: tuple[str, ...] | None = None) -> Session:
    """Log in as the first of ``target.users`` the host accepts; errors are one line each."""
    from fabric import Connection  # imported here: keeps `invoke --list` fast

    pinned = known.lookup(target.address, target.port)
    if not pinned and not target.accept_new_key:
        raise RemoteError(target.name, "connect", f"no pinned host key for {host_id(target.address, target.port)}",
                          "create the host with `invoke droplet.create` or pass --accept-new-host-keys "
                          "once you trust it")
    if not target.key_path.exists():
        raise RemoteError(target.name, "connect", f"SSH key {target.key_path} does not exist",
                          "run `invoke droplet.create` (it generates the key) or set ssh.key in the inventory")
    failures = []
    for user in users or target.users:
        conn = Connection(
            host=target.address, port=target.port, user=user, connect_timeout=target.connect_timeout,
            connect_kwargs={"key_filename": [str(target.key_path)], "look_for_keys": False,
                            "allow_agent": False, "banner_timeout": target.connect_timeout,
                            "auth_timeout": target.connect_timeout},
        )
        conn.client.set_missing_host_key_policy(_PinnedPolicy(target, known))
        for key in pinned.values():
            conn.client.get_host_keys().add(host_id(target.address, target.port), key.get_name(), key)
        try:
            _open_with_retry(conn, target)
        except paramiko.AuthenticationException:
            failures.append(user)
            conn.close()
            continue
        except paramiko.BadHostKeyException as exc:
            conn.close()
            raise RemoteError(
                target.name, "connect",
                f"host key changed: pinned {fingerprint(exc.expected_key)}, offered {fingerprint(exc.key)}",
                f"if {target.name} was rebuilt, run `invoke droplet.forget-key --host {target.name}` and re-run "
                "with --accept-new-host-keys; otherwise someone may be intercepting the connection") from None
        except _HostKeyUnknown as exc:
            conn.close()
            raise RemoteError(target.name, "connect", f"host key {exc} is not pinned",
                              "pass --accept-new-host-keys once you trust this host") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            conn.close()
            raise RemoteError(target.name, "connect",
                              f"unreachable at {target.address}:{target.port} ({_reason(exc)})",
                              "check the host is running (`invoke droplet.list`) and the address") from None
        return Session(target, conn, user, redactor)
    raise RemoteError(target.name, "connect",
                      f"key {target.key_path.name} was refused for {' and '.join(failures)}",
                      "use the environment's key (ssh.key in the inventory) or authorize it on the host")


def _open_with_retry(conn, target: Target, attempts: int = 3) -> None:
    """Retry only transient failures (reset/refused while a host boots); auth and key errors pass."""
    for attempt in range(attempts):
        try:
            conn.open()
            return
        except (ConnectionResetError, EOFError, paramiko.ssh_exception.NoValidConnectionsError):
            if attempt == attempts - 1:
                raise
            conn.close()
            time.sleep(0.5 * (attempt + 1))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, paramiko.SSHException) and ("banner" in str(exc) or str(exc) == "No existing session"):
        return "connected, but sshd did not answer"      # hung, or sshd not up behind a proxy
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
