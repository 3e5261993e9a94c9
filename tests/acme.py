"""Let's Encrypt's test ACME server on this machine for the HTTPS tests: Debian's ``pebble``, and
its ``pebble-challtestsrv`` as the DNS server pebble asks, answering every name with a droplet's
address. Pebble's API listens on the droplets' network gateway (where droplets reach this
machine), behind a certificate of a CA made here; DNS and the management API stay on loopback.
HTTP-01 validations go from pebble to the droplet's port 80: nothing is "always valid"."""
from __future__ import annotations

from contextlib import contextmanager
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca_and_server_cert(folder: Path, addresses: list[str], names: tuple[str, ...] = ("localhost",),
                            prefix: str = "") -> tuple[Path, Path, Path]:
    """A CA (``ca.pem``) and a certificate for ``addresses`` and ``names`` it signed (``cert.pem``,
    ``key.pem``), each file name after ``prefix``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dropship test ACME API CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses] + [x509.DNSName(n) for n in names]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / f"{prefix}ca.pem", folder / f"{prefix}cert.pem", folder / f"{prefix}key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_key_pem(key))
    return paths


def network_addresses(network: str, container: str) -> tuple[str, str]:
    """(the gateway of a Docker network: this machine there, the container's address on it)."""
    net = json.loads(subprocess.run(["docker", "network", "inspect", network], capture_output=True, text=True,
                                    check=True).stdout)[0]
    gateway = net["IPAM"]["Config"][0]["Gateway"]
    address = net["Containers"]
    found = [c["IPv4Address"].split("/")[0] for c in address.values() if c["Name"] == container]
    assert found, f"{container} is not on {network}"
    return gateway, found[0]


@contextmanager
def provisioned_with_pebble(box, host: str, write):
    """Pebble validating against ``host``, a created droplet of the sandbox ``box``: ``write(acme)``
    rewrites the inventory with these ACME settings, the provision must succeed; yields pebble."""
    from provision.providers.local import network_name

    gateway, address = network_addresses(network_name(box.env), f"dropship-{box.env}-{host}")
    with Pebble(box.root, gateway, address) as pebble:
        write({"acme_server": pebble.directory, "acme_ca": str(pebble.ca), "email": "ops@dropship.test"})
        report, proc = box.provision_json()
        assert report["ok"], f"provision failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        yield pebble


class Pebble:
    """pebble + pebble-challtestsrv, started by ``start`` and stopped by ``stop`` (a context manager)."""

    def __init__(self, folder: Path, gateway: str, target: str):
        self.folder, self.gateway, self.target = folder, gateway, target
        self.port, self.management = free_port(gateway), free_port("127.0.0.1")
        self.dns, self.dns_management = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.ca, self.cert, self.key = make_ca_and_server_cert(folder, [gateway, "127.0.0.1"])
        self.procs: list[subprocess.Popen] = []

    @property
    def directory(self) -> str:
        return f"https://{self.gateway}:{self.port}/dir"

    def start(self) -> "Pebble":
        config = self.folder / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{self.gateway}:{self.port}", "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(self.cert), "privateKey": str(self.key), "httpPort": 80, "tlsPort": 443,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        log = open(self.folder / "pebble.log", "ab")
        self.procs.append(subprocess.Popen(
            ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.dns}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_management}",
             "-defaultIPv4", self.target, "-defaultIPv6", ""], stdout=log, stderr=log))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self.procs.append(subprocess.Popen(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns}"],
                                           stdout=log, stderr=log, env=env, cwd=self.folder))
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get(self.directory)
                return self
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    raise RuntimeError(f"pebble did not start: {(self.folder / 'pebble.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.read()

    def root(self) -> bytes:
        """The PEM of the root that pebble's certificates chain to (made anew at every start)."""
        return self.get(f"https://127.0.0.1:{self.management}/roots/0")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()

    def __enter__(self) -> "Pebble":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
