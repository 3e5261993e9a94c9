"""Several apps per environment: ``apps:`` (a list) or ``app:`` (one), each validated and checked
against the others; health gates, database wiring and where nginx serves each app."""
import json
import textwrap
from pathlib import Path

import pytest

from provision.errors import InventoryError
from provision.inventory import HealthSettings, load_inventory

HEAD = """\
environments:
  local:
    provider: local
    droplets:
      - name: web-1
        size: s-1vcpu-1gb
        roles: [base, app]
"""


def load(tmp_path: Path, apps_yaml: str):
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(apps_yaml), "    "))
    return load_inventory(path)["local"]


def refused(tmp_path: Path, apps_yaml: str) -> str:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, apps_yaml)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "inventory.yaml") in message and "(fix: " in message
    return message


def test_one_app_shorthand_keeps_its_defaults(tmp_path):
    env = load(tmp_path, """
        app:
          name: names
          health_path: /healthz
    """)
    [app] = env.settings.apps
    assert env.settings.app is app
    assert (app.port, app.health, app.database, app.is_root) == (8000, HealthSettings("/healthz"), None, True)
    assert app.secret_key.name == "names_secret_key"


def test_several_apps_with_ports_server_names_and_paths(tmp_path):
    env = load(tmp_path, """
        apps:
          - name: names
          - name: blog
            path: /blog
            health: {path: /about, expect_status: [200, 301], expect_text: "It's a blog", timeout: 5}
          - name: shop-eu
            server_name: shop.example.com  www.shop.example.com
            wsgi: "shop:create_app()"
            requirements: requirements/prod.txt
            database:
              name: shop
              user: shop
              password: {secret: shop_db}
              url_env: [SQLALCHEMY_DATABASE_URI, DATABASE_URL]
              driver: psycopg2
    """)
    names, blog, shop = env.settings.apps
    assert [a.port for a in env.settings.apps] == [8000, 8010, 8020]
    assert blog.path == "/blog" and not blog.is_root
    assert blog.health == HealthSettings("/about", (200, 301), "It's a blog", 5)
    assert shop.server_name == "shop.example.com www.shop.example.com"
    assert shop.wsgi == "shop:create_app()" and shop.requirements == "requirements/prod.txt"
    assert shop.database.url_env == ("SQLALCHEMY_DATABASE_URI",) and shop.database.driver == "psycopg2"
    assert shop.secret_key.name == "shop_eu_secret_key"
    assert [r.name for r in env.secret_refs()] == ["names_secret_key", "blog_secret_key", "shop_db",
                                                    "shop_eu_secret_key"]


@pytest.mark.parametrize("apps_yaml, words", [
    ("app: {name: a}\napps: [{name: b}]\n", ["either 'app:'", "apps"]),
    ("apps: [{name: a}, {name: a, path: /a}]\n", ["used twice"]),
    ("apps: [{name: a}, {name: b}]\n", ["both want the root", "server_name"]),
    ("apps: [{name: a, port: 8000}, {name: b, path: /b, port: 8001}]\n", ["clash with app 'a'"]),
    ("apps: [{name: a, path: /x}, {name: b, path: /x}]\n", ["path /x"]),
    ("apps: [{name: a, server_name: x.example.com}, {name: b, server_name: x.example.com}]\n", ["repeated"]),
    ("app: {name: a, server_name: 'x.example.com; return 200'}\n", ["DNS names"]),
    ("app: {name: a, server_name: x.example.com, path: /a}\n", ["server of its own"]),
    ("app: {name: a, path: '/a;b'}\n", ["is not valid"]),
    ("app: {name: a, health_path: '/x;$(touch /tmp/pwned)'}\n", ["is not valid", "health_path"]),
    ("app: {name: a, health: {path: '/x`id`'}}\n", ["health.path"]),
    ("app: {name: a, health_path: /a, health: {path: /b}}\n", ["not both"]),
    ("app: {name: a, health: {expect_status: 99}}\n", ["100 to 599"]),
    ("app: {name: a, health: {expect_text: \"a\\nb\"}}\n", ["one line"]),
    ("app: {name: a, requirements: ../../etc/passwd}\n", ["requirements"]),
    ("app: {name: a, requirements: '/etc/passwd'}\n", ["requirements"]),
    ("app: {name: a, wsgi: 'x:y; rm -rf /'}\n", ["wsgi"]),
    ("app: {name: a, wsgi: 'x:create_app($(id))'}\n", ["wsgi"]),
    ("app: {name: a, wsgi: \"x:create_app('a'); rm\"}\n", ["wsgi"]),
    ("app: {name: a, wsgi: \"x:create_app('%h')\"}\n", ["wsgi"]),
    ("app: {name: a, wsgi: 'x:create_app(os.getenv(\"A\"))'}\n", ["wsgi", "'package:create_app(\"production\")'"]),
    ("app: {name: a, env: {DROPSHIP_GUNICORN_FLAGS: --reload}}\n", ["set by Dropship"]),
    ("app: {name: a, packages: ['libpq-dev; reboot']}\n", ["packages[0]", "'libpq-dev'"]),
    ("app: {name: a, packages: [-oAPT::x=1]}\n", ["packages[0]"]),
    ("app: {name: a, packages: libpq-dev}\n", ["packages"]),
    ("app: {name: a, request_timeout: 1}\n", ["request_timeout", "5"]),
    ("app: {name: a, request_timeout: '90; rm'}\n", ["request_timeout"]),
    ("nginx: {client_max_body_size: '100m; return 200'}\n", ["client_max_body_size", "'100m'"]),
    ("nginx: {client_max_body_size: 1t}\n", ["client_max_body_size"]),
    ("app: {name: a, shared_dirs: [/srv/x]}\n", ["shared_dirs[0]", "'instance'"]),
    ("app: {name: a, shared_dirs: [../up]}\n", ["shared_dirs[0]"]),
    ("app: {name: a, shared_dirs: [uploads/../..]}\n", ["shared_dirs[0]"]),
    ("app: {name: a, shared_dirs: [.env]}\n", ["shared_dirs[0]", "not starting with a dot"]),
    ("app: {name: a, shared_dirs: ['up loads']}\n", ["shared_dirs[0]"]),
    ("app: {name: a, shared_dirs: ['$(reboot)']}\n", ["shared_dirs[0]"]),
    ("app: {name: a, shared_dirs: [uploads/]}\n", ["shared_dirs[0]"]),
    ("app: {name: a, shared_dirs: [instance, uploads, instance]}\n", ["shared_dirs[2]", "overlaps 'instance'"]),
    ("app: {name: a, shared_dirs: [media/uploads, media]}\n", ["shared_dirs[1]", "overlaps 'media/uploads'"]),
    ("app: {name: a, requirements: reqs/prod.txt, shared_dirs: [reqs]}\n", ["shared_dirs[0]", "requirements"]),
    ("app: {name: a, shared_dirs: uploads}\n", ["shared_dirs", "expected a list"]),
    ("app: {name: postgres}\n", ["system user"]),
    ("app: {name: a, env: {lower: x}}\n", ["upper-case"]),
    ("app: {name: a, env: {DROPSHIP_RELEASE: x}}\n", ["set by Dropship"]),
    ("app: {name: a, env: {A: [1, 2]}}\n", ["expected a string"]),
    ("app: {name: a, env: {A: \"x\\0y\"}}\n", ["NUL"]),
    ("app: {name: a, database: {name: a, user: a, password: {secret: p}, driver: mysql}}\n", ["psycopg2"]),
    ("app: {name: a, database: {name: a, user: a, password: {secret: p}, url_env: [bad-name]}}\n", ["url_env"]),
    ("apps: [{name: a, database: {name: d, user: a, password: {secret: p}}}, "
     "{name: b, path: /b, database: {name: d, user: b, password: {secret: q}}}]\n", ["another owner"]),
])
def test_refused_with_one_located_line(tmp_path, apps_yaml, words):
    message = refused(tmp_path, apps_yaml)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("wsgi", ["wsgi:app", "shop.web:application", "shop:create_app()",
                                  "shop:create_app('production')", 'shop:create_app("prod", debug=False)',
                                  "shop:create_app(config_name='production', workers=2, ratio=-0.5, x=None)"])
def test_wsgi_entry_points_gunicorn_takes(tmp_path, wsgi):
    assert load(tmp_path, f"app: {{name: shop, wsgi: {json.dumps(wsgi)}}}\n").settings.apps[0].wsgi == wsgi


def role_context(env):
    from provision.facts import SystemFacts
    from provision.roles import RoleContext

    return RoleContext(env, env.hosts[0], SystemFacts("debian", "13", "trixie", "none", 2048, 2), "ssh-ed25519 A", {})


def test_app_packages_go_to_the_hosts_of_the_app_role_once(tmp_path):
    from provision.inventory_view import describe
    from provision.roles import app as app_role

    env = load(tmp_path, """
        apps:
          - {name: shop, packages: [libpq-dev, libgomp1, libpq-dev]}
          - {name: blog, path: /blog, packages: [ffmpeg, libgomp1, g++]}
    """)
    assert [a.packages for a in env.settings.apps] == [("libpq-dev", "libgomp1"), ("ffmpeg", "libgomp1", "g++")]
    assert app_role.packages(role_context(env)) == ["python3-venv", "curl", "rsync", "libpq-dev", "libgomp1",
                                                    "ffmpeg", "g++"]
    assert "health /healthz; no database; apt packages libpq-dev libgomp1\n" in describe(env)


def test_request_timeout_and_body_size_reach_gunicorn_and_nginx(tmp_path):
    from provision.roles import app as app_role, nginx as nginx_role

    env = load(tmp_path, """
        nginx: {client_max_body_size: 100M}
        apps:
          - {name: shop, request_timeout: 300}
          - {name: blog, path: /blog}
    """)
    assert [a.request_timeout for a in env.settings.apps] == [300, 60]
    ctx = role_context(env)
    files = {getattr(r, "path", ""): getattr(r, "content", b"").decode() for r in app_role.resources(ctx) +
             nginx_role.resources(ctx)}
    assert " --workers 2 --timeout 305 --graceful-timeout 20 " in files["/etc/systemd/system/shop@.service"]
    assert "        proxy_read_timeout 300s;\n" in files["/etc/nginx/sites-available/shop.conf"]
    assert " --timeout 65 " in files["/etc/systemd/system/blog@.service"]
    assert "        proxy_read_timeout 60s;\n" in files["/etc/nginx/dropship/locations/app-blog.conf"]
    assert "\nclient_max_body_size 100m;\n" in files["/etc/nginx/conf.d/00-dropship.conf"]


def test_shared_dirs_are_kept_in_order_and_shown(tmp_path):
    from provision.inventory_view import describe

    env = load(tmp_path, """
        app: {name: notes, shared_dirs: [instance, media/uploads, var.d/cache_1]}
    """)
    assert env.settings.app.shared_dirs == ("instance", "media/uploads", "var.d/cache_1")
    assert "; shared dirs instance, media/uploads, var.d/cache_1 (in /srv/notes/data)\n" in describe(env)
    (tmp_path / "inventory.yaml").write_text((tmp_path / "inventory.yaml").read_text().replace(
        "    droplets:\n", "    droplets:\n      - {name: lb-1, size: s-1vcpu-1gb, roles: [base, nginx, lb]}\n"
        "      - {name: web-2, size: s-1vcpu-1gb, roles: [base, nginx, app]}\n").replace(
        "roles: [base, app]", "roles: [base, nginx, app, postgres]"))
    assert ("; shared dirs instance, media/uploads, var.d/cache_1 (in /srv/notes/data; each of web-2, web-1 keeps "
            "its own copy, backed up only on a host that also runs postgres)\n") in describe(
        load_inventory(tmp_path / "inventory.yaml")["local"])


@pytest.mark.parametrize("apps_yaml, key", [
    ('app: {name: "shop\\n"}\n', "name"),
    ('app: {name: a, wsgi: "wsgi:app\\n"}\n', "wsgi"),
    ('app: {name: a, path: "/blog\\n"}\n', "path"),
    ('app: {name: a, packages: ["curl\\n"]}\n', "packages[0]"),
    ('app: {name: a, requirements: "req.txt\\n"}\n', "requirements"),
    ('app: {name: a, shared_dirs: ["uploads\\n"]}\n', "shared_dirs[0]"),
    ('app: {name: a, env: {"A\\n": x}}\n', "env"),
    ('app: {name: a, database: {name: "d\\n", user: a, password: {secret: p}}}\n', "database.name"),
])
def test_a_trailing_newline_is_refused_not_passed_on(tmp_path, apps_yaml, key):
    """A pattern's ``$`` matches before a final newline: every value is matched whole."""
    assert f"app.{key}" in refused(tmp_path, apps_yaml)


def test_env_values_keep_quotes_newlines_and_unicode(tmp_path):
    env = load(tmp_path, """
        app:
          name: a
          env:
            TITLE: "it's \\"$(quoted)\\" `x` ünï\\ncode"
            COUNT: 3
    """)
    assert dict(env.settings.app.env) == {"TITLE": "it's \"$(quoted)\" `x` ünï\ncode", "COUNT": "3"}


def test_an_app_port_on_airflows_is_refused(tmp_path):
    (tmp_path / "dags").mkdir()
    message = refused(tmp_path, f"""
        app: {{name: a, port: 8079}}
        airflow: {{version: 3.3.2, image: 'apache/airflow:3.3.2', dags: {tmp_path / 'dags'}}}
    """)
    assert "8080" in message and "Airflow" in message
