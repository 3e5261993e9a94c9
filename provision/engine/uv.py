"""uv, the Python package installer the hosts build virtualenvs with: one pinned version, installed
once per host in a folder of its own, and the commands that use it. Builders are pure."""
from __future__ import annotations

from dataclasses import dataclass

from .model import PHASE_CONFIG, Change, Resource, q

UV_VERSION = "0.13.9"          # as requirements.txt pins it for the controller (a unit test checks)
UV_HOME = f"/usr/local/lib/dropship/uv-{UV_VERSION}"
UV = f"{UV_HOME}/bin/uv"
UV_CACHE = "/var/cache/dropship/uv"
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"

# uv trusts the system's CA store (a TLS-inspecting proxy's CA installed by ca_certificates), not
# its own bundled roots; one cache per host, so a changed requirement fetches only what is new.
UV_ENV = f"UV_SYSTEM_CERTS=1 UV_CACHE_DIR={UV_CACHE} UV_NO_PROGRESS=1"


def install_command() -> str:
    """uv ``UV_VERSION`` from PyPI into ``UV_HOME`` (a virtualenv of its own; pip trusts the system's
    CAs); a half-made folder is removed first."""
    home = q(UV_HOME)
    return (f"rm -rf {home}\n"
            f"python3 -m venv {home}\n"
            f"PIP_CERT={SYSTEM_CAS} {home}/bin/pip install --disable-pip-version-check -q uv=={UV_VERSION} || "
            f"{{ rm -rf {home}; exit 1; }}\n"
            f"install -d -m 0755 {q(UV_CACHE)}")


LOCKED = ".dropship-locked.txt"      # beside a pyproject.toml: its uv.lock's pins, as requirements


def project_dir(requirements: str) -> str | None:
    """The project folder when ``requirements`` is a ``pyproject.toml`` (the project itself is installed), else None."""
    folder, _, name = requirements.rpartition("/")
    return (folder or ".") if name == "pyproject.toml" else None


def install_args(requirements: str) -> str:
    """What to install: ``-r FILE``; for a ``pyproject.toml`` the project itself, editable (its
    dependencies with it, pinned by ``LOCKED``: see ``export_lock_command``)."""
    folder = project_dir(requirements)
    if folder is None:
        return f"-r {q(requirements)}"
    return f"-r {q(folder + '/' + LOCKED)} -e {q(folder)}"


def export_lock_command(requirements: str) -> str:
    """For a ``pyproject.toml``: write ``LOCKED`` beside it, the pins of the ``uv.lock`` there (no dev
    group, not the project), or nothing when there is no lock or no uv; empty for a requirements file.
    The lock is taken as it is (``--frozen``): whether it still matches its pyproject is checked on the
    controller (``lock_check_argv``), with the developer's Python: a project without ``requires-python``
    locks for the Python that locked it, and a host's other Python would call that lock stale. The
    file is removed first: a release starts as hard links to the previous one."""
    folder = project_dir(requirements)
    if folder is None:
        return ""
    d, out = q(folder), q(folder + "/" + LOCKED)
    return (f"rm -f {out}\n"
            f"if [ -e {d}/uv.lock ] && [ -x {UV} ]; then\n"
            f"  (cd {d} && {UV_ENV} {UV} export -q --frozen --no-dev --no-hashes --no-emit-project --no-header "
            f"--no-annotate --format requirements-txt -o {LOCKED}) || "
            f"{{ echo {q('reading ' + folder + '/uv.lock failed (see above)')}; exit 1; }}\n"
            f"else\n"
            f"  : > {out}\n"
            f"fi")


LOCK_STALE = "needs to be updated"      # what ``uv lock --check`` says of a lock its pyproject outgrew


def lock_check_argv(uv: str, offline: bool) -> list[str]:
    """``uv lock --check`` of the project in the working folder, run on the controller: it writes
    nothing and downloads no Python; ``offline``, a current lock needs no index."""
    return [uv, "lock", "--check", "--no-python-downloads", "-q"] + (["--offline"] if offline else [])


def venv_commands(venv: str, requirements: str) -> str:
    """Create ``venv`` (relocatable, so that a later one can start as its copy; with pip, as
    ``python3 -m venv`` would) and install ``requirements`` into it, bytecode compiled: the app's
    user cannot write it into the root-owned venv, and without it every process would compile its
    imports afresh (about 0.8 s of CPU for a Flask + SQLAlchemy app)."""
    return (f"{UV_ENV} {UV} venv -q --seed --relocatable --python /usr/bin/python3 {q(venv)} && "
            f"{UV_ENV} {UV} pip install -q --compile-bytecode --python {q(venv + '/bin/python')} "
            f"{install_args(requirements)}")


def seed_command(venvs: str) -> str:
    """Set ``$seed`` to the newest complete relocatable venv in ``venvs`` made for this host's
    python3 (empty when there is none)."""
    return (f'seed=; py=$(basename "$(readlink -f /usr/bin/python3)")\n'
            f"for m in {q(venvs)}/*/.complete; do\n"
            f'  s=${{m%/.complete}}\n'
            f'  [ -e "$m" ] && [ -d "$s/lib/$py" ] && grep -qx "relocatable = true" "$s/pyvenv.cfg" || continue\n'
            f'  {{ [ -z "$seed" ] || [ "$m" -nt "$seed/.complete" ]; }} && seed=$s\n'
            f"done")


def seeded_venv_commands(seed: str, venv: str, requirements: str) -> str:
    """Make ``venv`` from the venv at shell word ``seed``: hard links, as uv links its cache (nothing
    in a venv is written in place), then exactly what ``requirements`` resolve to afresh (``--upgrade``:
    the seed's versions are no preference, so the venv gets the resolution a new one would): only
    packages that differ are installed and compiled (the files linked or written after the mark:
    their inodes changed since). A seed made before the mark existed may hold a ``requirements.lock``."""
    v, py, mark = q(venv), q(venv + "/bin/python"), q(venv + "/.linked")
    return (f"cp -al {seed} {v} && rm -f {v}/.complete {v}/.bytecode {v}/requirements.lock && touch {mark} && "
            f"{UV_ENV} {UV} pip install -q --exact --upgrade --python {py} {install_args(requirements)} && "
            f"{{ find {v}/lib -cnewer {mark} -name '*.py' | {py} -m compileall -q -i - >/dev/null 2>&1 || true; }}")


@dataclass(frozen=True)
class UvTool(Resource):
    """uv ``UV_VERSION`` at ``UV``."""

    role: str = ""
    phase: int = PHASE_CONFIG

    @property
    def key(self) -> str:
        return "uv"

    def probe(self, want_content: bool = False) -> str:
        return f"{UV} --version 2>/dev/null || true"

    def plan(self, facts: str) -> list[Change]:
        if facts.split()[1:2] == [UV_VERSION]:
            return []
        return [self.change("install", f"install uv {UV_VERSION} (builds the apps' virtualenvs)",
                            [install_command()], fix="check that the host reaches PyPI, then re-run provision")]
