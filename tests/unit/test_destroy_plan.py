"""Which droplets `droplet.destroy` removes: the inventory's, or those it no longer lists (left over
after a host was removed from it), by name; and which web hosts the lb's upstream still serves."""
import textwrap

import pytest

from provision import balancer
from provision.errors import DropshipError
from provision.inventory import load_inventory
from provision.providers.base import Droplet
from provision.workflows.droplets import destroy_plan, leftovers


def env(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(textwrap.dedent("""\
        environments:
          e:
            provider: local
            droplets:
              - {name: lb-1, size: s-1vcpu-1gb, roles: [base, nginx, lb]}
              - {name: web-1, size: s-1vcpu-1gb, roles: [base, nginx, app]}
            hosts:
              - {name: db-1, address: 10.0.0.5, roles: [base, postgres]}
        """))
    return load_inventory(inventory)["e"]


def test_leftovers_are_the_droplets_the_inventory_no_longer_lists(tmp_path):
    found = [Droplet(n, f"id-{n}", "active", "10.0.0.9", 22) for n in ("web-3", "lb-1", "web-1", "web-2")]
    assert leftovers(env(tmp_path), found) == ["web-3", "web-2"]


def test_destroy_plan(tmp_path):
    e = env(tmp_path)
    assert destroy_plan(e, None, ["web-3"]) == ["lb-1", "web-1", "web-3"]      # the fixed host is not a droplet
    assert destroy_plan(e, None, []) == ["lb-1", "web-1"]
    assert destroy_plan(e, ("web-3",), ["web-3"]) == ["web-3"]
    assert destroy_plan(e, ("web-1", "web-3"), ["web-3"]) == ["web-1", "web-3"]
    with pytest.raises(DropshipError) as err:
        destroy_plan(e, ("web-9",), ["web-3"])
    assert str(err.value) == ("unknown host(s) web-9 in environment e "
                              "(fix: use one of: db-1, lb-1, web-1, web-3)")
    with pytest.raises(DropshipError, match="^db-1: fixed-address hosts are not managed by a provider"):
        destroy_plan(e, ("db-1",), [])


def test_serving_is_the_upstream_servers_not_marked_down():
    text = balancer.upstream_file(balancer.backends(["web-1", "web-2"], {"web-1": "10.1.0.3", "web-2": "10.1.0.4"},
                                                    down=("web-2",))).decode()
    assert balancer.serving(text) == {"10.1.0.3"} and balancer.listed(text) == {"10.1.0.3", "10.1.0.4"}
    assert balancer.serving(balancer.upstream_file([]).decode()) == set()
    assert balancer.serving("server 10.1.0.5:80 max_fails=1;   # down-town\n") == {"10.1.0.5"}
