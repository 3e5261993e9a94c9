"""HTTPS terminated at the load balancer, on local droplets: lb-1 [base, nginx, lb] in front of web-1
[base, nginx, app]. The default server and the app's own server have ``tls: letsencrypt`` from
Let's Encrypt's test ACME server (pebble, on this machine; its DNS answers every name with lb-1's
address): the lb's nginx answers the HTTP-01 validations, holds the certificates and serves 443,
proxying to web-1 over the private network; web-1 stays plain HTTP. A forced renewal on the lb
reloads the lb's nginx, and a second provision changes nothing."""
from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest

from provision import balancer
from provision.providers.local import network_name, reap
from provision.state import load_droplets
from tests.acme import Pebble, network_addresses, provisioned_with_pebble
from tests.support import DEFAULTS, GUESTBOOK_SOURCE, Sandbox, docker_exec, droplet_spec, last_json, run_name

pytestmark = pytest.mark.integration

LB, WEB = "lb-1", "web-1"
NAMES = "shop.dropship.test www.shop.dropship.test"
SHOP = NAMES.split()[0]
BLOG = "blog.dropship.test"          # the app's own server: a certificate of its own, on the lb too
DEFAULTS_NO_APP = {k: v for k, v in DEFAULTS.items() if k != "app"}


def inventory(acme: dict | None) -> dict:
    on = "letsencrypt" if acme else "off"
    app = {"name": "blog", "source": str(GUESTBOOK_SOURCE), "wsgi": "guestbook:create_app()",
           "requirements": "requirements/prod.txt", "server_name": BLOG, "tls": on}
    droplets = [droplet_spec(LB, ["base", "nginx", "lb"], "s-1vcpu-1gb", warm=True),
                droplet_spec(WEB, ["base", "nginx", "app"], "s-1vcpu-2gb", warm=True)]
    return {"provider": "local", "droplets": droplets, "nginx": {"server_name": NAMES, "tls": on}, "app": app,
            **({"tls": acme} if acme else {})}


class Balanced:
    def __init__(self, box: Sandbox, pebble: Pebble):
        self.box, self.pebble = box, pebble
        self.cafile = box.root / "pebble-root.pem"
        self.cafile.write_bytes(pebble.root())

    def droplet(self, name: str = LB):
        return load_droplets(self.box.environment())[name]

    def https(self, path: str = "/", name: str = SHOP):
        """GET through the lb's port 443 for ``name``, verified against pebble's root: status, headers,
        body, peer certificate."""
        d = self.droplet()
        context = ssl.create_default_context(cafile=str(self.cafile))
        with socket.create_connection((d.address, d.port(443)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                cert = tls.getpeercert()
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                response = http.client.HTTPResponse(tls)
                response.begin()
                return response.status, dict(response.getheaders()), response.read(), cert

    def http(self, path: str, name: str = SHOP):
        d = self.droplet()
        conn = http.client.HTTPConnection(d.address, d.port(80), timeout=10)
        try:
            conn.request("GET", path, headers={"Host": name})
            response = conn.getresponse()
            response.read()
            return response.status, dict(response.getheaders())
        finally:
            conn.close()

    def run(self, host: str, script: str) -> str:
        return docker_exec(f"dropship-{self.box.env}-{host}", script)

    def status(self) -> dict:
        return last_json(self.box.invoke("tls.status", "--env", self.box.env, "--json", check=True))


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    box = Sandbox(tmp_path_factory.mktemp("lbtls"), run_name())
    box.write({box.env: inventory(None)}, DEFAULTS_NO_APP)
    box.invoke("droplet.create", "--env", box.env, check=True)
    try:
        with provisioned_with_pebble(box, LB, lambda acme: box.write({box.env: inventory(acme)},
                                                                     DEFAULTS_NO_APP)) as pebble:
            yield Balanced(box, pebble)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        reap({"dropship.env": box.env})


def test_the_lb_gets_the_certificates_through_real_http01_validations(balanced):
    log = (balanced.box.root / "pebble.log").read_text()
    for name in NAMES.split() + [BLOG]:
        assert f"Attempting to validate w/ HTTP: http://{name}:80/.well-known/acme-challenge/" in log, log[-3000:]
    assert "set VALID by completed challenge" in log and "set INVALID" not in log
    access = balanced.run(LB, "grep -h 'GET /.well-known/acme-challenge/' /var/log/nginx/access.log")
    assert any(line.startswith(balanced.pebble.gateway + " ") and '" 200 ' in line for line in access.splitlines())
    status = balanced.status()
    assert [(c["name"], sorted(c["names"]), c["state"]) for c in status[LB]["certificates"]] == [
        (BLOG, [BLOG], "live"), (SHOP, sorted(NAMES.split()), "live")]
    assert all("Pebble" in c["issuer"] and c["days_left"] > 30 for c in status[LB]["certificates"])
    assert status[WEB]["certificates"] == []
    text = balanced.box.invoke("tls.status", "--env", balanced.box.env, check=True).stdout
    assert f"lb-1:\n  certificate {BLOG}: expires " in text and f"certificate {NAMES}: expires " in text
    assert "web-1:\n  no certificates" in text


def test_https_through_the_lb_proxies_to_the_web_host_and_http_redirects(balanced):
    # the upstream is the deploys' (no release yet: the lb's placeholder); point it at web-1 as a deploy would
    net = network_name(balanced.box.env)
    address = network_addresses(net, f"dropship-{balanced.box.env}-{WEB}")[1]
    balanced.run(LB, balancer.upstream_command(balancer.backends([WEB], {WEB: address}), "put back"))

    for name in NAMES.split():
        status, headers, body, cert = balanced.https("/nginx-health", name)   # verified: pebble's chain, the name
        assert status == 200 and body == b"ok\n"
        assert headers["Strict-Transport-Security"] == "max-age=63072000"
        assert ("DNS", name) in cert["subjectAltName"]
    status, _, _, cert = balanced.https("/nginx-health", BLOG)
    assert status == 200 and cert["subjectAltName"] == (("DNS", BLOG),)
    # through to web-1's nginx over the private network: its default server's page names the host
    status, headers, body, _ = balanced.https("/?through=lb")
    assert status == 200 and b"web-1" in body and headers["Strict-Transport-Security"] == "max-age=63072000"
    seen = balanced.run(WEB, "grep -h 'GET /?through=lb' /var/log/nginx/access.log")
    lb_address = network_addresses(net, f"dropship-{balanced.box.env}-{LB}")[1]
    assert seen.startswith(lb_address + " "), seen

    status, headers = balanced.http("/some/page?x=1")
    assert (status, headers["Location"]) == (301, f"https://{SHOP}/some/page?x=1")
    assert "Strict-Transport-Security" not in headers
    assert balanced.http("/", BLOG)[1]["Location"] == f"https://{BLOG}/"
    assert balanced.http("/.well-known/acme-challenge/missing-token")[0] == 404


def test_the_web_host_has_no_certificate_and_no_https_server(balanced):
    out = balanced.run(WEB, "ls -A /etc/dropship/tls /etc/letsencrypt/live 2>/dev/null | grep -v ':$' | grep . || "
                            "echo none; nginx -T 2>/dev/null | grep -c 'listen .*443' || true; "
                            "ls /etc/nginx/dropship | grep -c '^tls-' || true; "
                            "systemctl is-enabled dropship-certbot-renew.timer 2>&1 || true")
    lines = out.split()
    assert lines[:3] == ["none", "0", "0"], out
    assert "enabled" not in lines[3:], out
    # its apps get the scheme the lb's clients used, trusted from the lb's private address alone
    lb_address = network_addresses(network_name(balanced.box.env), f"dropship-{balanced.box.env}-{LB}")[1]
    conf = balanced.run(WEB, "nginx -T 2>/dev/null")
    assert f"    {lb_address} 1;\n" in conf and "X-Forwarded-Proto $dropship_forwarded_proto;" in conf, conf[-3000:]


def test_a_forced_renewal_on_the_lb_reloads_its_nginx(balanced):
    before = int(balanced.https("/nginx-health")[3]["serialNumber"], 16)
    balanced.run(LB, "systemctl set-environment DROPSHIP_RENEW_FLAGS=--force-renewal && "
                     "systemctl start dropship-certbot-renew.service; rc=$?; "
                     "systemctl unset-environment DROPSHIP_RENEW_FLAGS; exit $rc")
    deadline = time.monotonic() + 15       # the hook's reload is a signal: the old workers finish first
    while int(balanced.https("/nginx-health")[3]["serialNumber"], 16) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert int(balanced.https("/nginx-health")[3]["serialNumber"], 16) != before
    renewal = balanced.status()[LB]["renewal"]
    assert renewal["result"] == "success" and renewal["exit_status"] == 0


def test_second_provision_changes_nothing(balanced):
    report, proc = balanced.box.provision_json()
    assert report["ok"], proc.stdout[-3000:]
    assert {h: r["changed"] for h, r in report["hosts"].items()} == {LB: 0, WEB: 0}, proc.stdout[-3000:]
