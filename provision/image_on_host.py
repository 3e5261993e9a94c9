"""Getting the Airflow image onto a host: shipped from here, pulled from a registry, or built there.

``ship_image`` streams ``docker save`` into ``docker load`` over the SSH session (no registry, no
temporary file), only when the host lacks the tag. ``pull_on_host`` pulls ``airflow.image``.
``build_on_host`` (``build.where: host``) streams the build context and runs ``docker build`` on the
host, its base shipped or pulled first; the output stays in a log file on the host when it fails.
"""
from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import time
from typing import Iterator

from .airflow_image import BUILD_TIMEOUT, CHUNK, PULL_TIMEOUT, SHIP_TIMEOUT, HostBuild, build_fixes
from .build_failures import failure_message, files_note
from .builder import BUILDX, LEGACY
from .engine.model import q
from .errors import DropshipError, RemoteError
from .providers.docker_engine import last_line

log = logging.getLogger(__name__)

BUILD_DIR = "/var/tmp/dropship-airflow-build"     # + -<hash>/ (the context) and -<hash>.log on the host


def sudo(session, command: str) -> str:
    """``command`` as root on the host: ``sudo -n`` unless the session is root already."""
    return command if session.user == "root" else f"sudo -n {command}"


def host_has_image(session, tag: str) -> bool:
    result = session.run(sudo(session, f"docker image inspect --format '{{{{.Id}}}}' {q(tag)}"), timeout=60)
    return result.rc == 0


def is_loopback(address: str) -> bool:
    """A host on this machine (a local droplet): shipping there is not worth compressing (pure)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def save_commands(tag: str, compress: bool) -> list[list[str]]:
    """The local pipeline whose output ``docker load`` reads: ``docker save`` [| ``gzip -1``] (pure)."""
    return [["docker", "save", tag]] + ([["gzip", "-1", "-c"]] if compress else [])


def ship_image(session, tag: str, progress=None, timeout: float = SHIP_TIMEOUT, compress: bool | None = None) -> bool:
    """Copy ``tag`` to the session's host (``docker save | docker load``); False when it is there already.

    ``compress`` (default: unless the host is on this machine) sends the stream through ``gzip -1``,
    about 40 % of the bytes, which ``docker load`` reads as it is.
    """
    if host_has_image(session, tag):
        return False
    if compress is None:
        compress = not is_loopback(session.target.address) and shutil.which("gzip") is not None
    started = time.monotonic()
    sent = 0
    procs: list[subprocess.Popen] = []
    try:
        for argv in save_commands(tag, compress):
            procs.append(subprocess.Popen(argv, stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            if len(procs) > 1:
                procs[-2].stdout.close()     # only the next process reads it now

        def chunks() -> Iterator[bytes]:
            nonlocal sent
            while True:
                data = procs[-1].stdout.read(CHUNK)
                if not data:
                    return
                sent += len(data)
                yield data

        result = session.send_stream("docker load", chunks(), timeout=timeout)
    finally:
        if procs:
            procs[-1].stdout.close()         # a load that ended early stops the pipeline (EPIPE)
        local = [(p.args, p.stderr.read().decode(errors="replace"), p.wait()) for p in procs]
        for p in procs:
            p.stderr.close()
    for argv, err, rc in local:
        if rc != 0 and result.rc == 0:
            raise DropshipError(f"`{' '.join(argv[:2])}` of {tag} failed: {last_line(err) or f'exit status {rc}'}",
                                f"check `docker image inspect {tag}` here")
    if result.rc != 0:
        raise RemoteError(session.name, "docker load",
                          last_line(result.stderr) or last_line(result.stdout) or f"exit status {result.rc}",
                          "check the host's disk space (`df -h /var/lib/docker`) and that Docker runs")
    if not host_has_image(session, tag):
        raise RemoteError(session.name, "docker load", f"finished, but {tag} is not on the host: "
                          f"{last_line(result.stdout) or 'no output'}", "re-run the deploy")
    seconds = time.monotonic() - started
    if progress is not None:
        progress.step(session.name, "ok", f"shipped image {tag} ({sent / 1e6:.0f} MB in {seconds:.1f} s)")
    log.info("shipped %s to %s: %d bytes%s in %.1fs", tag, session.name, sent, " (gzip)" if compress else "",
             seconds)
    return True


def pull_on_host(session, image: str, progress=None, timeout: float = PULL_TIMEOUT) -> None:
    """``docker pull`` a registry image on the host (quick when it is up to date)."""
    started = time.monotonic()
    result = session.run(sudo(session, f"docker pull -q {q(image)}"), timeout=timeout)
    if result.rc != 0:
        raise RemoteError(session.name, f"docker pull {image}",
                          last_line(result.stderr) or last_line(result.stdout) or f"exit status {result.rc}",
                          "check the image name and that the host reaches its registry (docker login there "
                          "for a private one)")
    if progress is not None:
        progress.step(session.name, "ok", f"pulled image {image} ({time.monotonic() - started:.1f} s)")


def build_on_host(session, plan: HostBuild, progress=None, timeout: float = BUILD_TIMEOUT) -> bool:
    """Build ``plan.tag`` on the host; False when the host has it already.

    The base is shipped from here (the local python base) or pulled there; the context is streamed as
    a tarball; builds on one host are serialized with ``flock``. A failed build ends in one line with
    its last output lines and leaves the whole log on the host.
    """
    if host_has_image(session, plan.tag):
        return False
    started = time.monotonic()
    if plan.ship_base:
        ship_image(session, plan.base, progress)
    elif not host_has_image(session, plan.base):
        pull_on_host(session, plan.base, progress)
    suffix = plan.tag.rsplit("-", 1)[-1]
    context, build_log = f"{BUILD_DIR}-{suffix}", f"{BUILD_DIR}-{suffix}.log"
    sent = session.send_stream(f"sh -c {q(unpack_command(context))}", [plan.context], timeout=300)
    if sent.rc != 0:
        raise RemoteError(session.name, "upload the Airflow build context",
                          last_line(sent.stderr) or f"exit status {sent.rc}", "check the host's disk space")
    result = session.script(host_build_script(plan, context, build_log), timeout=timeout)
    if result.rc != 0:
        raise RemoteError(session.name, f"docker build {plan.tag}", *host_build_failure(plan, result.stdout, build_log))
    seconds = time.monotonic() - started
    if progress is not None:
        progress.step(session.name, "ok", f"built image {plan.tag} on the host ({seconds:.0f} s)")
    log.info("built %s on %s in %.0fs", plan.tag, session.name, seconds)
    return True


def host_build_failure(plan: HostBuild, output: str, build_log: str) -> tuple[str, str]:
    """(detail, fix) of a failed host build from the log's tail the host printed (pure)."""
    source = plan.source or "app_src/airflow"
    fixes = build_fixes(source, "the host", "list the proxy's root CA under the environment's ca_certificates "
                        "in the inventory", "deploy again")
    return failure_message("", output, f"{build_log} on the host", files_note(plan.ca_count, "the environment's"),
                           fixes, unknown_fix=f"see {build_log} on the host; fix {source} and deploy again")


def unpack_command(context: str) -> str:
    """Unpack the context tarball read from stdin into a fresh ``context`` folder (pure)."""
    return f"rm -rf {q(context)} && mkdir -p {q(context)} && tar -xzf - -C {q(context)}"


def host_build_script(plan: HostBuild, context: str, build_log: str, tail: int = 200) -> str:
    """The host's side of a build: ``docker build`` under a lock, output to ``build_log`` (pure).

    BuildKit when the host's docker has the buildx plugin, else the legacy builder (see ``builder``).
    On failure the log's last lines are printed (the caller finds the cause in them, often well above
    the end, and makes one line of it); on success the context and the log are removed.
    """
    def build(kind: str) -> str:
        argv = ["env", f"DOCKER_BUILDKIT={int(kind != LEGACY)}", "docker", *plan.build_args(context, kind)]
        return f"flock {q(BUILD_DIR + '.lock')} {' '.join(q(a) for a in argv)} > {q(build_log)} 2>&1"

    return f"""
if docker buildx version >/dev/null 2>&1; then
  {build(BUILDX)}
else
  {build(LEGACY)}
fi
rc=$?
if [ $rc -ne 0 ]; then tail -n {tail} {q(build_log)}; rm -rf {q(context)}; exit $rc; fi
rm -rf {q(context)} {q(build_log)}
"""
