"""The Airflow image's recipe and its build here: tag, build context, base image, ``docker build``.

``build_image`` builds ``dropship/airflow:<version>-<hash>`` from ``airflow.build.context`` (the
Dockerfile folder, minus ``dags/``: DAGs ship as releases of their own) on ``airflow.build.base_image``.
The hash covers everything that goes into the image (the folder's files, the base image's name and
id, the Airflow version, the CA certificates), so an unchanged recipe is never rebuilt and a tag on a
host always means the same image. ``plan_host_build`` is the same recipe for ``build.where: host``.
Getting the image onto hosts (ship, pull, build there) is ``image_on_host``'s.

A build here goes through this machine's network: it gets this machine's extra CA certificates
(``DEFAULT_LOCAL_CA_GLOB``) besides the environment's, whatever the provider.

Without a registry the base is ``dropship/python-base:trixie``: a Debian 13 minbase rootfs with
python3, made (mmdebstrap or debootstrap) and ``docker import``-ed here as the local droplet image is.
"""
from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .builder import BUILDKIT, LEGACY, LEGACY_DOCKERFILE, build_command, legacy_dockerfile, local_builder
from .build_failures import CERTIFICATE, DEPENDENCIES, NETWORK, failure_message, files_note
from .engine.uv import UV_VERSION
from .errors import DropshipError, ProviderError
from .inventory import DEFAULT_LOCAL_CA_GLOB, LOCAL_PYTHON_BASE, AirflowSettings, Environment
from .providers.docker_engine import docker, ensure_engine, image_exists, last_line
from .providers.local_image import build_lock, recipe_hash
from .providers.rootfs import (MIRROR, SOURCES_LIST, SUITE, import_rootfs, make_rootfs, remove_rootfs,
                               require_bootstrap_tool)
from .report import ticker

log = logging.getLogger(__name__)

IMAGE_REPO = "dropship/airflow"
PYTHON_BASE_REPO = LOCAL_PYTHON_BASE.split(":", 1)[0]        # dropship/python-base
PYTHON_BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,curl"
PYTHON_BASE_ARGS = ("--variant=minbase", f"--include={PYTHON_BASE_PACKAGES}", SUITE)
# Image config of the imported rootfs (docker import --change).
PYTHON_BASE_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')
# Run in the rootfs before import: apt sources with updates/security, no caches.
PYTHON_BASE_CLEANUP = ("rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* "
                       "var/log/*.log var/log/apt/* tmp/* && rm -f etc/apt/sources.list.d/*.sources")

BUILD_LOCK_PATH = Path(tempfile.gettempdir()) / "dropship-airflow-build.lock"
PYTHON_BASE_LOCK_PATH = Path(tempfile.gettempdir()) / "dropship-python-base-build.lock"
PYTHON_BASE_LOG = Path(tempfile.gettempdir()) / "dropship-python-base-rootfs.log"
BUILD_TIMEOUT = 1800
PULL_TIMEOUT = 900
SHIP_TIMEOUT = 3600
CHUNK = 1 << 20                                            # docker save is read 1 MB at a time
# Not part of the image: DAGs ship apart, the rest is noise that would only change the hash.
TOP_EXCLUDED = ("dags", "ca")                               # ca/ is made from the environment's CAs
EXCLUDED_DIRS = ("__pycache__", ".git", ".pytest_cache")
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


# ---- pure: what goes into the image and its tag -----------------------------------------------------

def context_files(folder: Path) -> dict[str, Path]:
    """``{relative path: file}`` of the Dockerfile folder that goes into the build context.

    ``dags/`` (and caches, ``.git``, a stray ``ca/``) are left out: the context's ``ca/`` is made
    from the environment's CA certificates.
    """
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        top = Path(dirpath) == Path(folder)
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not (top and d in TOP_EXCLUDED))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if name.endswith(EXCLUDED_SUFFIXES) or full.is_symlink() or not full.is_file():
                continue
            out[full.relative_to(folder).as_posix()] = full
    return dict(sorted(out.items()))


def ca_entries(ca_files: Sequence[Path]) -> list[tuple[str, Path]]:
    """``[(name in ca/, file)]``: numbered so equal file names never collide; ``.crt`` so that
    ``update-ca-certificates`` takes them."""
    out = []
    for i, path in enumerate(ca_files):
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(path).stem) or "ca"
        out.append((f"{i:02d}-{stem}.crt", Path(path)))
    return out


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def image_tag(settings: AirflowSettings, ca_files: Sequence[Path], base_id: str | None = None) -> str:
    """``dropship/airflow:<version>-<12 hex>`` of ``settings.build``.

    The hash covers the build folder's files (not ``dags/``), the base image's name and id, the
    Airflow version and the CA files' content. Pure given ``base_id`` (the base image's id, e.g.
    ``sha256:…``); without it the id is asked from the local engine.
    """
    build = settings.build
    if build is None:
        raise DropshipError("airflow.image is a registry image: there is no image to build",
                            "set airflow.build instead of airflow.image to build one")
    if base_id is None:
        base_id = image_id(build.base_image) or ""
    files = [f"{rel}:{_digest(path)}" for rel, path in context_files(build.context).items()]
    cas = [f"{name}:{_digest(path)}" for name, path in ca_entries(ca_files)]
    digest = recipe_hash("files", *files, "base", build.base_image, base_id, "version", settings.version,
                         "ca", *cas, "uv", UV_VERSION)
    return f"{IMAGE_REPO}:{settings.version}-{digest}"


def controller_ca_files() -> tuple[Path, ...]:
    """This machine's extra CA certificates (what the local provider trusts by default)."""
    return tuple(sorted(Path(p) for p in glob.glob(DEFAULT_LOCAL_CA_GLOB, recursive=True)))


def with_controller_cas(env_cas: Sequence[Path], controller_cas: Sequence[Path]) -> tuple[Path, ...]:
    """The environment's CA files, then this machine's that are not among them (same path or content).

    A local environment (whose default list is this machine's) keeps its list, hence its tag.
    """
    seen = {Path(p).resolve() for p in env_cas} | {_digest(p) for p in env_cas}
    extra = [Path(p) for p in controller_cas if Path(p).resolve() not in seen and _digest(p) not in seen]
    return (*env_cas, *extra)


def build_ca_files(env: Environment) -> tuple[Path, ...]:
    """The CA files a build here gets: the environment's and this machine's."""
    return with_controller_cas(tuple(env.ca_certificates), controller_ca_files())


def build_fixes(context: Path, machine: str, ca_fix: str, again: str) -> dict[str, str]:
    """The fix of each known build failure cause (``build_failures``) of a build on ``machine`` (pure)."""
    return {CERTIFICATE: f"{ca_fix}, then {again}",
            NETWORK: f"check that {machine} reaches the package servers (DNS, proxy, firewall), then {again}",
            DEPENDENCIES: f"fix the versions in {context}/requirements.txt or airflow.version "
                          f"(its constraints/ file pins the rest), then {again}"}


def assemble_context(folder: Path, ca_files: Sequence[Path], dest: Path) -> list[str]:
    """Copy the build context into ``dest`` (an empty folder); the relative paths written.

    ``ca/`` always exists (``COPY ca/`` needs it): it holds the CA files, or only ``.keep``.
    """
    written = []
    for rel, src in context_files(folder).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        written.append(rel)
    (dest / "ca").mkdir(exist_ok=True)
    entries = ca_entries(ca_files)
    for name, src in entries:
        shutil.copyfile(src, dest / "ca" / name)
        written.append(f"ca/{name}")
    if not entries:
        (dest / "ca" / ".keep").write_text("")
        written.append("ca/.keep")
    (dest / "tools").mkdir(exist_ok=True)
    shutil.copyfile(controller_uv(), dest / "tools" / "uv")
    (dest / "tools" / "uv").chmod(0o755)
    written.append("tools/uv")
    if add_legacy_dockerfile(dest):
        written.append(LEGACY_DOCKERFILE)
    return sorted(written)


def add_legacy_dockerfile(context: Path) -> bool:
    """Write the legacy builder's Dockerfile (``legacy_dockerfile``) into ``context`` when it differs
    from the Dockerfile; False when it does not, or cannot be made (the legacy build then says why)."""
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        return False
    text = dockerfile.read_text()
    try:
        legacy = legacy_dockerfile(text)
    except DropshipError:
        return False
    if legacy == text:
        return False
    (context / LEGACY_DOCKERFILE).write_text(legacy)
    return True


def controller_uv() -> Path:
    """This machine's uv (the project's virtualenv has it, pinned), which builds go with: the image
    installs Airflow with it and downloads no installer of its own."""
    found = Path(sys.prefix) / "bin" / "uv"
    candidates = [found] + ([Path(p)] if (p := shutil.which("uv")) else [])
    for path in candidates:
        if path.is_file() and subprocess.run([str(path), "--version"], capture_output=True, text=True)\
                .stdout.split()[1:2] == [UV_VERSION]:
            return path
    raise DropshipError(f"uv {UV_VERSION} is not installed on this machine (the Airflow image is built with it)",
                        "run `bash scripts/setup.sh` (it installs the pinned requirements.txt)")


def build_args(base_image: str, version: str, tag: str, context: Path | str, builder: str = BUILDKIT,
               legacy_file: bool = False) -> list[str]:
    """The ``docker build`` arguments for a ``builder`` kind (the base must already be there); the
    legacy builder's use the context's ``LEGACY_DOCKERFILE`` with ``legacy_file``."""
    how = build_command(builder)
    if builder == LEGACY and legacy_file:
        how += ["-f", f"{context}/{LEGACY_DOCKERFILE}"]
    return [*how, "--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", f"AIRFLOW_VERSION={version}",
            "--label", "dropship.airflow=1", "-t", tag, str(context)]


# ---- the local base image (no registry) ------------------------------------------------------------

def python_base_tag() -> str:
    """``dropship/python-base:trixie-<recipehash>`` (pure)."""
    h = recipe_hash(SOURCES_LIST, MIRROR, *PYTHON_BASE_ARGS, *PYTHON_BASE_CHANGES, PYTHON_BASE_CLEANUP)
    return f"{PYTHON_BASE_REPO}:{SUITE}-{h}"


def ensure_python_base_image() -> str:
    """Return ``dropship/python-base:trixie``, building it once (under a lock of its own: it may be
    built while the droplet image is) when the current recipe's image is missing; the plain tag
    always points at the recipe-hash tag."""
    ensure_engine()
    hashed = python_base_tag()
    if not image_exists(hashed):
        with build_lock(PYTHON_BASE_LOCK_PATH, "the Airflow base image"):
            if not image_exists(hashed):
                started = time.monotonic()
                with ticker(hashed, PYTHON_BASE_LOG):
                    _build_python_base(hashed)
                log.info("built %s in %.0fs", hashed, time.monotonic() - started)
    if image_id(LOCAL_PYTHON_BASE) != image_id(hashed):
        docker("tag", hashed, LOCAL_PYTHON_BASE)
    return LOCAL_PYTHON_BASE


def _build_python_base(tag: str) -> None:
    tool = require_bootstrap_tool("the Airflow base image",
                                  "apt-get install mmdebstrap, or set airflow.build.base_image to an image you have")
    target = Path(tempfile.mkdtemp(prefix="dropship-python-rootfs-", dir="/var/tmp"))
    try:
        make_rootfs(tool, target, PYTHON_BASE_ARGS, PYTHON_BASE_LOG)
        (target / "etc/apt/sources.list").write_text(SOURCES_LIST)
        subprocess.run(["sh", "-c", PYTHON_BASE_CLEANUP], cwd=target, check=True)
        import_rootfs(target, tag, tuple(PYTHON_BASE_CHANGES))
    finally:
        remove_rootfs(target)


# ---- building ---------------------------------------------------------------------------------------

def image_id(ref: str) -> str | None:
    """The local image id of ``ref`` (``sha256:…``), or None when it is not here."""
    out = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def ensure_base(base_image: str) -> str:
    """Make sure the build's base image is here: built (the local python base) or pulled."""
    if base_image == LOCAL_PYTHON_BASE:
        return ensure_python_base_image()
    ensure_engine()
    if image_exists(base_image):
        return base_image
    try:
        pulled = docker("pull", "-q", base_image, check=False, timeout=PULL_TIMEOUT)
        reason = last_line(pulled.stderr) if pulled.returncode != 0 else ""
    except ProviderError as exc:
        reason = exc.message
    if reason:
        raise DropshipError(f"the Airflow base image {base_image} is not here and cannot be pulled: {reason}",
                            f"docker pull or load it first, or use base_image: {LOCAL_PYTHON_BASE} "
                            "(built here, no registry needed)")
    return base_image


@dataclass(frozen=True)
class Built:
    tag: str
    built: bool          # False: the tag was here already
    seconds: float


def build_image(env: Environment, ca_files: Sequence[Path] | None = None) -> str:
    """Build the environment's Airflow image here (``airflow.build``, where: local); its tag.

    Nothing is built when the tag exists. ``ca_files`` defaults to the environment's CA certificates
    and this machine's (``build_ca_files``).
    """
    return build(env, ca_files).tag


def build(env: Environment, ca_files: Sequence[Path] | None = None) -> Built:
    """``build_image`` that also says whether it built and how long it took."""
    started = time.monotonic()
    settings, spec = _build_settings(env)
    if spec.where != "local":
        raise DropshipError(f"environment {env.name} builds its Airflow image on the host (build.where: "
                            f"{spec.where}), not here", "set airflow.build.where: local to build it here")
    base = ensure_base(spec.base_image)
    base_id = image_id(base)
    if base_id is None:
        raise DropshipError(f"the Airflow base image {base} vanished while building", "re-run")
    ca = build_ca_files(env) if ca_files is None else tuple(ca_files)
    tag = image_tag(settings, ca, base_id)
    if image_exists(tag):
        return Built(tag, False, time.monotonic() - started)
    with build_lock(BUILD_LOCK_PATH, "the Airflow image"):
        if image_exists(tag):
            return Built(tag, False, time.monotonic() - started)
        log.info("building %s on %s", tag, base)
        with tempfile.TemporaryDirectory(prefix="dropship-airflow-context-") as tmp:
            legacy_file = LEGACY_DOCKERFILE in assemble_context(spec.context, ca, Path(tmp))
            cli, kind = local_builder()
            _docker_build(cli, kind, build_args(base, settings.version, tag, Path(tmp), kind, legacy_file),
                          tag, spec.context, len(ca))
    return Built(tag, True, time.monotonic() - started)


def _build_settings(env: Environment):
    settings = env.settings.airflow
    if settings is None or settings.build is None:
        raise DropshipError(f"environment {env.name} builds no Airflow image",
                            "add 'airflow: {build: {context: app_src/airflow}}' to the inventory "
                            "(or airflow.image for a registry image)")
    return settings, settings.build


# ---- building on the host (build.where: host) ----------------------------------------------------------

@dataclass(frozen=True)
class HostBuild:
    """What a host needs to build the image itself."""

    tag: str
    version: str
    base: str            # the image the host builds FROM
    ship_base: bool      # True: the base is made here (no registry) and shipped; False: the host pulls it
    context: bytes       # the build context as a gzipped tarball
    ca_count: int = 0    # how many CA files the context holds (said when a build fails on certificates)
    source: Path | None = None   # the Dockerfile folder here (named in the fix of a failed build)
    legacy_file: bool = False    # the context holds LEGACY_DOCKERFILE

    def build_args(self, context_dir: str, builder: str) -> list[str]:
        return build_args(self.base, self.version, self.tag, context_dir, builder, self.legacy_file)


def plan_host_build(env: Environment, ca_files: Sequence[Path] | None = None) -> HostBuild:
    """The recipe of a ``build.where: host`` image: its tag, base and context (nothing is built here).

    The local python base is made here (a Debian rootfs, once) and shipped, named by its recipe-hash tag
    so a host never builds on a stale copy; any other base is pulled by the host, and only its name
    goes into the tag.
    """
    settings, spec = _build_settings(env)
    ca = tuple(env.ca_certificates if ca_files is None else ca_files)
    if spec.base_image == LOCAL_PYTHON_BASE:
        ensure_python_base_image()
    base, base_id, ship = _host_base(spec.base_image)
    context, written = context_tarball(spec.context, ca)
    return HostBuild(image_tag(settings, ca, base_id), settings.version, base, ship, context, len(ca), spec.context,
                     LEGACY_DOCKERFILE in written)


def _host_base(base_image: str) -> tuple[str, str, bool]:
    """(the base a host builds on, the id that goes into the tag, whether it is shipped from here)."""
    if base_image == LOCAL_PYTHON_BASE:
        return python_base_tag(), image_id(python_base_tag()) or "", True
    return base_image, "", False


def planned_tag(env: Environment) -> str:
    """The tag a build would have, for dry runs: nothing is built or pulled."""
    settings, spec = _build_settings(env)
    if spec.where == "host":
        return image_tag(settings, tuple(env.ca_certificates), _host_base(spec.base_image)[1])
    return image_tag(settings, build_ca_files(env))


def context_tarball(folder: Path, ca_files: Sequence[Path]) -> tuple[bytes, list[str]]:
    """``assemble_context`` as a gzipped tarball (what is streamed to a host that builds), and the
    files in it."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="dropship-airflow-context-") as tmp:
        written = assemble_context(folder, ca_files, Path(tmp))
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:    # fast: it holds uv's binary
            tar.add(tmp, arcname=".")
    return buf.getvalue(), written


def _docker_build(cli: str, kind: str, args: list[str], tag: str, source: Path, ca_count: int) -> None:
    """``cli build`` with the builder ``kind`` (``builder``'s LEGACY, BUILDKIT or BUILDX)."""
    log_path = Path(tempfile.gettempdir()) / f"dropship-airflow-build-{tag.rsplit('-', 1)[-1]}.log"
    env = {**os.environ, "DOCKER_BUILDKIT": "0" if kind == LEGACY else "1"}
    with open(log_path, "wb") as out, ticker(tag, log_path):
        try:
            rc = subprocess.run([cli, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            rc = f"no end within {BUILD_TIMEOUT} s"
        except FileNotFoundError:
            raise DropshipError("the docker CLI is not installed", "apt-get install docker.io") from None
        if rc != 0:
            ca_dir = DEFAULT_LOCAL_CA_GLOB.split("*", 1)[0]
            fixes = build_fixes(source, "this machine", f"put the proxy's root CA (PEM, .crt) in {ca_dir} here "
                                "(or list it under ca_certificates in the inventory)", "build again")
            raise DropshipError(*failure_message(f"building the Airflow image {tag}",
                                                 log_path.read_text(errors="replace"), str(log_path),
                                                 files_note(ca_count, "the controller's"), fixes, rc))


