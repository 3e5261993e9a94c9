"""HTTPS end to end on a local droplet: certificates from Let's Encrypt's test ACME server
(pebble, on this machine) through real HTTP-01 validations of the droplet's nginx (the names
resolve to the droplet through pebble's challenge test DNS server), HTTP redirected, HSTS, a
forced renewal through the renewal timer's service under HTTPS load, and a second provision
that changes nothing."""
from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest

from provision.state import load_droplets
from tests.acme import Pebble, make_ca_and_server_cert, provisioned_with_pebble
from tests.loadgen import LoadGenerator
from tests.support import (DEFAULTS, GUESTBOOK_SOURCE, Sandbox, docker_exec, droplet_spec, last_json, one_error_line,
                           run_name)

pytestmark = pytest.mark.integration

NAMES = "shop.dropship.test www.shop.dropship.test"
SHOP = NAMES.split()[0]
BLOG = "blog.dropship.test"          # an app's server of its own: a certificate of its own


class TlsDroplet:
    def __init__(self, box: Sandbox, pebble: Pebble):
        self.box, self.pebble = box, pebble
        self.root_pem = pebble.root()
        self.cafile = box.root / "pebble-root.pem"
        self.cafile.write_bytes(self.root_pem)

    @property
    def droplet(self):
        return load_droplets(self.box.environment())["web-1"]

    def https(self, path: str = "/", name: str = SHOP) -> tuple[int, dict, bytes, dict]:
        """GET over HTTPS for ``name`` (SNI and Host), verified against pebble's root: status, headers,
        body, and the peer certificate."""
        d = self.droplet
        context = ssl.create_default_context(cafile=str(self.cafile))
        with socket.create_connection((d.address, d.port(443)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                cert = tls.getpeercert()
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                response = http.client.HTTPResponse(tls)
                response.begin()
                return response.status, dict(response.getheaders()), response.read(), cert

    def http(self, path: str, name: str = SHOP) -> tuple[int, dict]:
        d = self.droplet
        conn = http.client.HTTPConnection(d.address, d.port(80), timeout=10)
        try:
            conn.request("GET", path, headers={"Host": name})
            response = conn.getresponse()
            response.read()
            return response.status, dict(response.getheaders())
        finally:
            conn.close()

    def run(self, script: str) -> str:
        return docker_exec(f"dropship-{self.box.env}-web-1", script)

    def serial(self) -> int:
        return int(self.https()[3]["serialNumber"], 16)


def inventory(acme: dict | None) -> dict:
    """A droplet whose default server is ``NAMES`` and whose app (no database, not deployed) has a
    server of its own, ``BLOG``: both with ``tls: letsencrypt`` from the ACME server ``acme``."""
    on = "letsencrypt" if acme else "off"
    app = {"name": "blog", "source": str(GUESTBOOK_SOURCE), "wsgi": "guestbook:create_app()",
           "requirements": "requirements/prod.txt", "server_name": BLOG, "tls": on}
    return {"provider": "local", "droplets": [droplet_spec("web-1", ["base", "nginx", "app"], warm=True)],
            "nginx": {"server_name": NAMES, "tls": on}, "app": app, **({"tls": acme} if acme else {})}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    box = Sandbox(tmp_path_factory.mktemp("tls"), run_name())
    defaults = {k: v for k, v in DEFAULTS.items() if k != "app"}
    box.write({box.env: inventory(None)}, defaults)
    box.invoke("droplet.create", "--env", box.env, check=True)
    try:
        with provisioned_with_pebble(box, "web-1", lambda acme: box.write({box.env: inventory(acme)},
                                                                          defaults)) as pebble:
            yield TlsDroplet(box, pebble)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")


def test_certificate_is_issued_through_a_real_http01_validation(tls):
    log = (tls.box.root / "pebble.log").read_text()
    for name in NAMES.split():
        assert f"Attempting to validate w/ HTTP: http://{name}:80/.well-known/acme-challenge/" in log, log[-3000:]
    assert "set VALID by completed challenge" in log and "set INVALID" not in log
    # ...and the droplet's nginx answered pebble's validation authority (this machine, on the droplets' network)
    access = tls.run("grep -h 'GET /.well-known/acme-challenge/' /var/log/nginx/access.log")
    assert any(line.startswith(tls.pebble.gateway + " ") and '" 200 ' in line for line in access.splitlines()), access
    status = last_json(tls.box.invoke("tls.status", "--env", tls.box.env, "--json", check=True))["web-1"]
    assert [(c["name"], sorted(c["names"]), c["state"]) for c in status["certificates"]] == [
        (BLOG, [BLOG], "live"), (SHOP, sorted(NAMES.split()), "live")]
    assert all("Pebble" in c["issuer"] and c["days_left"] > 30 for c in status["certificates"])
    text = tls.box.invoke("tls.status", "--env", tls.box.env, check=True).stdout
    assert f"certificate {BLOG}: expires " in text and "renewal: never run" in text


def test_https_chains_to_pebble_root_and_http_redirects(tls):
    for name in NAMES.split():
        status, headers, body, cert = tls.https("/", name)           # verified: chain to pebble's root, name
        assert status == 200 and b"web-1" in body
        assert headers["Strict-Transport-Security"] == "max-age=63072000"
    status, headers, _, cert = tls.https("/nginx-health", BLOG)      # the app's own server, its own certificate
    assert status == 200 and cert["subjectAltName"] == (("DNS", BLOG),)
    assert tls.http("/", BLOG)[1]["Location"] == f"https://{BLOG}/"
    status, headers = tls.http("/some/page?x=1")
    assert (status, headers["Location"]) == (301, f"https://{SHOP}/some/page?x=1")
    assert "Strict-Transport-Security" not in headers                 # HSTS only over HTTPS
    status, _ = tls.http("/.well-known/acme-challenge/missing-token")
    assert status == 404                                              # challenges are answered, not redirected
    with pytest.raises(ssl.SSLCertVerificationError):                 # not trusted without pebble's root
        d = tls.droplet
        with socket.create_connection((d.address, d.port(443)), timeout=10) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname=SHOP)


def test_forced_renewal_through_the_timer_service_reloads_nginx_without_a_failed_request(tls):
    before = tls.serial()
    d = tls.droplet
    with LoadGenerator(f"https://127.0.0.1:{d.port(443)}/", rate=25, concurrency=4, server_name=SHOP,
                       cafile=str(tls.cafile), max_seconds=300) as gen:
        time.sleep(1)
        tls.run("systemctl set-environment DROPSHIP_RENEW_FLAGS=--force-renewal && "
                "systemctl start dropship-certbot-renew.service; rc=$?; "
                "systemctl unset-environment DROPSHIP_RENEW_FLAGS; exit $rc")
        time.sleep(2)
        stats = gen.stop()
    assert stats.failed == 0 and stats.total > 50, stats.summary()
    assert tls.serial() != before                                       # nginx serves the renewed certificate
    status = last_json(tls.box.invoke("tls.status", "--env", tls.box.env, "--json", check=True))["web-1"]
    assert status["renewal"]["result"] == "success" and status["renewal"]["exit_status"] == 0
    assert "dropship-certbot-renew.timer" in tls.run("systemctl list-timers --all --no-pager")


def test_second_provision_changes_nothing(tls):
    report, proc = tls.box.provision_json()
    assert report["ok"] and report["hosts"]["web-1"]["changed"] == 0, proc.stdout[-3000:]


def test_custom_certificate_given_as_secrets(tls):
    folder = tls.box.root / "custom"
    folder.mkdir()
    ca, cert, key = make_ca_and_server_cert(folder, [], names=tuple(NAMES.split()))
    _, _, other_key = make_ca_and_server_cert(folder, [], names=(SHOP,), prefix="other-")
    acme = {"acme_server": tls.pebble.directory, "acme_ca": str(tls.pebble.ca)}
    custom = inventory(acme)
    custom["nginx"]["tls"] = {"custom": {"certificate": {"env": "SHOP_CERT"}, "key": {"env": "SHOP_KEY"}}}
    tls.box.write({tls.box.env: custom}, {k: v for k, v in DEFAULTS.items() if k != "app"})
    before = tls.serial()

    wrong = tls.box.invoke("provision", "--env", tls.box.env,
                           env={"SHOP_CERT": cert.read_text(), "SHOP_KEY": other_key.read_text()})
    line = one_error_line(wrong)
    assert wrong.returncode == 1 and "the key does not belong to the certificate" in line and "SHOP_KEY" in line
    assert "PRIVATE KEY" not in wrong.stdout + wrong.stderr and tls.serial() == before   # nothing touched

    report, proc = tls.box.provision_json(env={"SHOP_CERT": cert.read_text(), "SHOP_KEY": key.read_text()})
    assert report["ok"], proc.stdout[-3000:]
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    assert f"delete certbot's lineage of {SHOP}" in proc.stdout + proc.stderr     # nothing renews it any more
    assert tls.run("ls -1 /etc/letsencrypt/renewal").split() == [f"{BLOG}.conf"]
    tls.cafile.write_bytes(ca.read_bytes())
    try:
        assert tls.https("/", "www.shop.dropship.test")[0] == 200            # verified against our own CA now
    finally:
        tls.cafile.write_bytes(tls.root_pem)
    # The next test takes the default server back to Let's Encrypt.


def test_https_turned_off_leaves_no_certificate_key_or_renewal_behind(tls):
    """A server whose HTTPS is turned off (or moved to a load balancer) loses its certificate, key,
    certbot lineage and snippet; the last one takes the renewal timer with it. The same run takes
    the default server from the certificate given as secrets (the test before) back to Let's
    Encrypt: its lineage is linked again, and nginx reloads in between (the blog's site changed)."""
    acme = {"acme_server": tls.pebble.directory, "acme_ca": str(tls.pebble.ca)}
    defaults = {k: v for k, v in DEFAULTS.items() if k != "app"}
    blog_off = inventory(acme)
    blog_off["app"]["tls"] = "off"
    tls.box.write({tls.box.env: blog_off}, defaults)
    report, proc = tls.box.provision_json()
    assert report["ok"], proc.stdout[-3000:]
    assert f"remove the certificate for {BLOG}" in proc.stderr + proc.stdout
    assert f"obtain the certificate for {NAMES}" in proc.stderr + proc.stdout   # its lineage was deleted
    assert tls.run("ls -1 /etc/dropship/tls /etc/letsencrypt/renewal").split() == [
        "/etc/dropship/tls:", SHOP, "/etc/letsencrypt/renewal:", f"{SHOP}.conf"]
    assert tls.run(f"ls /etc/nginx/dropship/tls-{BLOG}.conf 2>&1; true").strip().endswith("No such file or directory")
    assert tls.https("/")[0] == 200 and tls.http("/", BLOG)[0] != 301      # shop: pebble's again; blog is plain
    assert "dropship-certbot-renew.timer" in tls.run("systemctl list-timers --all --no-pager")

    tls.box.write({tls.box.env: inventory(None)}, defaults)
    report, proc = tls.box.provision_json()
    assert report["ok"], proc.stdout[-3000:]
    assert tls.run("ls -A /etc/dropship/tls /etc/letsencrypt/renewal; ls /etc/systemd/system/dropship-certbot-*; "
                   "true").split() == ["/etc/dropship/tls:", "/etc/letsencrypt/renewal:"]
    assert tls.run("systemctl show -p LoadState -p ActiveState dropship-certbot-renew.timer").split() == [
        "LoadState=not-found", "ActiveState=inactive"]                      # stopped, gone: it never fires again
    assert tls.http("/")[0] == 200                                          # plain HTTP, no redirect
    report, proc = tls.box.provision_json()
    assert report["ok"] and report["hosts"]["web-1"]["changed"] == 0, proc.stdout[-3000:]
