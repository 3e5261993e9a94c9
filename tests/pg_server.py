"""A throwaway PostgreSQL server for tests of the apps (the names app, the guestbook test app).

`postgres_server` starts one cluster (initdb + pg_ctl from the Debian `postgresql` package) on a
free 127.0.0.1 port, with its socket and data in a fresh temp dir; a watchdog process stops and
deletes it even if the test run is killed.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

# Runs detached; waits for EOF on stdin (the test run ending, however it ends), then
# stops the server if it is still up and deletes the temp dir.
WATCHDOG = textwrap.dedent("""
    import json, os, shutil, subprocess, sys
    stop, tmp = json.loads(sys.argv[1]), sys.argv[2]
    sys.stdin.read()
    if os.path.exists(os.path.join(tmp, "data", "postmaster.pid")):
        subprocess.run(stop, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)
""")


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl")).parent
    pytest.fail("PostgreSQL server binaries not found: apt-get install postgresql (scripts/setup.sh does)")


@contextmanager
def postgres_server(dbname: str, prefix: str = "pg-") -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yield the URL (postgresql://) of its empty ``dbname``."""
    bindir = pg_bindir()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    data, log = tmp / "data", tmp / "postgres.log"
    as_user = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)

    def pg(*args):
        done = subprocess.run(as_user + [str(bindir / args[0]), *args[1:]], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed: {done.stderr or done.stdout}")

    stop = as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, json.dumps(stop), str(tmp)],
                                stdin=subprocess.PIPE, start_new_session=True)
    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
           "--no-sync", "--no-instructions")
        for attempt in range(3):  # a free port can be taken before the server binds it
            port = unused_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
                break
            except RuntimeError as exc:
                if attempt == 2:
                    pytest.fail(f"PostgreSQL did not start: {exc}\n{log.read_text() if log.exists() else ''}")
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname)
        yield f"postgresql://postgres@127.0.0.1:{port}/{dbname}"
    finally:
        subprocess.run(stop, cwd=tmp, capture_output=True)
        watchdog.stdin.close()  # EOF: the watchdog deletes the temp dir and exits
        watchdog.wait(timeout=30)
