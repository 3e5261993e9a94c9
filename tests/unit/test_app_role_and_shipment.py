"""Several apps on one host: each app's files, units and nginx site (root, path or own server); the
release's environment (database URL names and driver, DROPSHIP_RELEASE); where `up` says to open."""
from dataclasses import replace
from pathlib import Path

from provision import release as rel
from provision.engine.files import Absent, File, Symlink
from provision.inventory import DatabaseSettings, SecretRef, load_inventory
from provision.providers.base import Droplet
from provision.roles import RoleContext
from provision.roles.app import NGINX_DEFAULT_SITE, resources, serves_root
from provision.roles.nginx import resources as nginx_resources
from provision.facts import SystemFacts
from provision.workflows.shipment import app_environment
from provision.workflows.up import where_to_open

REPO_INVENTORY = Path(__file__).resolve().parents[2] / "inventory.yaml"
FACTS = SystemFacts("debian", "13", "trixie", "none", 4096, 2)


def ctx_with(*apps) -> RoleContext:
    env = load_inventory(REPO_INVENTORY)["local"]
    env = replace(env, settings=replace(env.settings, apps=tuple(apps)))
    return RoleContext(env, env.hosts[0], FACTS, "ssh-ed25519 AAAA test", {"app_db_password": "pw-123456"})


def names():
    return load_inventory(REPO_INVENTORY)["local"].settings.app


def paths(rs, kind=File):
    return {r.path: r for r in rs if isinstance(r, kind)}


def test_three_apps_on_one_host():
    blog = replace(names(), name="blog", path="/blog", database=None, port=8010)
    shop = replace(names(), name="shop", server_name="shop.example.com", port=8020)
    ctx = ctx_with(names(), blog, shop)
    rs = resources(ctx)
    files = paths(rs)
    for app in ("names", "blog", "shop"):
        assert f"/etc/systemd/system/{app}@.service" in files
        assert f"/etc/nginx/sites-available/{app}.conf" in files
        assert f"/etc/nginx/sites-enabled/{app}.conf" in paths(rs, Symlink)
    assert b"listen 80 default_server;" in files["/etc/nginx/sites-available/names.conf"].content
    assert b"server_name shop.example.com;" in files["/etc/nginx/sites-available/shop.conf"].content
    assert b"default_server" not in files["/etc/nginx/sites-available/shop.conf"].content
    assert b"server {" not in files["/etc/nginx/sites-available/blog.conf"].content     # upstream only
    location = files["/etc/nginx/dropship/locations/app-blog.conf"].content.decode()
    assert "location /blog/ {" in location and "proxy_pass http://blog_app;" in location
    assert files["/srv/blog/slots/green.env"].content.endswith(b"PORT=8012\nSLOT=green\nSCRIPT_NAME=/blog\n")
    assert b"SCRIPT_NAME" not in files["/srv/names/slots/blue.env"].content
    assert "/etc/nginx/dropship/locations/app-names.conf" in paths(rs, Absent)
    assert NGINX_DEFAULT_SITE in paths(rs, Absent) and serves_root(ctx)
    assert "/etc/nginx/sites-enabled/dropship.conf" not in paths(nginx_resources(ctx), Symlink)


def test_no_app_at_the_root_keeps_the_nginx_default_site():
    ctx = ctx_with(replace(names(), path="/names"))
    assert not serves_root(ctx)
    assert NGINX_DEFAULT_SITE not in paths(resources(ctx), Absent)
    assert "/etc/nginx/sites-enabled/dropship.conf" in paths(nginx_resources(ctx), Symlink)


def test_release_environment_names_driver_and_release():
    app = replace(names(), database=DatabaseSettings("shop", "shop", SecretRef("secret", "p", ""),
                                                     ("SQLALCHEMY_DATABASE_URI", "GUESTBOOK_DB_URI"), "psycopg2"),
                  env=(("TITLE", "it's \"$(x)\"\nü"), ("TOKEN", SecretRef("secret", "tok", ""))),
                  secret_key=SecretRef("secret", "key", ""))
    values = {"p": "p@ss/word:1", "tok": "t0ken-value", "key": "k3y-value"}
    env = dict(app_environment(app, values, "20261202T000000Z-abc"))
    url = "postgresql+psycopg2://shop:p%40ss%2Fword%3A1@127.0.0.1:5432/shop"
    assert env == {"DATABASE_URL": url, "SQLALCHEMY_DATABASE_URI": url, "GUESTBOOK_DB_URI": url,
                   "SECRET_KEY": "k3y-value", "TITLE": "it's \"$(x)\"\nü", "TOKEN": "t0ken-value",
                   "DROPSHIP_RELEASE": "20261202T000000Z-abc", "RELEASE_ID": "20261202T000000Z-abc"}
    assert rel.database_url("u", "p", "d") == "postgresql://u:p@127.0.0.1:5432/d"


def test_an_app_without_database_gets_none():
    env = dict(app_environment(replace(names(), database=None), {"names_secret_key": "s"}, "r1"))
    assert "DATABASE_URL" not in env and env["DROPSHIP_RELEASE"] == "r1"


def test_where_to_open_names_every_app():
    blog = replace(names(), name="blog", path="/blog", port=8010)
    shop = replace(names(), name="shop", server_name="shop.example.com www.shop.example.com", port=8020)
    env = load_inventory(REPO_INVENTORY)["local"]
    env = replace(env, settings=replace(env.settings, apps=(names(), blog, shop)))
    droplet = Droplet(name="web-1", id="c1", status="active", address="127.0.0.1", size="s-4vcpu-8gb",
                      ssh_port=2222, region="local", image="debian-13", ports={80: 8088})
    lines = where_to_open(env, [droplet])
    assert lines[0] == "web-1: open http://127.0.0.1:8088/"
    assert "  blog: http://127.0.0.1:8088/blog/" in lines
    assert "  shop: http://shop.example.com/ (with shop.example.com resolving to 127.0.0.1)" in lines
    assert any(line.startswith("  Airflow UI: http://127.0.0.1:8088/airflow/") for line in lines)
    assert lines[-1].startswith("  ssh -i ") and lines[-1].endswith(" -p 2222 -o UserKnownHostsFile="
                                                                    f"{env.workspace.known_hosts_path} deploy@127.0.0.1")


def test_where_to_open_says_https_where_tls_is_on():
    from provision.inventory import ServerTls

    shop = replace(names(), name="shop", server_name="shop.example.com", port=8020, tls=ServerTls("letsencrypt"))
    env = load_inventory(REPO_INVENTORY)["local"]
    nginx = replace(env.settings.nginx, server_name="example.com", tls=ServerTls("letsencrypt"))
    env = replace(env, settings=replace(env.settings, apps=(names(), shop), nginx=nginx))
    droplet = Droplet(name="web-1", id="c1", status="active", address="127.0.0.1", size="s-4vcpu-8gb",
                      ssh_port=2222, region="local", image="debian-13", ports={80: 8088, 443: 8443})
    lines = where_to_open(env, [droplet])
    assert lines[0] == "web-1: open https://127.0.0.1:8443/"
    assert "  shop: https://shop.example.com/ (with shop.example.com resolving to 127.0.0.1)" in lines
