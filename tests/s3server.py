"""A local S3-compatible server (moto) for the backup tests and bench: bound to the gateway address of
an environment's droplet network only, with that network kept across droplet.destroy/create."""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def moto_command() -> list[str]:
    """``moto_server`` of this Python (requirements.txt), or of ``$DROPSHIP_MOTO_SERVER``."""
    override = os.environ.get("DROPSHIP_MOTO_SERVER")
    return shlex.split(override) if override else [sys.executable, "-m", "moto.server"]


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@dataclass
class S3Server:
    env: str
    address: str = ""
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self, log: Path) -> "S3Server":
        """Create the environment's droplet network (as droplet.create would) with an anchor container that
        keeps it, and its gateway address, while the droplets are destroyed and created again; start moto."""
        from provision.providers.local import network_name

        net = network_name(self.env)
        if subprocess.run(["docker", "network", "inspect", net], capture_output=True).returncode != 0:
            _docker("network", "create", "--label", f"dropship.env={self.env}", net)
        image = _docker("images", "-q", "--filter", "reference=dropship/droplet:*").split()
        assert image, "no local droplet image: create a droplet first (droplet.create builds it)"
        _docker("run", "-d", "--rm", "--name", f"dropship-{self.env}-s3anchor", "--label", f"dropship.env={self.env}",
                "--network", net, "--entrypoint", "sleep", image[0], "infinity")
        self.address = _docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", net)
        self.port = _free_port(self.address)
        self.process = subprocess.Popen(moto_command() + ["-H", self.address, "-p", str(self.port)],
                                        stdout=log.open("wb"), stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).read()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None:
                    raise AssertionError(f"moto_server ended: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        raise AssertionError("moto_server did not answer")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        _docker("rm", "-f", f"dropship-{self.env}-s3anchor", check=False)

    def request(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        import re

        status, body = self.request("GET", f"/{bucket}?list-type=2&prefix={prefix}")
        assert status == 200, body[:500]
        return re.findall(r"<Key>([^<]+)</Key>", body.decode())
