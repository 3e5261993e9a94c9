"""A Docker Compose project that is up, healthy and running exactly its rendered configuration."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .model import PHASE_SERVICES, Change, Resource, q


def env_file(values: list[tuple[str, str]]) -> str:
    """Compose ``env_file`` lines that Compose reads back exactly: each value in double quotes, with
    ``\\``, ``"`` and ``$`` escaped (unquoted, `` #`` starts a comment and ``$X`` is interpolated) and
    newlines as ``\\n``."""
    def quoted(value: str) -> str:
        for old, new in (("\\", "\\\\"), ('"', '\\"'), ("$", "\\$"), ("\n", "\\n"), ("\r", "\\r")):
            value = value.replace(old, new)
        return f'"{value}"'

    return "".join(f"{key}={quoted(value)}\n" for key, value in values)


@dataclass(frozen=True)
class ComposeProject(Resource):
    """``docker compose up`` when the configuration changed (a stamp of its inputs says so) or a
    service is not running/healthy; compose itself recreates only the services that changed.

    ``before_up`` runs first (e.g. the one-shot database migration of a profile service).
    """

    directory: str
    project: str
    inputs: tuple[bytes, ...]            # everything the services depend on: compose file, env, image
    services: tuple[str, ...]
    before_up: str = ""
    health_check: str = ""            # a command that must pass after `up` (e.g. an HTTP health endpoint)
    role: str = ""
    phase: int = PHASE_SERVICES     # after the configuration's handlers (e.g. PostgreSQL restarted)

    @property
    def key(self) -> str:
        return f"compose {self.project}"

    @property
    def stamp(self) -> str:
        digest = hashlib.sha256()
        for part in self.inputs:
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()

    @property
    def stamp_file(self) -> str:
        return f"{self.directory}/.dropship-up"

    def probe(self, want_content: bool = False) -> str:
        d = q(self.directory)
        return (f"echo stamp=$(cat {q(self.stamp_file)} 2>/dev/null); "
                f"command -v docker >/dev/null && [ -f {d}/compose.yaml ] && "
                f"docker compose --project-directory {d} -p {q(self.project)} ps --format json 2>/dev/null; true")

    def parse(self, output: str) -> dict:
        facts = {"stamp": "", "services": {}}
        for line in output.splitlines():
            if line.startswith("stamp="):
                facts["stamp"] = line[6:].strip()
                continue
            line = line.strip()
            if not line.startswith(("{", "[")):
                continue
            try:
                rows = json.loads(line)
            except ValueError:
                continue
            for row in rows if isinstance(rows, list) else [rows]:
                facts["services"][row.get("Service", "")] = (row.get("State", ""), row.get("Health", ""))
        return facts

    def plan(self, facts: dict) -> list[Change]:
        unhealthy = [s for s in self.services
                     if facts["services"].get(s, ("", ""))[0] != "running"
                     or facts["services"].get(s, ("", ""))[1] not in ("", "healthy")]
        if facts["stamp"] == self.stamp and not unhealthy:
            return []
        why = "configuration changed" if facts["stamp"] != self.stamp else f"not healthy: {', '.join(unhealthy)}"
        d, p = q(self.directory), q(self.project)
        compose = f"docker compose --project-directory {d} -p {p}"
        return [self.change("update", f"compose {self.project} up ({why})", [
            *([self.before_up] if self.before_up else []),
            f"{compose} up -d --remove-orphans --wait --wait-timeout 600 {' '.join(q(s) for s in self.services)}",
            *([f"(\n{self.health_check}\n)"] if self.health_check else []),
            f"echo {q(self.stamp)} > {q(self.stamp_file)}",
        ])]
