"""HTTPS: ``tls:`` in the inventory, the certificate resources and their commands (exact strings),
the nginx snippets and renewal units, and the checks of certificates given as secrets."""
import datetime
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provision.engine.certs import Certificate, Placeholder, certbot_command, link_command, placeholder_command
from provision.engine.files import File
from provision.engine.nginx import reload_and_wait
from provision.engine.system import Service
from provision.errors import InventoryError
from provision.inventory import LETSENCRYPT, load_inventory
from provision.roles import tls as tls_role
from provision.roles.handlers import RELOAD_NGINX
from provision.roles.app import site_config
from provision.tls_check import custom_problem
from provision.workflows.tls import certificates_command, parse_certificates

from tests.unit.test_templates import context, tls_context, with_airflow

HEAD = """\
environments:
  {env}:
    provider: {provider}
{token}    droplets:
      - name: web-1
        size: s-1vcpu-1gb
{region}        roles: [base, nginx, app]
"""


def load(tmp_path: Path, body: str, provider: str = "local"):
    path = tmp_path / "inventory.yaml"
    token = "    token: {env: DIGITALOCEAN_TOKEN}\n" if provider == "digitalocean" else ""
    region = "        region: fra1\n        image: ubuntu-24-04-x64\n" if provider == "digitalocean" else ""
    path.write_text(HEAD.format(env="e", provider=provider, token=token, region=region) +
                    textwrap.indent(textwrap.dedent(body), "    "))
    return load_inventory(path)["e"]


def refused(tmp_path: Path, body: str, provider: str = "local") -> str:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, body, provider)
    message = str(info.value)
    assert "\n" not in message and "inventory.yaml:" in message and "(fix: " in message
    return message


# --- inventory ----------------------------------------------------------------------------------

def test_tls_defaults_to_letsencrypt_for_dns_names_and_off_locally_or_without_names(tmp_path):
    body = "nginx: {server_name: shop.example.com www.shop.example.com}\n"
    assert load(tmp_path, body, "digitalocean").settings.nginx.tls.mode == "letsencrypt"
    assert load(tmp_path, body, "local").settings.nginx.tls.mode == "off"
    assert load(tmp_path, "nginx: {server_name: _}\n", "digitalocean").settings.nginx.tls.mode == "off"
    assert load(tmp_path, "nginx: {server_name: '*.example.com'}\n", "digitalocean").settings.nginx.tls.mode == "off"


def test_tls_explicit_modes_and_the_acme_account(tmp_path):
    ca = tmp_path / "pebble-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = load(tmp_path, f"""
        nginx: {{server_name: app.dropship.test, tls: letsencrypt}}
        tls: {{acme_server: "https://10.0.0.1:14000/dir", email: ops@example.com, acme_ca: {ca}}}
        app:
          name: shop
          server_name: shop.example.com
          tls: off
    """)
    s = env.settings
    assert (s.nginx.tls.mode, s.apps[0].tls.mode) == ("letsencrypt", "off")
    assert (s.tls.acme_server, s.tls.email, s.tls.acme_ca) == ("https://10.0.0.1:14000/dir", "ops@example.com", ca)
    assert load(tmp_path, "nginx: {server_name: a.example.com}\n").settings.tls.acme_server == LETSENCRYPT


def test_custom_certificate_is_two_secrets_never_generated(tmp_path):
    env = load(tmp_path, """
        nginx:
          server_name: shop.example.com
          tls: {custom: {certificate: {env: SHOP_CERT}, key: {secret: shop_key}}}
    """)
    t = env.settings.nginx.tls
    assert (t.mode, t.certificate.kind, t.certificate.name, t.key.name, t.key.generate) == \
        ("custom", "env", "SHOP_CERT", "shop_key", "never")
    assert {"SHOP_CERT", "shop_key"} <= {r.name for r in env.secret_refs()}


@pytest.mark.parametrize("body, words", [
    ("nginx: {server_name: _, tls: letsencrypt}\n", "letsencrypt needs DNS names"),
    ("nginx: {server_name: '*.example.com', tls: letsencrypt}\n", "letsencrypt needs DNS names"),
    ("nginx: {server_name: a.example.com, tls: custom}\n", "needs its secrets"),
    ("nginx: {server_name: a.example.com, tls: on}\n", "expected one of letsencrypt, off"),
    ("nginx: {server_name: a.example.com, tls: {custom: {certificate: {env: C}}}}\n", "key"),
    ("nginx: {server_name: a.example.com, tls: {custom: {certificate: '-----BEGIN', key: {env: K}}}}\n", "secret"),
    ("app: {name: blog, path: /blog, tls: letsencrypt}\n", "default server's HTTPS"),
    ("tls: {acme_server: 'http://plain.example.com/dir'}\n", "acme_server"),
    ("tls: {acme_server: 'https://x.example.com/dir;$(reboot)'}\n", "acme_server"),
    ("tls: {email: 'ops@example.com; rm -rf /'}\n", "email"),
    ("tls: {acme_ca: /nonexistent/ca.pem}\n", "acme_ca"),
    ("tls: {wildcard: true}\n", "wildcard"),
])
def test_bad_tls_settings_are_one_located_line(tmp_path, body, words):
    assert words in refused(tmp_path, body)


# --- command builders ---------------------------------------------------------------------------

def test_certbot_command_is_webroot_non_interactive_and_quoted():
    assert certbot_command("shop.example.com", ("shop.example.com", "www.shop.example.com"), "/var/www/acme",
                           "https://acme.test/dir", "ops@example.com", "/etc/dropship/acme-ca.pem") == (
        "REQUESTS_CA_BUNDLE=/etc/dropship/acme-ca.pem certbot certonly --non-interactive --agree-tos "
        "--email ops@example.com --no-eff-email --webroot -w /var/www/acme --cert-name shop.example.com "
        "-d shop.example.com -d www.shop.example.com --server https://acme.test/dir --keep-until-expiring --quiet")
    assert certbot_command("a.test", ("a.test",), "/w", "https://x/dir", "", force=True) == (
        "certbot certonly --non-interactive --agree-tos --register-unsafely-without-email --webroot -w /w "
        "--cert-name a.test -d a.test --server https://x/dir --force-renewal --quiet")
    hostile = certbot_command("a b", ("x;$(reboot)",), "/w w", "https://x/dir'`", "o'q@x.io")
    assert "-d 'x;$(reboot)'" in hostile and "--cert-name 'a b'" in hostile and "-w '/w w'" in hostile
    assert "--server 'https://x/dir'\"'\"'`'" in hostile and "--email 'o'\"'\"'q@x.io'" in hostile


def test_link_and_placeholder_commands():
    assert link_command("a.test", "/etc/dropship/tls/a.test") == (
        "ln -sfn /etc/letsencrypt/live/a.test/fullchain.pem /etc/dropship/tls/a.test/fullchain.pem\n"
        "ln -sfn /etc/letsencrypt/live/a.test/privkey.pem /etc/dropship/tls/a.test/privkey.pem\n"
        "nginx -t -q || exit 1\n" + reload_and_wait() + "\n"
        "touch /etc/dropship/tls/a.test/live")
    assert placeholder_command("/etc/dropship/tls/a.test", "a.test") == (
        "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=a.test "
        "-keyout /etc/dropship/tls/a.test/privkey.pem -out /etc/dropship/tls/a.test/fullchain.pem 2>/dev/null\n"
        "chmod 600 /etc/dropship/tls/a.test/privkey.pem")


def test_nginx_reload_of_a_provision_waits_for_the_old_workers():
    """A provision that changed a certificate or a site ends once new connections get the new one."""
    assert RELOAD_NGINX.name == "reload nginx" and RELOAD_NGINX.service == "nginx"
    assert RELOAD_NGINX.command == "nginx -t -q || exit 1\n" + reload_and_wait("try-reload-or-restart")
    assert reload_and_wait("try-reload-or-restart") == reload_and_wait().replace(
        "systemctl reload nginx", "systemctl try-reload-or-restart nginx")
    assert reload_and_wait().startswith("master=$(cat /run/nginx.pid 2>/dev/null) || true\n"   # set -e: none running
                                        "old=$(cat /proc/$master/task/$master/children 2>/dev/null) || true\n")


def test_placeholder_only_when_no_certificate_files():
    p = Placeholder("/etc/dropship/tls/a.test", "a.test")
    assert p.plan("present\n") == []
    [change] = p.plan("")
    assert change.commands == [placeholder_command("/etc/dropship/tls/a.test", "a.test")]


CERT = Certificate("a.test", ("a.test", "www.a.test"), "/etc/dropship/tls/a.test", "/w", "https://acme.test/dir")
LINKED = {"names": "a.test www.a.test ", "server": "https://acme.test/dir",
          "linked": "/etc/letsencrypt/live/a.test/fullchain.pem", "live": "1"}


def test_certificate_issued_linked_and_live_is_left_alone():
    assert CERT.plan(CERT.parse("names=a.test www.a.test \nserver=https://acme.test/dir\n"
                                "linked=/etc/letsencrypt/live/a.test/fullchain.pem\nlive=1\n")) == []


@pytest.mark.parametrize("facts, summary, force", [
    ({}, "obtain the certificate", False),
    ({**LINKED, "names": "a.test"}, "re-issue the certificate", False),                   # a name was added
    ({**LINKED, "server": "https://acme-v02.api.letsencrypt.org/directory"}, "re-issue", True),   # new ACME server
    ({**LINKED, "live": ""}, "link the certificate", False),                            # killed before linking
])
def test_certificate_plans(facts, summary, force):
    [change] = CERT.plan(facts)
    assert change.summary.startswith(summary)
    assert ("--force-renewal" in change.commands[0]) == force
    assert change.commands[1] == link_command("a.test", "/etc/dropship/tls/a.test")
    assert "point the DNS name(s) a.test www.a.test at this droplet" in change.fix


# --- the role: snippets, renewal, which servers -------------------------------------------------

def test_servers_with_tls_and_their_snippets():
    ctx = tls_context()
    found = tls_role.servers(ctx)
    assert [(t.names, t.tls.mode, t.default) for t in found] == [
        ("example.com", "custom", True), ("shop.example.com www.shop.example.com", "letsencrypt", False),
        ("airflow.example.com", "letsencrypt", False)]
    assert tls_role.include_for(ctx, "shop.example.com www.shop.example.com") == \
        "/etc/nginx/dropship/tls-shop.example.com.conf"
    assert tls_role.include_for(ctx, "elsewhere.example.com") == ""
    assert tls_role.packages(ctx) == ["openssl", "certbot"]
    assert tls_role.servers(context(env_name="staging")) == [] and tls_role.packages(context()) == []


def test_tls_resources_files_units_and_certificates():
    res = tls_role.resources(tls_context())
    files = {r.path: r for r in res if isinstance(r, File)}
    assert files["/etc/dropship/tls/example.com/fullchain.pem"].content == b"CHAIN-PEM"
    assert files["/etc/dropship/tls/example.com/privkey.pem"].secret
    assert files["/etc/dropship/tls/example.com/privkey.pem"].mode == 0o600
    snippet = files["/etc/nginx/dropship/tls-shop.example.com.conf"].content.decode()
    assert "listen 443 ssl;" in snippet and "default_server" not in snippet
    assert "ssl_certificate /etc/dropship/tls/shop.example.com/fullchain.pem;" in snippet
    assert "add_header Strict-Transport-Security $dropship_hsts always;" in snippet
    assert "if (-f /etc/dropship/tls/shop.example.com/live)" in snippet and "return 301 https://$host" in snippet
    assert "listen 443 ssl default_server;" in files["/etc/nginx/dropship/tls-example.com.conf"].content.decode()
    service = files["/etc/systemd/system/dropship-certbot-renew.service"].content.decode()
    assert "--deploy-hook /etc/dropship/certbot-deploy-hook" in service and "REQUESTS_CA_BUNDLE" not in service
    assert "OnCalendar=" in files["/etc/systemd/system/dropship-certbot-renew.timer"].content.decode()
    certs = [r for r in res if isinstance(r, Certificate)]
    assert [(c.cert_name, c.names) for c in certs] == [
        ("shop.example.com", ("shop.example.com", "www.shop.example.com")),
        ("airflow.example.com", ("airflow.example.com",))]
    assert [r.key for r in res if isinstance(r, Placeholder)] == [
        "certificate files /etc/dropship/tls/shop.example.com", "certificate files /etc/dropship/tls/airflow.example.com"]
    services = {r.name: r.enabled for r in res if isinstance(r, Service)}
    assert services == {"dropship-certbot-renew.timer": True, "certbot.timer": False}
    # every placeholder is planned before the snippet that needs its files (nginx -t checks the snippet)
    keys = [r.key for r in res]
    assert keys.index("certificate files /etc/dropship/tls/shop.example.com") < \
        keys.index("file /etc/nginx/dropship/tls-shop.example.com.conf")


def test_acme_ca_goes_to_the_host_and_the_renewal_trusts_it(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"PEBBLE-CA")
    ctx = tls_context()
    ctx = replace(ctx, env=replace(ctx.env, settings=replace(ctx.settings, tls=replace(ctx.settings.tls, acme_ca=ca))))
    res = tls_role.resources(ctx)
    files = {r.path: r for r in res if isinstance(r, File)}
    assert files["/etc/dropship/acme-ca.pem"].content == b"PEBBLE-CA"
    assert "Environment=REQUESTS_CA_BUNDLE=/etc/dropship/acme-ca.pem" in \
        files["/etc/systemd/system/dropship-certbot-renew.service"].content.decode()
    assert all(c.ca_bundle == "/etc/dropship/acme-ca.pem" for c in res if isinstance(c, Certificate))


def test_sites_include_their_snippet_and_airflow_knows_its_scheme():
    from provision.roles.airflow import airflow_env, resources as airflow_resources

    ctx = tls_context()
    shop = ctx.settings.apps[2]
    assert "    include /etc/nginx/dropship/tls-shop.example.com.conf;\n" in site_config(ctx, shop).decode()
    assert "include /etc/nginx/dropship/tls-example.com.conf;" in site_config(ctx, ctx.settings.apps[0]).decode()
    [server] = [r for r in airflow_resources(ctx) if isinstance(r, File) and r.path.endswith("dropship-airflow.conf")]
    assert "include /etc/nginx/dropship/tls-airflow.example.com.conf;" in server.content.decode()
    assert b"AIRFLOW__API__BASE_URL=\"https://airflow.example.com\"" in airflow_env(ctx, "airflow.example.com")
    plain = with_airflow(context(env_name="staging"), server_name="airflow.example.com", url_path="")
    assert b"AIRFLOW__API__BASE_URL=\"http://airflow.example.com\"" in airflow_env(plain, "airflow.example.com")


# --- certificates given as secrets --------------------------------------------------------------

def pem_pair(names, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_custom_certificate_checks():
    chain, key = pem_pair(["shop.example.com", "*.shop.example.com"])
    assert custom_problem(chain, key, ("shop.example.com", "www.shop.example.com")) == ""
    assert "does not cover a.b.shop.example.com" in custom_problem(chain, key, ("a.b.shop.example.com",))
    assert custom_problem("not a pem", key, ("shop.example.com",)) == "the certificate is not a PEM certificate chain"
    assert "not an unencrypted PEM private key" in custom_problem(chain, "-----BEGIN nothing", ("shop.example.com",))
    _, other = pem_pair(["shop.example.com"])
    assert "does not belong to the certificate" in custom_problem(chain, other, ("shop.example.com",))


# --- tls.status ---------------------------------------------------------------------------------

def test_certificates_command_and_parser():
    assert certificates_command() == (
        "for d in /etc/dropship/tls/*/; do [ -e \"$d/fullchain.pem\" ] || continue; "
        "n=$(basename \"$d\"); [ -e \"$d/live\" ] && l=live || l=placeholder; "
        "e=$(openssl x509 -in \"$d/fullchain.pem\" -noout -enddate 2>/dev/null | cut -d= -f2); "
        "s=$(openssl x509 -in \"$d/fullchain.pem\" -noout -ext subjectAltName 2>/dev/null | tr ',' '\\n' | "
        "sed -n 's/^ *DNS://p' | tr '\\n' ' '); "
        "i=$(openssl x509 -in \"$d/fullchain.pem\" -noout -issuer 2>/dev/null | sed 's/^issuer=//'); "
        "echo \"cert|$n|$l|$e|$s|$i\"; done\n"
        "systemctl show dropship-certbot-renew.service -p Result -p ExecMainStatus -p ExecMainExitTimestamp "
        "-p ActiveState 2>/dev/null | sed 's/^/renew|/'\n"
        "true\n")
    now = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    parsed = parse_certificates(
        "cert|a.test|live|Mar 31 12:00:00 2027 GMT|a.test www.a.test |CN=Pebble Intermediate CA 1a2b\n"
        "cert|b.test|placeholder|Jan 11 00:00:00 2027 GMT|b.test |CN=b.test\n"
        "renew|Result=success\nrenew|ExecMainStatus=0\nrenew|ExecMainExitTimestamp=Fri 2026-12-04 03:27:01 UTC\n"
        "renew|ActiveState=inactive\n", now)
    assert parsed["certificates"] == [
        {"name": "a.test", "names": ["a.test", "www.a.test"], "state": "live",
         "expires": "2027-03-31T12:00:00+00:00", "days_left": 89, "issuer": "CN=Pebble Intermediate CA 1a2b"},
        {"name": "b.test", "names": ["b.test"], "state": "placeholder",
         "expires": "2027-01-11T00:00:00+00:00", "days_left": 10, "issuer": "CN=b.test"}]
    assert parsed["renewal"] == {"result": "success", "exit_status": 0, "last_run": "Fri 2026-12-04 03:27:01 UTC"}
    assert parse_certificates("renew|Result=success\nrenew|ExecMainExitTimestamp=\n", now)["renewal"] == \
        {"result": "never run", "exit_status": None, "last_run": ""}
