"""HTTPS at the load balancer (pure): which host holds the certificates of the default server and
the apps' own servers (the lb's, never the web hosts behind it), the lb's site with its 443 servers
by its exact text, and the inventory's rule on the firewall."""
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from provision import balancer as lb
from provision.engine.certs import Certificate, Placeholder, RetiredCertificates
from provision.engine.files import Absent, File
from provision.errors import InventoryError
from provision.facts import SystemFacts
from provision.inventory import SecretRef, ServerTls, load_inventory
from provision.roles import RoleContext
from provision.roles import lb as lb_role
from provision.roles import nginx as nginx_role
from provision.roles import tls as tls_role
from provision.roles.app import site_config as app_site
from provision.roles.base import firewall_rules
from tests.unit.test_inventory import assert_located
from tests.unit.test_templates import with_airflow

INVENTORY = """\
environments:
  e:
    provider: local
    droplets:
      - name: lb-1
        size: s-1vcpu-1gb
        roles: [base, nginx, lb]
      - name: web-1
        size: s-1vcpu-1gb
        roles: [base, nginx, app]
      - name: db-1
        size: s-1vcpu-1gb
        roles: [base, postgres]
    nginx: {server_name: example.com www.example.com, tls: letsencrypt}
    apps:
      - name: names
        database: {name: names, user: names, password: {secret: app_db_password}}
      - name: shop
        server_name: shop.example.com
        tls: letsencrypt
      - name: blog
        server_name: blog.example.com
        tls: off
"""
ADDRESSES = {"lb-1": "10.110.0.2", "web-1": "10.110.0.3", "db-1": "10.110.0.5"}
FACTS = SystemFacts("debian", "13", "trixie", "none", 4096, 2)

PROXY = """\
    location = /nginx-health {
        access_log off;
        default_type text/plain;
        return 200 "ok\\n";
    }

    location / {
        proxy_pass http://dropship_web;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_next_upstream error timeout;
        proxy_connect_timeout 5s;
        proxy_read_timeout 60s;
    }
}
"""


def load(tmp_path: Path, text: str = INVENTORY):
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)["e"]


def refused(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    return info.value


def ctx(env, host: str) -> RoleContext:
    return RoleContext(env, env.host(host), FACTS, "ssh-ed25519 AAAA", {}, "", dict(ADDRESSES), ())


# --- the lb's site --------------------------------------------------------------------------------

def test_lb_site_with_https_has_a_server_per_certificate_each_including_its_snippet(tmp_path):
    env = load(tmp_path)
    assert lb.site_servers(env) == [("example.com www.example.com", "example.com www.example.com"),
                                    ("shop.example.com", "shop.example.com"),
                                    ("blog.example.com", "blog.example.com")]
    assert lb_role.site_config(ctx(env, "lb-1")).decode() == """\
# Managed by Dropship (lb role): the web hosts behind one address; deploys rewrite the upstream file.
upstream dropship_web {
    include /etc/nginx/dropship/lb-upstream.conf;
    keepalive 32;
}

# While no web host serves (the upstream's placeholder).
server {
    listen 127.0.0.1:8099;
    access_log off;
    default_type text/plain;
    return 503 "no web host serves yet\\n";
}

server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name example.com www.example.com;
    server_tokens off;
    include /etc/nginx/dropship/tls-example.com.conf;

""" + PROXY + """
server {
    listen 80;
    listen [::]:80;
    server_name shop.example.com;
    server_tokens off;
    include /etc/nginx/dropship/tls-shop.example.com.conf;

""" + PROXY + """
server {
    listen 80;
    listen [::]:80;
    server_name blog.example.com;
    server_tokens off;

""" + PROXY


def test_lb_site_without_https_keeps_one_server_for_every_name(tmp_path):
    env = load(tmp_path, INVENTORY.replace("tls: letsencrypt", "tls: off"))
    assert lb.site_servers(env) == [("example.com www.example.com shop.example.com blog.example.com",
                                     "example.com www.example.com")]
    assert "include /etc/nginx/dropship/tls-" not in lb_role.site_config(ctx(env, "lb-1")).decode()


def test_an_app_with_https_gets_its_own_lb_server_while_the_default_server_stays_plain(tmp_path):
    env = load(tmp_path, INVENTORY.replace("www.example.com, tls: letsencrypt", "www.example.com, tls: off"))
    assert lb.site_servers(env) == [("example.com www.example.com blog.example.com", "example.com www.example.com"),
                                    ("shop.example.com", "shop.example.com")]
    site = lb_role.site_config(ctx(env, "lb-1")).decode()
    assert site.count("    include /etc/nginx/dropship/tls-") == 1
    assert "    server_name shop.example.com;\n    server_tokens off;\n" \
           "    include /etc/nginx/dropship/tls-shop.example.com.conf;\n" in site


# --- which host holds the certificates ------------------------------------------------------------

def test_the_lb_holds_the_certificates_and_the_web_hosts_stay_plain(tmp_path):
    env = load(tmp_path)
    found = tls_role.servers(ctx(env, "lb-1"))
    assert [(t.names, t.tls.mode, t.default) for t in found] == [
        ("example.com www.example.com", "letsencrypt", True), ("shop.example.com", "letsencrypt", False)]
    assert tls_role.packages(ctx(env, "lb-1")) == ["openssl", "certbot"]
    for host in ("web-1", "db-1"):
        assert tls_role.servers(ctx(env, host)) == [] and tls_role.packages(ctx(env, host)) == []
        assert tls_role.resources(ctx(env, host)) == tls_role.retired([])    # nothing of HTTPS left behind
    assert [tls_role.terminates_web(env, h) for h in env.hosts] == [True, False, False]
    # web-1's sites have no 443 server: no snippet to include
    web = ctx(env, "web-1")
    for app in env.settings.apps:
        assert b"include /etc/nginx/dropship/tls-" not in app_site(web, app)
        assert b"443" not in app_site(web, app)


def test_the_lbs_nginx_role_obtains_the_certificates_and_renews_them_reloading_its_nginx(tmp_path):
    env = load(tmp_path)
    res = nginx_role.resources(ctx(env, "lb-1"))
    assert [(c.cert_name, c.names) for c in res if isinstance(c, Certificate)] == [
        ("example.com", ("example.com", "www.example.com")), ("shop.example.com", ("shop.example.com",))]
    assert [r.key for r in res if isinstance(r, Placeholder)] == [
        "certificate files /etc/dropship/tls/example.com", "certificate files /etc/dropship/tls/shop.example.com"]
    files = {r.path: r for r in res if isinstance(r, File)}
    assert "listen 443 ssl default_server;" in files["/etc/nginx/dropship/tls-example.com.conf"].content.decode()
    assert "listen 443 ssl;" in files["/etc/nginx/dropship/tls-shop.example.com.conf"].content.decode()
    assert files["/etc/dropship/certbot-deploy-hook"].content.endswith(b"exec systemctl reload nginx\n")
    assert "--deploy-hook /etc/dropship/certbot-deploy-hook" in \
        files["/etc/systemd/system/dropship-certbot-renew.service"].content.decode()
    assert not any(isinstance(r, (Certificate, Placeholder)) for r in nginx_role.resources(ctx(env, "web-1")))


def test_without_an_lb_the_web_host_keeps_its_certificates(tmp_path):
    env = load(tmp_path, INVENTORY.replace("""\
      - name: lb-1
        size: s-1vcpu-1gb
        roles: [base, nginx, lb]
""", ""))
    assert [t.names for t in tls_role.servers(ctx(env, "web-1"))] == ["example.com www.example.com",
                                                                      "shop.example.com"]


def test_airflows_own_server_stays_with_the_airflow_host(tmp_path):
    airflow = with_airflow(ctx(load(tmp_path), "db-1"), server_name="airflow.example.com", url_path="",
                           tls=ServerTls("letsencrypt"))
    assert [t.names for t in tls_role.servers(airflow)] == ["airflow.example.com"]
    on_lb = replace(airflow, host=airflow.env.host("lb-1"))
    assert [t.names for t in tls_role.servers(on_lb)] == ["example.com www.example.com", "shop.example.com"]


def test_the_web_hosts_firewall_still_lets_in_port_80_from_the_lb(tmp_path):
    env = load(tmp_path)
    assert firewall_rules(ctx(env, "web-1"))[-1] == "80/tcp from 10.110.0.2"


# --- the inventory --------------------------------------------------------------------------------

@pytest.mark.parametrize("allow, port", [("[22, 80]", "443"), ("[22, 443]", "80")])
def test_https_at_the_lb_needs_80_and_443_allowed(tmp_path, allow, port):
    err = refused(tmp_path, INVENTORY + f"    firewall: {{allow: {allow}}}\n")
    assert_located(err, tmp_path, 24, "environments.e.firewall.allow",
                   f"host 'lb-1' serves HTTPS for the web hosts, and {port} is not allowed",
                   f"add {port} to firewall.allow")


def test_the_firewall_rule_only_applies_with_https_at_an_lb(tmp_path):
    load(tmp_path, INVENTORY.replace("tls: letsencrypt", "tls: off") + "    firewall: {allow: [22, 80]}\n")
    load(tmp_path, INVENTORY.replace("""\
      - name: lb-1
        size: s-1vcpu-1gb
        roles: [base, nginx, lb]
""", "") + "    firewall: {allow: [22, 80]}\n")


# --- the scheme the apps behind the lb see ---------------------------------------------------------

def test_web_hosts_pass_on_the_lbs_scheme_trusted_from_the_lb_alone(tmp_path):
    env = load(tmp_path)
    conf = {r.path: r for r in nginx_role.resources(ctx(env, "web-1")) if isinstance(r, File)}
    assert conf["/etc/nginx/conf.d/00-dropship.conf"].content.decode().endswith("""\
# The scheme an app's clients used: a web host's own, or behind the load balancer the lb's
# X-Forwarded-Proto, trusted from the lb's address alone.
geo $dropship_from_lb {
    default 0;
    10.110.0.2 1;
}
map "$dropship_from_lb:$http_x_forwarded_proto" $dropship_forwarded_proto {
    "1:https" https;
    "1:http" http;
    default $scheme;
}
""")
    web, lb_ctx = ctx(env, "web-1"), ctx(env, "lb-1")
    for app in env.settings.apps:
        assert b"        proxy_set_header X-Forwarded-Proto $dropship_forwarded_proto;\n" in app_site(web, app) \
            or app.path
    lb_conf = {r.path: r for r in nginx_role.resources(lb_ctx) if isinstance(r, File)}
    assert "    default 0;\n}\n" in lb_conf["/etc/nginx/conf.d/00-dropship.conf"].content.decode()
    assert "X-Forwarded-Proto $scheme;" in lb_role.site_config(lb_ctx).decode()
    assert lb.forwarded_proto(env, env.host("web-1"), {}) == "$scheme"      # the lb's address not known yet


def test_without_an_lb_apps_get_the_hosts_own_scheme(tmp_path):
    env = load(tmp_path, INVENTORY.replace("""\
      - name: lb-1
        size: s-1vcpu-1gb
        roles: [base, nginx, lb]
""", ""))
    assert b"X-Forwarded-Proto $scheme;" in app_site(ctx(env, "web-1"), env.settings.apps[0])
    assert lb.forwarded_proto(env, env.host("web-1"), ADDRESSES) == "$scheme"


def test_up_opens_the_apps_at_the_lb_and_says_the_web_hosts_are_behind_it(tmp_path):
    from provision.providers.base import Droplet
    from provision.workflows.up import where_to_open

    env = load(tmp_path)
    droplets = [Droplet(name=n, id=n, status="active", address=a, size="s-1vcpu-1gb", ssh_port=22, region="local",
                        image="debian-13", ports={80: 80, 443: 443}) for n, a in ADDRESSES.items()]
    lines = where_to_open(env, droplets)
    assert lines[0] == "lb-1: open https://10.110.0.2/"
    assert "  shop: https://shop.example.com/ (with shop.example.com resolving to 10.110.0.2)" in lines
    assert "  blog: http://blog.example.com/ (with blog.example.com resolving to 10.110.0.2)" in lines
    assert "web-1: behind lb-1" in lines and "db-1:" in lines
    assert not any("10.110.0.3/" in line or "10.110.0.5/" in line for line in lines)     # no app URL but the lb's
    assert sum(line.startswith("  ssh -i ") for line in lines) == 3


# --- HTTPS a host no longer serves ------------------------------------------------------------------

def test_a_host_that_stopped_serving_https_loses_its_certificates_and_renewal_timer(tmp_path):
    env = load(tmp_path)
    [certs, timer, service, hook] = tls_role.retired([])
    assert certs == RetiredCertificates("/etc/dropship/tls", "/etc/nginx/dropship", (), role="nginx")
    assert (timer.path, timer.notify) == ("/etc/systemd/system/dropship-certbot-renew.timer",
                                          (tls_role.STOP_RENEWALS,))
    assert (service.path, hook.path) == ("/etc/systemd/system/dropship-certbot-renew.service",
                                         "/etc/dropship/certbot-deploy-hook")
    assert tls_role.STOP_RENEWALS.command == (
        "systemctl stop dropship-certbot-renew.timer 2>/dev/null || true\n"
        "rm -f /etc/systemd/system/timers.target.wants/dropship-certbot-renew.timer\nsystemctl daemon-reload\n"
        "systemctl reset-failed dropship-certbot-renew.timer 2>/dev/null || true")
    # the lb keeps its own two and its timer; a server renamed or turned off loses its certificate
    lb_resources = tls_role.resources(ctx(env, "lb-1"))
    assert lb_resources[-1] == RetiredCertificates("/etc/dropship/tls", "/etc/nginx/dropship",
                                                   ("example.com", "shop.example.com"), role="nginx")
    assert not any(isinstance(r, Absent) for r in lb_resources)
    all_off = load(tmp_path, INVENTORY.replace("tls: letsencrypt", "tls: off"))
    assert tls_role.resources(ctx(all_off, "lb-1")) == tls_role.retired([])


def test_a_certificate_given_as_secrets_loses_the_lineage_it_had_from_acme():
    r = RetiredCertificates("/etc/dropship/tls", "/etc/nginx/dropship", ("shop.test", "it's.test"),
                            custom=("it's.test",))
    assert r.probe() == ("ls -1 /etc/dropship/tls 2>/dev/null\n"
                         "[ -e '/etc/letsencrypt/renewal/it'\"'\"'s.test.conf' ] && echo '@lineage it'\"'\"'s.test'; true")
    assert r.plan("shop.test\nit's.test\n") == []                                # no lineage: nothing to do
    [change] = r.plan("shop.test\nit's.test\n@lineage it's.test\n")
    assert (change.action, change.summary) == (
        "remove", "delete certbot's lineage of it's.test (its certificate is given as secrets now; nothing renews it)")
    assert change.commands == ["if [ -e '/etc/letsencrypt/renewal/it'\"'\"'s.test.conf' ]; then certbot delete "
                               "--non-interactive --quiet --cert-name 'it'\"'\"'s.test'; fi"]
    assert r.plan("@lineage shop.test\nshop.test\n") == []          # an ACME certificate keeps its lineage


def test_custom_and_acme_certificates_are_told_apart_for_retirement(tmp_path):
    custom = tls_role.TlsServer("a.test", ServerTls("custom", SecretRef("env", "A_CERT", "x"), SecretRef("env", "A_KEY", "x")))
    acme = tls_role.TlsServer("b.test www.b.test", ServerTls("letsencrypt"))
    assert tls_role.retired([custom, acme])[0] == RetiredCertificates(
        "/etc/dropship/tls", "/etc/nginx/dropship", ("a.test", "b.test"), role="nginx", custom=("a.test",))


def test_retired_certificates_are_removed_with_their_lineage_and_snippet():
    r = RetiredCertificates("/etc/dropship/tls", "/etc/nginx/dropship", ("example.com",))
    assert r.probe() == "ls -1 /etc/dropship/tls 2>/dev/null; true"
    assert r.plan("example.com\n") == [] and r.plan("") == []
    [change] = r.plan("example.com\nold.example.com\n")
    assert change.summary == "remove the certificate for old.example.com (no server here has HTTPS for it)"
    assert change.commands == [
        "if [ -e /etc/letsencrypt/renewal/old.example.com.conf ]; then certbot delete --non-interactive --quiet "
        "--cert-name old.example.com; fi\n"
        "rm -rf /etc/dropship/tls/old.example.com\nrm -f /etc/nginx/dropship/tls-old.example.com.conf"]
    [hostile] = r.plan("x;$(reboot) `y`\n..\n.\n")
    assert hostile.commands[0].endswith("rm -rf '/etc/dropship/tls/x;$(reboot) `y`'\n"
                                        "rm -f '/etc/nginx/dropship/tls-x;$(reboot) `y`.conf'")
