"""The load balancer (pure): inventory rules for the lb role and deploy.batch_size, the lb's upstream
file and site, the batch planner, the drain / put-back command and the gate from the lb, by their
exact strings."""
import textwrap
from pathlib import Path

import pytest

from provision import balancer as lb
from provision.errors import DropshipError, InventoryError
from provision.facts import SystemFacts
from provision.inventory import load_inventory
from provision.roles import RoleContext, base
from provision.roles import lb as lb_role
from provision.roles import nginx as nginx_role
from provision.workflows.rolling import serving_command
from tests.unit.test_inventory import assert_located

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
      - name: web-2
        size: s-1vcpu-1gb
        roles: [base, nginx, app]
      - name: db-1
        size: s-1vcpu-1gb
        roles: [base, postgres]
    deploy:
      batch_size: 1
    app:
      name: names
      database: {name: names, user: names, password: {secret: app_db_password}}
"""
ADDRESSES = {"lb-1": "10.110.0.2", "web-1": "10.110.0.3", "web-2": "10.110.0.4", "db-1": "10.110.0.5"}
FACTS = SystemFacts("debian", "13", "trixie", "none", 4096, 2)


def load(tmp_path: Path, text: str = INVENTORY):
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)["e"]


def refused(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    return info.value


def ctx(env, host: str, live_web=()) -> RoleContext:
    return RoleContext(env, env.host(host), FACTS, "ssh-ed25519 AAAA", {}, "", dict(ADDRESSES), live_web)


# --- the inventory -----------------------------------------------------------------------------------

def test_an_lb_environment_loads(tmp_path):
    env = load(tmp_path)
    assert lb.lb_host(env).name == "lb-1"
    assert [h.name for h in lb.web_hosts(env)] == ["web-1", "web-2"]
    assert env.settings.deploy.batch_size == "1"


def test_batch_size_takes_a_percentage_and_defaults_to_one(tmp_path):
    assert load(tmp_path, INVENTORY.replace("batch_size: 1", "batch_size: 50%")).settings.deploy.batch_size == "50%"
    assert load(tmp_path, INVENTORY.replace("    deploy:\n      batch_size: 1\n", "")).settings.deploy.batch_size == "1"


@pytest.mark.parametrize("bad", ["0", "'0%'", "101%", "-1", "half", "true", "1.5"])
def test_a_bad_batch_size_is_refused(tmp_path, bad):
    err = refused(tmp_path, INVENTORY.replace("batch_size: 1", f"batch_size: {bad}"))
    assert_located(err, tmp_path, 18, "environments.e.deploy.batch_size", "expected a number of hosts like 2",
                   "percentage from 1% to 100%")


def test_an_unknown_deploy_key_is_refused(tmp_path):
    err = refused(tmp_path, INVENTORY.replace("batch_size: 1", "batch: 1"))
    assert_located(err, tmp_path, 18, "environments.e.deploy.batch", "unknown key 'batch'", "batch_size")


def test_two_lb_hosts_are_refused(tmp_path):
    err = refused(tmp_path, INVENTORY.replace("roles: [base, postgres]", "roles: [base, postgres, nginx, lb]"))
    assert_located(err, tmp_path, 16, "environments.e.droplets[3].roles", "host 'db-1' has the lb role, and so has "
                   "'lb-1'", "remove lb from the roles of 'db-1'")


def test_an_lb_without_web_hosts_is_refused(tmp_path):
    text = INVENTORY.replace("roles: [base, nginx, app]", "roles: [base, nginx]")
    err = refused(tmp_path, text.replace("    app:\n      name: names\n      database: {name: names, user: names, "
                                         "password: {secret: app_db_password}}\n", ""))
    assert_located(err, tmp_path, 7, "environments.e.droplets[0].roles", "host 'lb-1' balances web hosts, and no host "
                   "has the app role", "add app to the roles of one or more web hosts")


def test_an_lb_with_the_app_role_or_without_nginx_is_refused(tmp_path):
    err = refused(tmp_path, INVENTORY.replace("roles: [base, nginx, lb]", "roles: [base, nginx, lb, app]"))
    assert_located(err, tmp_path, 7, "environments.e.droplets[0].roles", "has both lb and app")
    err = refused(tmp_path, INVENTORY.replace("roles: [base, nginx, lb]", "roles: [base, lb]"))
    assert_located(err, tmp_path, 7, "environments.e.droplets[0].roles", "runs on nginx",
                   "add nginx to the roles of 'lb-1'")


# --- the upstream file, the site, the firewall ------------------------------------------------------

def test_upstream_file_without_web_hosts_is_the_503_placeholder():
    assert lb.upstream_file([]) == (b"# Managed by Dropship deploys: the web hosts behind the load balancer.\n"
                                    b"server 127.0.0.1:8099;   # no web host serves yet\n")


def test_upstream_file_lists_web_hosts_and_marks_drained_ones_down():
    servers = lb.backends(["web-1", "web-2"], ADDRESSES, down=("web-2",))
    assert lb.upstream_file(servers) == (
        b"# Managed by Dropship deploys: the web hosts behind the load balancer.\n"
        b"server 10.110.0.3:80 max_fails=1 fail_timeout=5s;   # web-1\n"
        b"server 10.110.0.4:80 max_fails=1 fail_timeout=5s down;   # web-2\n")


def test_upstream_file_refuses_an_address_that_is_not_ipv4():
    with pytest.raises(DropshipError, match="web-1: private address '10.0.0.1; evil' is not an IPv4 address"):
        lb.upstream_file([lb.Backend("web-1", "10.0.0.1; evil")])


def test_members_are_read_from_the_upstream_file_and_a_host_that_left_is_dropped():
    text = lb.upstream_file(lb.backends(["web-2", "web-1"], ADDRESSES, ("web-1",))).decode()
    text += "server 10.110.0.9:80;   # web-3 (no longer in the inventory)\n"
    assert lb.members(text, ["web-1", "web-2"], ADDRESSES) == ["web-1", "web-2"]
    assert lb.members(lb.upstream_file([]).decode(), ["web-1", "web-2"], ADDRESSES) == []


def test_lb_site_config(tmp_path):
    env = load(tmp_path)
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
    server_name _;
    server_tokens off;

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


def test_lb_server_names_are_the_default_servers_then_the_apps(tmp_path):
    env = load(tmp_path, INVENTORY.replace("      name: names\n", "      name: names\n      server_name: "
                                           "names.example.com www.example.com\n") +
               "    nginx: {server_name: example.com www.example.com}\n")
    assert lb.site_servers(env) == [("example.com www.example.com names.example.com", "example.com www.example.com")]


def test_the_lb_waits_as_long_as_the_slowest_app_may_take(tmp_path):
    env = load(tmp_path, INVENTORY.replace("      name: names\n", "      name: names\n      request_timeout: 240\n"))
    assert "        proxy_read_timeout 240s;\n" in lb_role.site_config(ctx(env, "lb-1")).decode()


def test_the_lb_role_writes_its_upstream_only_when_absent_with_the_serving_web_hosts(tmp_path):
    env = load(tmp_path)
    files = {r.path: r for r in lb_role.resources(ctx(env, "lb-1", ("web-2",))) if hasattr(r, "content")}
    upstream = files["/etc/nginx/dropship/lb-upstream.conf"]
    assert upstream.replace is False
    assert upstream.content.endswith(b"server 10.110.0.4:80 max_fails=1 fail_timeout=5s;   # web-2\n")
    assert b"127.0.0.1:8099;" in lb_role.resources(ctx(env, "lb-1"))[1].content
    # the nginx role's own default site stays off on the lb host
    assert not any(getattr(r, "path", "") == "/etc/nginx/sites-available/dropship.conf"
                   for r in nginx_role.resources(ctx(env, "lb-1")))


def test_web_hosts_let_in_port_80_from_the_lb(tmp_path):
    env = load(tmp_path)
    assert base.firewall_rules(ctx(env, "web-1"))[-1] == "80/tcp from 10.110.0.2"
    assert "80/tcp from 10.110.0.2" not in base.firewall_rules(ctx(env, "lb-1"))


def test_addresses_of_lb_and_web_hosts_are_required(tmp_path):
    env = load(tmp_path)
    lb.require_addresses(env, ADDRESSES)
    with pytest.raises(DropshipError, match="web-2: its private address is not known"):
        lb.require_addresses(env, {k: v for k, v in ADDRESSES.items() if k != "web-2"})


# --- the rollout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, plan", [
    ("1", [["a"], ["b"], ["c"]]),
    ("2", [["a", "b"], ["c"]]),
    ("9", [["a", "b", "c"]]),
    ("50%", [["a", "b"], ["c"]]),      # rounded up
    ("34%", [["a", "b"], ["c"]]),
    ("33%", [["a"], ["b"], ["c"]]),
    ("1%", [["a"], ["b"], ["c"]]),     # at least one
    ("100%", [["a", "b", "c"]]),
])
def test_batches(size, plan):
    assert lb.batches(["a", "b", "c"], size) == plan


def test_batches_of_no_hosts():
    assert lb.batches([], "50%") == []


def test_a_batch_is_drained_unless_nothing_would_be_left():
    assert lb.drainable(["a", "b"], ["a"]) == ("a",)
    assert lb.drainable(["a", "b"], ["a", "b"]) == ()        # every server down: nginx would answer 502
    assert lb.drainable(["a"], ["a"]) == ()
    assert lb.drainable(["a"], ["b"]) == ()                   # a new host is not in the upstream yet
    assert lb.drainable(["a", "b", "c"], ["b", "d"]) == ("b",)


def test_drain_command_exact():
    assert lb.upstream_command(lb.backends(["web-1"], ADDRESSES, ("web-1",)), "drain") == """\
cp -p /etc/nginx/dropship/lb-upstream.conf /etc/nginx/dropship/lb-upstream.conf.prev 2>/dev/null || true
tmp=$(mktemp "$(dirname /etc/nginx/dropship/lb-upstream.conf)/.dropship.XXXXXX")
base64 -d > "$tmp" <<'DROPSHIP_EOF'
IyBNYW5hZ2VkIGJ5IERyb3BzaGlwIGRlcGxveXM6IHRoZSB3ZWIgaG9zdHMgYmVoaW5kIHRoZSBs
b2FkIGJhbGFuY2VyLgpzZXJ2ZXIgMTAuMTEwLjAuMzo4MCBtYXhfZmFpbHM9MSBmYWlsX3RpbWVv
dXQ9NXMgZG93bjsgICAjIHdlYi0xCg==
DROPSHIP_EOF
chown root:root "$tmp" && chmod 0644 "$tmp" || { rm -f "$tmp"; exit 1; }
mv -f "$tmp" /etc/nginx/dropship/lb-upstream.conf
if ! nginx -t -q; then mv -f /etc/nginx/dropship/lb-upstream.conf.prev /etc/nginx/dropship/lb-upstream.conf; \
echo "nginx -t failed: drain undone"; exit 1; fi
master=$(cat /run/nginx.pid 2>/dev/null) || true
old=$(cat /proc/$master/task/$master/children 2>/dev/null) || true
systemctl reload nginx
# The reload is only a signal: wait until the old workers stop taking connections ("is shutting down").
i=0
for w in $old; do
  while [ $i -lt 500 ] && [ -r /proc/$w/cmdline ] && tr '\\0' ' ' < /proc/$w/cmdline | grep -q 'worker process *$'; do
    i=$((i + 1)); sleep 0.01
  done
done
rm -f /etc/nginx/dropship/lb-upstream.conf.prev"""


def test_undrain_writes_the_same_servers_without_down():
    cmd = lb.upstream_command(lb.backends(["web-1"], ADDRESSES), "undrain")
    assert "IyBNYW5hZ2VkIGJ5IERyb3BzaGlwIGRlcGxveXM6IHRoZSB3ZWIgaG9zdHMgYmVoaW5kIHRoZSBs" in cmd
    assert 'echo "nginx -t failed: undrain undone"' in cmd
    assert lb.upstream_file(lb.backends(["web-1"], ADDRESSES)).endswith(b"fail_timeout=5s;   # web-1\n")


def test_gate_command_sends_the_apps_host_through_the_private_address(tmp_path):
    env = load(tmp_path, INVENTORY.replace("      name: names\n", "      name: names\n"
                                           "      server_name: names.example.com\n"))
    cmd = lb.gate_command(env, env.settings.app, "web-1", ADDRESSES["web-1"])
    assert cmd.splitlines()[4] == ("  : > \"$d/body\"; code=$(curl -sS --max-time 2 -o \"$d/body\" -w '%{http_code}' "
                                   "-H 'Host: names.example.com' http://10.110.0.3/healthz 2>\"$d/err\")")
    assert "within %s s; got HTTP %s: %s\\n' 'HTTP 2xx/3xx' http://10.110.0.3/healthz 30" in cmd
    plain = lb.gate_command(load(tmp_path), load(tmp_path).settings.app, "web-1", ADDRESSES["web-1"])
    assert "-H " not in plain and "http://10.110.0.3/healthz" in plain


def test_serving_command_exact(tmp_path):
    assert serving_command(load(tmp_path).settings.apps) == "test -s /srv/names/live"
    assert serving_command(()) == "true"


def test_a_stopped_rollout_says_where_and_how_to_go_on(tmp_path):
    from provision.engine.runner import HostOutcome
    from provision.workflows.rolling import Rollout

    env = load(tmp_path)
    rollout = Rollout(env, [], [], None, ADDRESSES, env.settings.apps, None, None, 1, "deploy", None)
    outcomes = {"web-1": HostOutcome("web-1", failed=1, error="web-1: health check: expected HTTP 2xx/3xx "
                                     "(fix: read the app's log)")}
    rollout.stopped(outcomes, "web-1", 1, 2, ["web-1"], {"web-1": HostOutcome("web-1")}, ["web-1", "web-2"])
    assert outcomes["web-1"].error == (
        "web-1: health check: expected HTTP 2xx/3xx; deploy stopped at batch 1/2; web-1 back on the previous "
        "release; web-2 untouched (still on the old release) (fix: fix the cause, then run `invoke deploy --env e` "
        "again)")



def test_a_rollout_stopped_after_a_batch_names_the_hosts_already_switched(tmp_path):
    from provision.engine.runner import HostOutcome
    from provision.workflows.rolling import Rollout

    env = load(tmp_path)
    web = ["web-1", "web-2", "web-3"]
    for command, switched in (("deploy", "web-1, web-2 on the new release"), ("rollback", "web-1 rolled back")):
        rollout = Rollout(env, [], [], None, ADDRESSES, env.settings.apps, None, None, 1, command, None)
        batch = ["web-3"] if command == "deploy" else ["web-2"]
        outcomes = {batch[0]: HostOutcome(batch[0], failed=1, error=f"{batch[0]}: health check: no (fix: x)")}
        rollout.stopped(outcomes, batch[0], 2, 2, batch, {batch[0]: HostOutcome(batch[0])}, web)
        error = outcomes[batch[0]].error
        assert f"{command} stopped at batch 2/2; {switched}; {batch[0]} back on the previous release" in error
    assert error.endswith("web-3 untouched (still on the old release) (fix: fix the cause, then run "
                          "`invoke rollback --env e` again)")
    deploy = Rollout(env, [], [], None, ADDRESSES, env.settings.apps, None, None, 1, "deploy", None)
    outcomes = {"web-3": HostOutcome("web-3", failed=1, error="web-3: health check: no")}
    deploy.stopped(outcomes, "web-3", 2, 2, ["web-3"], {"web-3": HostOutcome("web-3")}, web)
    assert outcomes["web-3"].error.endswith(
        "(fix: fix the cause, then run `invoke deploy --env e` again, or `invoke rollback --env e --hosts "
        "web-1,web-2` to put them back on their previous release)")


def test_listed_addresses_of_the_upstream_file():
    text = lb.upstream_file(lb.backends(["web-1"], ADDRESSES)).decode() + "server 10.110.0.9:80 down;   # web-9\n"
    assert lb.listed(text) == {"10.110.0.3", "10.110.0.9"}
    assert lb.listed(lb.upstream_file([]).decode()) == set()        # the placeholder is not a web host
