"""Thin helpers around the ``docker`` CLI (subprocess, no SDK) and the local Docker engine."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import IO

from provision.errors import DropshipError, ProviderError

DOCKERD_LOG = Path("/var/log/dropship-dockerd.log")
ENGINE_START_TIMEOUT = 60.0
_engine_ok = False


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (docker puts the reason there), or ''.

    The CLI's trailing hints ("Run 'docker run --help' for more information") are skipped.
    """
    lines = [ln.strip() for ln in (text or "").splitlines()
             if ln.strip() and not ln.strip().startswith(("Run 'docker", "See 'docker"))]
    return lines[-1] if lines else ""


def docker(*args: str, input: bytes | str | IO[bytes] | None = None, check: bool = True,
           timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``docker *args``; stdout/stderr come back as text.

    ``input`` may be bytes, text or a readable binary file object (streamed as stdin).
    With ``check``, a non-zero exit raises ProviderError carrying docker's last stderr line.
    """
    cmd = ["docker", *args]
    stdin, data = None, None
    if hasattr(input, "fileno"):
        stdin = input
    elif input is not None:
        data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(cmd, input=data, stdin=stdin, capture_output=True, timeout=timeout,
                              env={**os.environ, **env} if env else None)
    except FileNotFoundError:
        raise _not_installed() from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"`docker {' '.join(args[:2])}` timed out after {timeout:.0f}s",
                            "check `docker info` and the engine log") from None
    out = subprocess.CompletedProcess(cmd, proc.returncode, proc.stdout.decode(errors="replace"),
                                      proc.stderr.decode(errors="replace"))
    if check and out.returncode != 0:
        reason = last_line(out.stderr) or last_line(out.stdout) or f"exit status {out.returncode}"
        raise ProviderError(f"`docker {' '.join(args[:2])}` failed: {reason}")
    return out


def _not_installed() -> DropshipError:
    return DropshipError("the docker CLI is not installed (local droplets run in Docker)",
                         "apt-get install docker.io")


def _engine_answers() -> bool:
    return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0


def _dockerd_log() -> Path:
    """/var/log/dropship-dockerd.log when writable, else a file in the temp folder."""
    try:
        with open(DOCKERD_LOG, "a"):
            return DOCKERD_LOG
    except OSError:
        return Path(tempfile.gettempdir()) / "dropship-dockerd.log"


def _start_dockerd() -> Path:
    """Start ``dockerd`` detached from this process (own session, output to a log file)."""
    log_path = _dockerd_log()
    with open(log_path, "ab") as log:
        subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)
    return log_path


def ensure_engine(timeout: float = ENGINE_START_TIMEOUT) -> None:
    """Make sure a Docker engine answers, starting ``dockerd`` if it is installed but down.

    The result is cached for the life of the process.
    """
    global _engine_ok
    if _engine_ok:
        return
    if not shutil.which("docker"):
        raise _not_installed()
    if not _engine_answers():
        if not shutil.which("dockerd"):
            raise ProviderError("the Docker engine is not running and dockerd is not installed",
                                "apt-get install docker.io")
        if os.geteuid() != 0:
            raise ProviderError("the Docker engine is not running (starting it needs root)",
                                "sudo systemctl start docker")
        log_path = _start_dockerd()
        deadline = time.monotonic() + timeout
        while not _engine_answers():
            if time.monotonic() > deadline:
                raise ProviderError(f"dockerd did not answer within {timeout:.0f}s: "
                                    f"{last_line(_tail(log_path)) or 'no log output'}",
                                    f"see {log_path}")
            time.sleep(1)
    _engine_ok = True


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


@lru_cache(maxsize=None)
def engine_facts() -> dict[str, str]:
    """NCPU and cgroup version of the engine (cached; call after ensure_engine)."""
    out = docker("info", "--format", "{{.NCPU}} {{.CgroupVersion}}").stdout.split()
    return {"ncpu": out[0] if out else "1", "cgroup": out[1] if len(out) > 1 else "1"}


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0
