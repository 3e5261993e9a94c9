"""inventory.yaml: the repo's file loads; every bad input names the file, line, dotted key and a fix."""
import textwrap
from pathlib import Path

import pytest

from provision.errors import InventoryError
from provision.inventory import SecretRef, Settings, load_environment, load_inventory

REPO_INVENTORY = Path(__file__).resolve().parents[2] / "inventory.yaml"

# Line numbers below refer to this text (line 1 is "environments:").
LOCAL = """\
environments:
  local:
    provider: local
    droplets:
      - name: web-1
        size: s-1vcpu-1gb
        roles: [base]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str):
    return load_inventory(write(tmp_path, text))


def error(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    return info.value


def assert_located(err: InventoryError, tmp_path: Path, line: int, key: str, *words: str) -> None:
    """One line: '<file>:<line>: <dotted key>: <problem> (fix: <how>)'."""
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'inventory.yaml'}:{line}: {key}: "), message
    assert (err.line, err.key) == (line, key)
    assert err.fix and message.endswith(f"(fix: {err.fix})"), message
    for word in words:
        assert word in message, message


# --- the repo's inventory -------------------------------------------------------------------------

def test_repo_inventory_loads():
    envs = load_inventory(REPO_INVENTORY)
    assert list(envs) == ["local", "staging", "production"]
    local, staging = envs["local"], envs["staging"]
    assert (local.provider, staging.provider) == ("local", "digitalocean")
    assert local.token is None
    assert staging.token.kind == "env" and staging.token.name == "DIGITALOCEAN_TOKEN"
    assert local.hosts[0].roles == ("base", "postgres", "docker", "nginx", "app", "airflow")
    assert local.hosts[0].droplet.region == "local" and local.hosts[0].droplet.image == "debian-13"
    assert staging.hosts[0].droplet.tags == ("staging",)
    for env in envs.values():
        assert env.settings.firewall_allow == ("22/tcp", "80/tcp", "443/tcp")
        assert env.settings.swap_mb is None
        assert env.ssh.user == "deploy" and env.ssh.bootstrap_user == "root" and env.ssh.port == 22
        assert env.settings.app.database.password.kind == "secret"
        assert env.settings.app.database.password.name == "app_db_password"
        assert env.workspace.root == REPO_INVENTORY.parent


def test_load_environment_unknown_name():
    with pytest.raises(InventoryError) as info:
        load_environment(REPO_INVENTORY, "qa")
    assert "environments.qa" in str(info.value) and "local, staging, production" in info.value.fix


def test_missing_file():
    with pytest.raises(InventoryError) as info:
        load_inventory("/nonexistent/inventory.yaml")
    assert "cannot read" in str(info.value) and info.value.fix


# --- valid input: defaults, refs, normalisation ---------------------------------------------------

def test_minimal_local_environment(tmp_path):
    env = load(tmp_path, LOCAL)["local"]
    assert env.settings == Settings()
    assert env.hosts[0].name == "web-1" and env.hosts[0].roles == ("base",)
    assert env.inventory_path == tmp_path / "inventory.yaml"


def test_defaults_merge_and_environment_overrides(tmp_path):
    envs = load(tmp_path, """\
        defaults:
          timezone: Europe/Berlin
          swap: 2G
          ssh: {user: admin, port: 2222}
        environments:
          a:
            provider: local
            droplets: [{name: web-1, size: s-1vcpu-1gb, roles: [base]}]
          b:
            provider: local
            timezone: UTC
            swap: off
            ssh: {port: 22}
            droplets: [{name: web-1, size: s-1vcpu-1gb, roles: [base]}]
        """)
    a, b = envs["a"], envs["b"]
    assert (a.settings.timezone, a.settings.swap_mb, a.ssh.user, a.ssh.port) == ("Europe/Berlin", 2048, "admin", 2222)
    assert (b.settings.timezone, b.settings.swap_mb, b.ssh.user, b.ssh.port) == ("UTC", 0, "admin", 22)


def test_secret_and_env_refs(tmp_path):
    env = load(tmp_path, """\
        environments:
          prod:
            provider: digitalocean
            token: {env: DO_TOKEN}
            droplets:
              - {name: web-1, size: s-2vcpu-4gb, region: fra1, image: debian-13-x64, roles: [base]}
            app:
              name: names
              database: {name: names, user: names, password: {secret: db_pw}}
        """)["prod"]
    assert env.token == SecretRef("env", "DO_TOKEN", "inventory.yaml:4 environments.prod.token")
    password = env.settings.app.database.password
    assert password == SecretRef("secret", "db_pw", "inventory.yaml:9 environments.prod.app.database.password")
    assert env.secret_refs() == [env.token, password, env.settings.app.secret_key]
    assert env.settings.app.secret_key.name == f"{env.settings.app.name}_secret_key"   # generated once
    assert env.token.describe() == "$DO_TOKEN" and password.describe() == "secret 'db_pw'"


def test_fixed_hosts_and_firewall_normalisation(tmp_path):
    env = load(tmp_path, """\
        environments:
          lab:
            provider: local
            hosts:
              - {name: db-1, address: 10.0.0.5, port: 2222, roles: [base, postgres]}
            firewall: {allow: [22, 53/udp, "8080/tcp"]}
            swap: 512M
        """)["lab"]
    assert (env.hosts[0].address, env.hosts[0].port, env.hosts[0].droplet) == ("10.0.0.5", 2222, None)
    assert env.settings.firewall_allow == ("22/tcp", "53/udp", "8080/tcp")
    assert env.settings.swap_mb == 512


def test_ca_certificates_relative_to_the_inventory(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "corp.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    env = load(tmp_path, LOCAL + "    ca_certificates: [certs/corp.crt]\n")["local"]
    assert env.ca_certificates == (tmp_path / "certs" / "corp.crt",)


# --- errors: file, line, dotted key, fix ----------------------------------------------------------

def test_unknown_key(tmp_path):
    err = error(tmp_path, LOCAL.replace("    provider: local\n", "    provider: local\n    colour: blue\n"))
    assert_located(err, tmp_path, 4, "environments.local.colour", "unknown key 'colour'", "timezone")


def test_unknown_top_level_key(tmp_path):
    assert_located(error(tmp_path, "envs: {}\n" + LOCAL), tmp_path, 1, "envs", "unknown key")


def test_anchors_kept_under_x_keys_and_merge_keys_are_read_as_yaml_means_them(tmp_path):
    text = """\
x-web: &web {size: s-1vcpu-1gb, roles: [base, nginx, app]}
x-app: &app
  name: shop
  env: &env {SHOP_MODE: production}
defaults:
  apps:
    - <<: *app
      path: /shop
      env: {<<: *env, EXTRA: "1"}
environments:
  staging:
    provider: local
    droplets:
      - {<<: *web, name: web-1}
      - {<<: *web, name: web-2, size: s-2vcpu-4gb}
"""
    env = load(tmp_path, text)["staging"]
    assert [(h.name, h.droplet.size, h.roles) for h in env.hosts] == [
        ("web-1", "s-1vcpu-1gb", ("base", "nginx", "app")), ("web-2", "s-2vcpu-4gb", ("base", "nginx", "app"))]
    app = env.settings.apps[0]
    assert (app.name, app.path, app.env) == ("shop", "/shop", (("SHOP_MODE", "production"), ("EXTRA", "1")))
    assert_located(error(tmp_path, text.replace("x-web:", "y-web:")), tmp_path, 1, "y-web", "unknown key",
                   "use defaults, environments, or an x-… key to hold YAML anchors")


def test_missing_provider(tmp_path):
    err = error(tmp_path, LOCAL.replace("    provider: local\n", ""))
    assert_located(err, tmp_path, 2, "environments.local.provider", "missing required key 'provider'")


def test_bad_provider(tmp_path):
    err = error(tmp_path, LOCAL.replace("provider: local", "provider: aws"))
    assert_located(err, tmp_path, 3, "environments.local.provider", "'aws'", "local, digitalocean")


def test_bad_size_slug(tmp_path):
    err = error(tmp_path, LOCAL.replace("s-1vcpu-1gb", "large"))
    assert_located(err, tmp_path, 6, "environments.local.droplets[0].size", "'large' is not a size slug",
                   "s-2vcpu-4gb")


def test_unknown_role(tmp_path):
    err = error(tmp_path, LOCAL.replace("roles: [base]", "roles: [base, webserver]"))
    assert_located(err, tmp_path, 7, "environments.local.droplets[0].roles[1]", "'webserver'", "nginx")


def test_empty_roles(tmp_path):
    err = error(tmp_path, LOCAL.replace("roles: [base]", "roles: []"))
    assert_located(err, tmp_path, 7, "environments.local.droplets[0].roles", "at least one role")


def test_roles_not_a_list(tmp_path):
    err = error(tmp_path, LOCAL.replace("roles: [base]", "roles: web"))
    assert_located(err, tmp_path, 7, "environments.local.droplets[0].roles", "expected a list")


def test_duplicate_host_names(tmp_path):
    err = error(tmp_path, LOCAL + "      - name: web-1\n        size: s-1vcpu-1gb\n        roles: [nginx]\n")
    assert_located(err, tmp_path, 8, "environments.local.droplets[1].name", "'web-1' is used twice")


def test_duplicate_yaml_key(tmp_path):
    err = error(tmp_path, LOCAL.replace("    droplets:\n", "    provider: digitalocean\n    droplets:\n"))
    assert_located(err, tmp_path, 4, "environments.local.provider", "duplicate key")


def test_inline_secret_is_refused(tmp_path):
    err = error(tmp_path, LOCAL + """\
    app:
      name: names
      database:
        name: names
        user: names
        password: hunter2
""")
    assert_located(err, tmp_path, 13, "environments.local.app.database.password", "never written inline",
                   "{secret: name}")
    assert "hunter2" not in str(err)


def test_inline_token_is_refused(tmp_path):
    err = error(tmp_path, LOCAL.replace("    provider: local\n", "    provider: local\n    token: dop_v1_abc\n"))
    assert_located(err, tmp_path, 4, "environments.local.token", "never written inline")
    assert "dop_v1_abc" not in str(err)


def test_secret_ref_with_bad_name(tmp_path):
    err = error(tmp_path, LOCAL.replace("    provider: local\n", "    provider: local\n    token: {env: 'A-B'}\n"))
    assert_located(err, tmp_path, 4, "environments.local.token", "letters, digits and underscores")


def test_digitalocean_without_token(tmp_path):
    err = error(tmp_path, """\
        environments:
          prod:
            provider: digitalocean
            droplets:
              - {name: web-1, size: s-2vcpu-4gb, region: fra1, image: debian-13-x64, roles: [base]}
        """)
    assert_located(err, tmp_path, 2, "environments.prod.token", "needs 'token'", "DIGITALOCEAN_TOKEN")


def test_digitalocean_droplet_without_region(tmp_path):
    err = error(tmp_path, """\
        environments:
          prod:
            provider: digitalocean
            token: {env: DO_TOKEN}
            droplets:
              - {name: web-1, size: s-2vcpu-4gb, image: debian-13-x64, roles: [base]}
        """)
    assert_located(err, tmp_path, 6, "environments.prod.droplets[0].region", "missing required key 'region'")


@pytest.mark.parametrize("zone", ["Europe Berlin", "../../etc/passwd", "''"])
def test_bad_timezone(tmp_path, zone):
    err = error(tmp_path, LOCAL + f"    timezone: {zone}\n")
    assert_located(err, tmp_path, 8, "environments.local.timezone", "Europe/Berlin")


def test_bad_timezone_from_defaults_points_into_defaults(tmp_path):
    err = error(tmp_path, "defaults:\n  timezone: Mars Base\n" + LOCAL)
    assert_located(err, tmp_path, 2, "environments.local.timezone", "'Mars Base'")


def test_firewall_without_ssh(tmp_path):
    err = error(tmp_path, LOCAL + "    firewall:\n      allow: [80, 443]\n")
    assert_located(err, tmp_path, 9, "environments.local.firewall.allow", "SSH (22) must stay allowed")


def test_firewall_bad_port(tmp_path):
    err = error(tmp_path, LOCAL + "    firewall:\n      allow:\n        - 22\n        - 70000\n")
    assert_located(err, tmp_path, 11, "environments.local.firewall.allow[1]", "70000")


@pytest.mark.parametrize("swap", ["lots", "2T", "-1G", "yes"])
def test_bad_swap(tmp_path, swap):
    err = error(tmp_path, LOCAL + f"    swap: {swap}\n")
    assert_located(err, tmp_path, 8, "environments.local.swap", "auto, off or a size")


def test_yaml_syntax_error(tmp_path):
    err = error(tmp_path, LOCAL.replace("provider: local", "provider: local: x"))
    assert_located(err, tmp_path, 3, "(syntax)", "YAML syntax error", "mapping values are not allowed")


def test_yaml_tab_indentation(tmp_path):
    err = error(tmp_path, LOCAL.replace("    provider: local", "\tprovider: local"))
    assert_located(err, tmp_path, 3, "(syntax)", "'\\t'")


def test_top_level_not_a_mapping(tmp_path):
    assert_located(error(tmp_path, "- a\n- b\n"), tmp_path, 1, "(top level)", "expected a mapping")


def test_no_environments(tmp_path):
    assert_located(error(tmp_path, "defaults: {}\n"), tmp_path, 1, "environments", "missing required key")


def test_environment_without_hosts(tmp_path):
    err = error(tmp_path, "environments:\n  local:\n    provider: local\n")
    assert_located(err, tmp_path, 2, "environments.local.droplets", "no hosts")


def test_bad_environment_name(tmp_path):
    err = error(tmp_path, LOCAL.replace("  local:", "  Local-Env:"))
    assert_located(err, tmp_path, 2, "environments.Local-Env", "lower-case")


def test_ca_certificate_missing_file(tmp_path):
    err = error(tmp_path, LOCAL + "    ca_certificates:\n      - certs/missing.crt\n")
    assert_located(err, tmp_path, 9, "environments.local.ca_certificates[0]",
                   f"no such file: {tmp_path / 'certs' / 'missing.crt'}")


def test_port_not_a_number(tmp_path):
    err = error(tmp_path, """\
        environments:
          lab:
            provider: local
            hosts:
              - name: db-1
                address: 10.0.0.5
                port: "abc"
                roles: [base]
        """)
    assert_located(err, tmp_path, 7, "environments.lab.hosts[0].port", "integer from 1 to 65535", "'abc'")


def test_ssh_port_out_of_range(tmp_path):
    err = error(tmp_path, LOCAL + "    ssh:\n      port: 0\n")
    assert_located(err, tmp_path, 9, "environments.local.ssh.port", "integer from 1 to 65535")


def test_bool_expected(tmp_path):
    err = error(tmp_path, LOCAL + "    postgres:\n      listen_docker_bridge: 'yes'\n")
    assert_located(err, tmp_path, 9, "environments.local.postgres.listen_docker_bridge", "true or false")


def test_docker_source_choice(tmp_path):
    err = error(tmp_path, LOCAL + "    docker:\n      source: snap\n")
    assert_located(err, tmp_path, 9, "environments.local.docker.source", "distro, docker-ce")


def test_mapping_expected(tmp_path):
    err = error(tmp_path, LOCAL + "    ssh: deploy\n")
    assert_located(err, tmp_path, 8, "environments.local.ssh", "expected a mapping")


# --- airflow.url_path / airflow.server_name ----------------------------------------------------------

AIRFLOW = LOCAL + "    airflow:\n      version: 3.3.2\n      image: apache/airflow:3.3.2\n"    # lines 8-10


def test_airflow_ui_at_a_path_of_the_app_server_by_default(tmp_path):
    af = load(tmp_path, AIRFLOW)["local"].settings.airflow
    assert (af.url_path, af.server_name) == ("/airflow", None)
    af = load(tmp_path, AIRFLOW + "      url_path: /flows\n")["local"].settings.airflow
    assert af.url_path == "/flows"


def test_airflow_ui_on_a_server_of_its_own_is_at_its_root(tmp_path):
    af = load(tmp_path, AIRFLOW + "      server_name: airflow.example.com\n")["local"].settings.airflow
    assert (af.url_path, af.server_name) == ("", "airflow.example.com")
    af = load(tmp_path, AIRFLOW + "      server_name: airflow.example.com\n      url_path: /\n")["local"].settings.airflow
    assert af.url_path == ""
    af = load(tmp_path, AIRFLOW + "      server_name: ops.example.com\n      url_path: /airflow\n")["local"]
    assert af.settings.airflow.url_path == "/airflow"


def test_airflow_ui_at_the_app_servers_root_is_refused(tmp_path):
    err = error(tmp_path, AIRFLOW + "      url_path: /\n")
    assert_located(err, tmp_path, 11, "environments.local.airflow.url_path", "server_name")


@pytest.mark.parametrize("name", ["localhost", "Airflow.example.com", "air flow.example.com", "-a.example.com"])
def test_airflow_server_name_must_be_a_dns_name(tmp_path, name):
    err = error(tmp_path, AIRFLOW + f"      server_name: {name}\n")
    assert_located(err, tmp_path, 11, "environments.local.airflow.server_name", "airflow.example.com")


def test_airflow_server_name_differs_from_the_apps(tmp_path):
    text = AIRFLOW + "      server_name: example.com\n    nginx:\n      server_name: example.com\n"
    err = error(tmp_path, text)
    assert_located(err, tmp_path, 11, "environments.local.airflow.server_name", "nginx.server_name")
