"""PostgreSQL on its own host (pure): the inventory's placement rules, the postgres host's clients,
listen_addresses, pg_hba lines and ufw rules by their exact strings, where apps and Airflow connect,
the providers' private addresses, and the database commands split between hosts."""
import textwrap
from pathlib import Path

import pytest

from provision import db_release as dbr
from provision import placement
from provision.errors import DropshipError, InventoryError
from provision.facts import SystemFacts
from provision.inventory import load_inventory
from provision.providers import digitalocean as do
from provision.providers.base import Droplet, DropletSpec
from provision.providers.local import droplet_from_inspect, droplet_labels, network_address
from provision.roles import RoleContext
from provision.roles import base, postgres
from provision.roles.airflow import airflow_env
from provision.workflows.operations import status_command
from provision.workflows.provision import waves
from provision.transport.ssh import Target

SPLIT = """\
environments:
  e:
    provider: local
    droplets:
      - name: db-1
        size: s-1vcpu-1gb
        roles: [base, postgres]
      - name: web-1
        size: s-2vcpu-4gb
        roles: [base, docker, nginx, app, airflow]
      - name: out-1
        size: s-1vcpu-1gb
        roles: [base]
    app:
      name: names
      database: {name: names, user: names, password: {secret: app_db_password}}
    airflow:
      version: 3.3.2
      image: apache/airflow:3.3.2
"""
ONE = SPLIT.replace("roles: [base, docker, nginx, app, airflow]", "roles: [base, postgres, docker, nginx, app, airflow]") \
    .replace("      - name: db-1\n        size: s-1vcpu-1gb\n        roles: [base, postgres]\n", "")
ADDRESSES = {"db-1": "10.110.0.2", "web-1": "10.110.0.3", "out-1": "10.110.0.4"}
FACTS = SystemFacts("debian", "13", "trixie", "none", 4096, 2)
SECRETS = {n: "s3cret" for n in ("app_db_password", "names_secret_key", "airflow_admin_password", "airflow_fernet_key",
                                 "airflow_jwt_secret", "airflow_api_secret_key", "airflow_db_password")}


def load(tmp_path: Path, text: str):
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)["e"]


def refused(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "inventory.yaml") + ":") and "(fix: " in message
    return info.value


def ctx(env, host: str, addresses=ADDRESSES) -> RoleContext:
    return RoleContext(env, env.host(host), FACTS, "ssh-ed25519 AAAA", SECRETS, "img", dict(addresses))


def content(resources, path: str) -> str:
    return next(r.content.decode() for r in resources if getattr(r, "path", "") == path)


# --- the inventory -----------------------------------------------------------------------------------

def test_split_roles_load(tmp_path):
    env = load(tmp_path, SPLIT)
    assert placement.postgres_host(env).name == "db-1"
    assert placement.clients(env) == [placement.Client("web-1", "names", "names"),
                                      placement.Client("web-1", "airflow", "airflow")]
    assert placement.airflow_elsewhere(env) and placement.needed(env) == ["db-1", "web-1"]


def test_one_host_with_every_role_has_no_remote_clients(tmp_path):
    env = load(tmp_path, ONE)
    assert placement.clients(env) == [] and not placement.airflow_elsewhere(env) and placement.needed(env) == []
    assert placement.database_address(env, "web-1", {}) == "127.0.0.1"


def test_two_postgres_hosts_are_refused(tmp_path):
    err = refused(tmp_path, SPLIT.replace("roles: [base]", "roles: [base, postgres]"))
    assert (err.line, err.key) == (13, "environments.e.droplets[2].roles")
    assert "host 'out-1' has the postgres role, and so has 'db-1'" in str(err)
    assert "remove postgres from the roles of 'out-1'" in err.fix


def test_an_app_without_a_postgres_host_is_refused(tmp_path):
    err = refused(tmp_path, SPLIT.replace("roles: [base, postgres]", "roles: [base]"))
    assert (err.line, err.key) == (10, "environments.e.droplets[1].roles")
    assert "app 'names' on host 'web-1' needs PostgreSQL, and no host of the environment has the postgres role" \
        in str(err)
    assert "add postgres to one host's roles" in err.fix


def test_airflow_without_a_postgres_host_is_refused(tmp_path):
    text = SPLIT.replace("roles: [base, postgres]", "roles: [base]").replace(
        "roles: [base, docker, nginx, app, airflow]", "roles: [base, docker, airflow]")
    err = refused(tmp_path, text)
    assert (err.line, err.key) == (10, "environments.e.droplets[1].roles") and "Airflow on host 'web-1'" in str(err)


def test_an_app_without_a_database_needs_no_postgres_host(tmp_path):
    text = SPLIT.replace("roles: [base, postgres]", "roles: [base]").replace(
        "      database: {name: names, user: names, password: {secret: app_db_password}}\n", "").replace(
        "roles: [base, docker, nginx, app, airflow]", "roles: [base, nginx, app]")
    assert placement.clients(load(tmp_path, text)) == []


def test_vpc_uuid_goes_to_digitalocean_droplets_only(tmp_path):
    uuid = "760e09ef-dc84-11e8-981e-3cfdfeaae000"
    err = refused(tmp_path, SPLIT.replace("    provider: local\n", f"    provider: local\n    vpc_uuid: {uuid}\n"))
    assert (err.line, err.key) == (4, "environments.e.vpc_uuid")
    text = SPLIT.replace("    provider: local\n", "    provider: digitalocean\n    token: {env: T}\n"
                         f"    vpc_uuid: {uuid}\n").replace("        roles:", "        region: fra1\n"
                                                           "        image: ubuntu-24-04-x64\n        roles:")
    env = load(tmp_path, text)
    assert {h.droplet.vpc_uuid for h in env.hosts} == {uuid}
    err = refused(tmp_path, text.replace(uuid, "default; reboot"))
    assert err.key == "environments.e.vpc_uuid"


def test_fixed_hosts_take_a_private_address(tmp_path):
    text = """\
environments:
  e:
    provider: local
    hosts:
      - name: db-1
        address: 203.0.113.5
        private_address: 10.110.0.9
        roles: [base, postgres]
      - name: web-1
        address: 203.0.113.6
        roles: [base, app]
"""
    env = load(tmp_path, text)
    assert (env.host("db-1").private_address, env.host("web-1").private_address) == ("10.110.0.9", "")
    err = refused(tmp_path, text.replace("10.110.0.9", "10.110.0.9/8"))
    assert (err.line, err.key) == (7, "environments.e.hosts[0].private_address")


# --- the postgres host's configuration (exact strings) ------------------------------------------------

def test_listen_addresses():
    assert placement.listen_addresses(None, None) == ["localhost"]
    assert placement.listen_addresses("172.17.0.1", None) == ["localhost", "172.17.0.1"]
    assert placement.listen_addresses(None, "10.110.0.2") == ["localhost", "10.110.0.2"]
    assert placement.listen_addresses("172.17.0.1", "10.110.0.2") == ["localhost", "172.17.0.1", "10.110.0.2"]


def test_hba_lines_and_firewall_rules():
    found = [placement.Client("web-1", "names", "names"), placement.Client("web-1", "airflow", "airflow"),
             placement.Client("web-2", "shop", "shop_owner")]
    addresses = {"web-1": "10.110.0.3", "web-2": "10.110.0.4"}
    assert placement.hba_lines(found, addresses) == [
        'host    "names"   "names"   10.110.0.3/32    scram-sha-256',
        'host    "airflow" "airflow" 10.110.0.3/32    scram-sha-256',
        'host    "shop"    "shop_owner" 10.110.0.4/32    scram-sha-256']
    assert placement.firewall_rules(found, addresses) == ("5432/tcp from 10.110.0.3", "5432/tcp from 10.110.0.4")
    assert placement.hba_lines([], {}) == [] and placement.firewall_rules([], {}) == ()


@pytest.mark.parametrize("bad", ["10.0.0.3/32", "10.0.0.3 all", "x", "", "::1", "10.0.0.256", "10.0.0.3\n"])
def test_addresses_reaching_config_are_refused_unless_ipv4(bad):
    with pytest.raises(DropshipError):
        placement.hba_lines([placement.Client("web-1", "names", "names")], {"web-1": bad})
    with pytest.raises(DropshipError):
        placement.firewall_rules([placement.Client("web-1", "names", "names")], {"web-1": bad})


def test_pg_hba_names_are_quoted_or_refused():
    assert placement.q("all") == '"all"'
    for bad in ('a"b', "a b", ""):
        with pytest.raises(ValueError):
            placement.q(bad)


def test_missing_private_addresses_are_one_line_errors(tmp_path):
    env = load(tmp_path, SPLIT)
    placement.require_addresses(env, ADDRESSES)
    with pytest.raises(DropshipError, match=r"^web-1: its private address is not known .*invoke droplet.list --env e"):
        placement.require_addresses(env, {"db-1": "10.110.0.2"})
    with pytest.raises(DropshipError, match="db-1: private address 'nope' is not an IPv4 address"):
        placement.require_addresses(env, {**ADDRESSES, "db-1": "nope"})
    placement.require_addresses(load(tmp_path, ONE), {})          # one host: nothing needed


def test_the_db_host_renders_listen_hba_and_ufw_for_its_client(tmp_path):
    env = load(tmp_path, SPLIT)
    resources = postgres.resources(ctx(env, "db-1"))
    assert "listen_addresses = 'localhost,10.110.0.2'\n" in content(resources, "/etc/postgresql/17/main/conf.d/dropship.conf")
    assert content(resources, "/etc/postgresql/17/main/pg_hba.conf") == (
        "# Managed by Dropship (postgres role).\n"
        "# TYPE  DATABASE  USER      ADDRESS          METHOD\n"
        "local   all       postgres                   peer\n"
        "local   all       all                        scram-sha-256\n"
        "host    all       all       127.0.0.1/32     scram-sha-256\n"
        "host    all       all       ::1/128          scram-sha-256\n"
        'host    "names"   "names"   10.110.0.3/32    scram-sha-256\n'
        'host    "airflow" "airflow" 10.110.0.3/32    scram-sha-256\n')
    assert [r.key for r in resources if r.key.startswith("postgres ")] == [
        "postgres role names", "postgres database names", "postgres role airflow", "postgres database airflow"]
    assert base.firewall_rules(ctx(env, "db-1")) == ("22/tcp", "80/tcp", "443/tcp", "5432/tcp from 10.110.0.3")
    assert base.firewall_rules(ctx(env, "web-1")) == ("22/tcp", "80/tcp", "443/tcp")
    assert base.firewall_rules(ctx(env, "out-1")) == ("22/tcp", "80/tcp", "443/tcp")


def test_one_host_keeps_its_configuration(tmp_path):
    env = load(tmp_path, ONE)
    resources = postgres.resources(ctx(env, "web-1", {}))
    assert "listen_addresses = 'localhost,172.17.0.1'\n" in content(resources,
                                                                  "/etc/postgresql/17/main/conf.d/dropship.conf")
    assert content(resources, "/etc/postgresql/17/main/pg_hba.conf").endswith(
        "host    all       all       ::1/128          scram-sha-256\n"
        "host    all       all       172.16.0.0/12   scram-sha-256\n")
    assert [r.key for r in resources if r.key.startswith("postgres ")] == ["postgres role names",
                                                                           "postgres database names"]
    assert base.firewall_rules(ctx(env, "web-1", {})) == ("22/tcp", "80/tcp", "443/tcp", "5432/tcp from 172.16.0.0/12 to 172.17.0.1")
    line = next(ln for ln in airflow_env(ctx(env, "web-1", {})).decode().splitlines() if "SQL_ALCHEMY_CONN" in ln)
    assert line.endswith("@host.docker.internal:5432/airflow\"")


def test_one_host_listens_on_its_private_address_with_no_one_let_in(tmp_path):
    """A web host added later then changes pg_hba and ufw (a reload), not listen_addresses (a restart)."""
    env = load(tmp_path, ONE)
    one = ctx(env, "web-1", {"web-1": "10.110.0.3"})
    resources = postgres.resources(one)
    assert "listen_addresses = 'localhost,172.17.0.1,10.110.0.3'\n" in content(
        resources, "/etc/postgresql/17/main/conf.d/dropship.conf")
    assert "10.110.0.3" not in content(resources, "/etc/postgresql/17/main/pg_hba.conf")
    assert base.firewall_rules(one) == ("22/tcp", "80/tcp", "443/tcp", "5432/tcp from 172.16.0.0/12 to 172.17.0.1")
    with pytest.raises(DropshipError, match="web-1: private address 'nope' is not an IPv4 address"):
        postgres.resources(ctx(env, "web-1", {"web-1": "nope"}))


def test_airflow_elsewhere_connects_to_the_db_hosts_private_address(tmp_path):
    env = load(tmp_path, SPLIT)
    line = next(ln for ln in airflow_env(ctx(env, "web-1")).decode().splitlines() if "SQL_ALCHEMY_CONN" in ln)
    assert line == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=\"postgresql+psycopg2://airflow:s3cret@10.110.0.2:5432/airflow\""
    assert placement.database_address(env, "web-1", ADDRESSES) == "10.110.0.2"
    assert placement.database_address(env, "db-1", ADDRESSES) == "127.0.0.1"


def test_provision_waves_put_the_postgres_host_first(tmp_path):
    env = load(tmp_path, SPLIT)
    targets = [Target(n, "127.0.0.1", 22, ("deploy",), Path("k")) for n in ("web-1", "out-1", "db-1")]
    first, then = waves(env, targets)
    assert [t.name for t in first] == ["db-1"] and [t.name for t in then] == ["web-1", "out-1"]
    one = load(tmp_path, ONE)
    assert waves(one, targets[:1]) == [targets[:1]]


# --- the providers' private addresses -----------------------------------------------------------------

def test_digitalocean_private_ipv4_and_vpc():
    nets = {"networks": {"v4": [{"ip_address": "10.128.192.124", "type": "private"},
                                {"ip_address": "192.241.165.154", "type": "public"}]}}
    assert do.private_ipv4(nets) == "10.128.192.124" and do.public_ipv4(nets) == "192.241.165.154"
    assert do.private_ipv4({}) is None
    d = do.to_droplet({"id": 1, "name": "db-1", **nets})
    assert (d.address, d.private_address) == ("192.241.165.154", "10.128.192.124")
    spec = DropletSpec("db-1", "s-1vcpu-1gb", "fra1", "ubuntu-24-04-x64", vpc_uuid="760e09ef-dc84-11e8-981e-3cfdfeaae000")
    assert do.create_body(spec, "prod", 7)["vpc_uuid"] == "760e09ef-dc84-11e8-981e-3cfdfeaae000"
    assert "vpc_uuid" not in do.create_body(DropletSpec("a", "s-1vcpu-1gb", "fra1", "ubuntu-24-04-x64"), "prod", 7)


def test_local_droplets_private_address_is_on_the_environment_network():
    spec = DropletSpec("db-1", "s-1vcpu-1gb", "local", "debian-13")
    info = {"Id": "0123456789abcdef", "State": {"Status": "running"},
            "Config": {"Labels": droplet_labels("prod", spec, {22: 1, 80: 2, 443: 3}, "127.0.0.1", "img")},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.9"},
                                             "dropship-prod": {"IPAddress": "172.23.0.2"}}}}
    assert network_address(info) == "172.23.0.2" and droplet_from_inspect(info).private_address == "172.23.0.2"
    assert network_address({"Config": {"Labels": {}}}) == ""


def test_droplet_records_keep_the_private_address():
    d = Droplet("db-1", "1", "active", "127.0.0.1", private_address="172.23.0.2")
    assert Droplet.from_dict(d.to_dict()) == d
    old = {k: v for k, v in d.to_dict().items() if k != "private_address"}    # recorded before this existed
    assert Droplet.from_dict(old).private_address == ""


# --- database commands where the database is ----------------------------------------------------------

def test_revision_written_on_the_app_host():
    assert dbr.write_revision_command("/srv/shop/releases/r1", "e66a32ce8385") == (
        "printf '%s\\n' e66a32ce8385 > /srv/shop/releases/r1/.dropship-db-revision.new && "
        "mv -f /srv/shop/releases/r1/.dropship-db-revision.new /srv/shop/releases/r1/.dropship-db-revision\n"
        "echo revision=e66a32ce8385")
    assert dbr.write_revision_command("/r", "").startswith("printf '%s\\n' '' > /r/.dropship-db-revision.new")
    with pytest.raises(ValueError):
        dbr.write_revision_command("/r", "x; reboot")


def test_release_and_database_probes_split_over_hosts():
    assert dbr.release_probe_command("/srv/shop/releases/r1") == (
        'echo "revision=$(cat /srv/shop/releases/r1/.dropship-db-revision 2>/dev/null)"\n'
        'echo "left=$(cat /srv/shop/releases/r1/.dropship-db-left 2>/dev/null)"\n')
    current = f'echo "current=$({dbr.revision_probe("shop")})"\n'
    assert dbr.database_probe_command("shop", "/var/backups/dropship/shop", "pre-r2.dump") == (
        '[ -s /var/backups/dropship/shop/pre-r2.dump ] && echo "dump_at=$(date -u -r '
        '/var/backups/dropship/shop/pre-r2.dump +%Y-%m-%dT%H:%M:%SZ)"\n' + current)
    assert dbr.database_probe_command("shop", "/var/backups/dropship/shop", "") == current
    assert dbr.database_probe_command("shop", "/d", "../../etc/passwd") == current      # not a dump name


def test_status_shows_dumps_where_the_database_is():
    from provision.inventory import AppSettings, DatabaseSettings, SecretRef

    app = AppSettings("shop", DatabaseSettings("shop", "shop", SecretRef("secret", "p", "")))
    assert status_command((app,), False) == status_command((app,), False, databases=("shop",))
    on_app_host = status_command((app,), False, databases=())
    assert "backup shop" not in on_app_host and "app shop blue" in on_app_host
    on_db_host = status_command((), False, databases=("shop",))
    assert "ls -t /var/backups/dropship/shop" in on_db_host and "echo \"backup shop $b" in on_db_host


def test_pre_deploy_dumps_pruned_on_the_postgres_host(tmp_path):
    from provision.workflows.database import prune_dumps_command

    command = prune_dumps_command("shop", 2)
    assert command == ("cd /var/backups/dropship/shop 2>/dev/null || exit 0\n"
                       "ls -1 | grep '^pre-.*\\.dump$' | sort -r | tail -n +3 | "
                       "while read -r d; do rm -f -- \"$d\" && echo \"pruned $d\"; done\ntrue\n")
    import subprocess

    for name in ("pre-20260101T000000Z-a.dump", "pre-20260102T000000Z-b.dump", "pre-20260103T000000Z-c.dump",
                 "manual-20250101T000000Z.dump"):
        (tmp_path / name).write_bytes(b"PGDMP")
    out = subprocess.run(["sh", "-c", command.replace("/var/backups/dropship/shop", str(tmp_path))],
                         capture_output=True, text=True, check=True).stdout
    assert out == "pruned pre-20260101T000000Z-a.dump\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manual-20250101T000000Z.dump", "pre-20260102T000000Z-b.dump",
                                                          "pre-20260103T000000Z-c.dump"]


MOVED = SPLIT.replace("      - name: out-1\n", "      - name: web-2\n        size: s-1vcpu-1gb\n        roles: [base, nginx, app]\n"
                      "      - name: out-1\n")


def test_a_host_the_postgres_role_left_keeps_letting_in_the_clients_it_let_in_until_purge(tmp_path):
    """db-1 held PostgreSQL for web-1 and web-2 (out-1 now holds the role): the rules its firewall
    has for them stay, none is added, and `provision --purge` removes them."""
    env = load(tmp_path, MOVED.replace("roles: [base, postgres]", "roles: [base]")
               .replace("      - name: out-1\n        size: s-1vcpu-1gb\n        roles: [base]",
                        "      - name: out-1\n        size: s-1vcpu-1gb\n        roles: [base, postgres]"))
    addresses = {**ADDRESSES, "web-2": "10.110.0.5"}
    assert base.former_postgres_rules(ctx(env, "db-1", addresses)) == ("5432/tcp from 10.110.0.3",
                                                                      "5432/tcp from 10.110.0.5")
    assert base.former_postgres_rules(ctx(env, "web-1", addresses)) == ("5432/tcp from 10.110.0.5",)
    assert base.former_postgres_rules(ctx(env, "out-1", addresses)) == ()                # the postgres host
    purge = RoleContext(env, env.host("db-1"), FACTS, "k", SECRETS, "img", addresses, purge=True)
    assert base.former_postgres_rules(purge) == ()
    [fw] = [r for r in base.resources(ctx(env, "db-1", addresses)) if r.key == "firewall"]
    facts = {"ENABLED": "yes", "DEFAULT_INPUT_POLICY": "DROP", "DEFAULT_OUTPUT_POLICY": "ACCEPT", "LOADED": "yes",
             "rules": {"22/tcp", "80/tcp", "443/tcp", "5432/tcp from 10.110.0.3", "5432/tcp from 10.110.0.9"}}
    [change] = fw.plan(facts)
    assert change.commands == ["ufw delete allow proto tcp from 10.110.0.9 to any port 5432 >/dev/null",
                               "ufw --force enable >/dev/null"]
    assert change.summary == "firewall: deny inbound, allow 22/tcp, 80/tcp, 443/tcp; still allowing 5432/tcp from 10.110.0.3"
    assert fw.plan({**facts, "rules": facts["rules"] - {"5432/tcp from 10.110.0.9"}}) == []
    [fw] = [r for r in base.resources(purge) if r.key == "firewall"]
    assert fw.plan(facts)[0].commands[:2] == ["ufw delete allow proto tcp from 10.110.0.3 to any port 5432 >/dev/null",
                                              "ufw delete allow proto tcp from 10.110.0.9 to any port 5432 >/dev/null"]
