"""DigitalOceanProvider against the local fake API (tests/fakes/do_api.py), plus its pure helpers.

The fake checks every exchange against DigitalOcean's public OpenAPI spec, read at test time from
beside the repository (../shared/do-openapi, or $DO_OPENAPI_SPEC; see tests/fakes/do_openapi.py):
a test whose exchanges break it fails, and without the spec these tests fail (none is skipped).
The resize rules (check_resize, the fake's 422s, fault injection) are in
test_digitalocean_resize_rules.py.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from provision.errors import DropshipError, ProviderError
from provision.providers import digitalocean as do
from provision.providers.base import DropletSpec
from provision.providers.digitalocean import DigitalOceanProvider
from tests.fakes.do_api import OPERATIONS as FAKE_OPERATIONS, fake_do_api, fingerprint as fake_fingerprint
from tests.fakes.do_openapi import OpenApi, load_operations
from tests.unit.do_support import PUBLIC_KEY, TOKEN, action_types, assert_one_line, provider, spec

# --- create / list / get -----------------------------------------------------------------

def test_create_waits_for_active_droplet_with_public_ipv4(api):
    d = provider(api).create(spec(), PUBLIC_KEY)
    assert d.status == "active"
    assert re.fullmatch(r"127\.0\.0\.\d+", d.address)           # public, not the private 10.x one
    assert (d.ssh_port, d.size, d.region, d.image) == (22, "s-1vcpu-1gb", "nyc3", "ubuntu-24-04-x64")
    assert (d.vcpus, d.memory_mb, d.host_keys) == (1, 1024, [])
    assert d.tags == ("dropship", "dropship-env-dev", "web")
    body = api.calls("POST", r"^/v2/droplets$")[0].json
    assert body["monitoring"] is True and body["ssh_keys"] == [next(iter(api.ssh_keys))]


def test_create_registers_the_key_once(api):
    p = provider(api)
    p.create(spec("web-1"), PUBLIC_KEY)
    p.create(spec("web-2"), PUBLIC_KEY)
    assert len(api.calls("POST", r"^/v2/account/keys$")) == 1
    (key,) = api.ssh_keys.values()
    assert key["name"] == "dropship-dev" and key["fingerprint"] == do.md5_fingerprint(PUBLIC_KEY)


def test_create_reuses_a_key_already_on_the_account(api):
    other = provider(api, env="other")
    other._ensure_ssh_key("setup", PUBLIC_KEY)                    # registered as dropship-other
    provider(api).create(spec(), PUBLIC_KEY)
    assert len(api.calls("POST", r"^/v2/account/keys$")) == 1


def test_create_is_idempotent_by_name(api):
    p = provider(api)
    first = p.create(spec(), PUBLIC_KEY)
    again = p.create(spec(), PUBLIC_KEY)
    assert again.id == first.id and len(api.droplets) == 1
    assert len(api.calls("POST", r"^/v2/droplets$")) == 1


def test_create_resumes_waiting_for_a_droplet_still_booting():
    with fake_do_api(token=TOKEN, boot_delay=0.3) as api:
        with pytest.raises(ProviderError, match="still not done"):
            provider(api, timeout=0.05).create(spec(), PUBLIC_KEY)
        d = provider(api).create(spec(), PUBLIC_KEY)
        assert d.status == "active" and len(api.droplets) == 1


def test_list_and_get_are_scoped_to_the_environment(api):
    provider(api, env="prod").create(spec("web-1"), PUBLIC_KEY)
    dev = provider(api)
    dev.create(spec("web-1"), PUBLIC_KEY)
    dev.create(spec("db-1", tags=()), PUBLIC_KEY)
    assert [d.name for d in dev.list()] == ["db-1", "web-1"]
    prod_web = provider(api, env="prod").get("web-1")
    assert "dropship-env-dev" in dev.get("web-1").tags and dev.get("web-1").id != prod_web.id
    assert dev.get("nope") is None
    assert provider(api, env="staging").list() == []


def test_list_follows_pages(api, monkeypatch):
    p = provider(api)
    for i in range(5):
        p.create(spec(f"web-{i}"), PUBLIC_KEY)
    monkeypatch.setattr(do, "PER_PAGE", 2)
    assert len(p.list()) == 5
    assert len(api.calls("GET", r"tag_name=dropship-env-dev")) == 3


# --- power / resize / snapshot / destroy --------------------------------------------------

def test_power_off_and_on(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    assert p.power("web-1", on=False).status == "off"
    assert p.power("web-1", on=False).status == "off"             # already off: no action
    assert p.power("web-1", on=True).status == "active"
    assert [b["type"] for b in action_types(api)] == ["shutdown", "power_on"]


def test_power_falls_back_to_power_off_when_shutdown_errors(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    api.errored_actions.add("shutdown")
    assert p.power("web-1", on=False).status == "off"
    assert [b["type"] for b in action_types(api)] == ["shutdown", "power_off"]


def test_a_failed_action_is_reported(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    api.errored_actions.add("snapshot")
    with pytest.raises(ProviderError, match="snapshotting droplet web-1 as s1: the snapshot action failed"):
        p.snapshot("web-1", "s1")


def test_resize_powers_off_resizes_without_disk_and_powers_on(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    d = p.resize("web-1", "s-2vcpu-4gb")
    assert (d.size, d.vcpus, d.memory_mb, d.status) == ("s-2vcpu-4gb", 2, 4096, "active")
    assert action_types(api) == [{"type": "shutdown"},
                                 {"type": "resize", "size": "s-2vcpu-4gb", "disk": False},
                                 {"type": "power_on"}]
    assert api.droplet("web-1")["disk"] == 25                      # disk untouched: revertible


def test_resize_of_an_off_droplet_leaves_it_off(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    p.power("web-1", on=False)
    assert p.resize("web-1", "s-2vcpu-2gb").status == "off"
    assert [b["type"] for b in action_types(api)] == ["shutdown", "resize"]


def test_resize_to_the_same_size_does_nothing(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    assert p.resize("web-1", "s-1vcpu-1gb").size == "s-1vcpu-1gb"
    assert action_types(api) == []


def test_resize_refused_powers_the_droplet_back_on(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    with pytest.raises(ProviderError) as e:
        p.resize("web-1", "s-64vcpu-1tb")
    assert "resizing droplet web-1 to s-64vcpu-1tb" in str(e.value) and "422" in str(e.value)
    assert_one_line(e.value)
    assert [b["type"] for b in action_types(api)] == ["shutdown", "resize", "power_on"]
    assert p.get("web-1").status == "active"


def test_snapshot_returns_the_snapshot_id(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    snap_id = p.snapshot("web-1", "web-1-before-upgrade")
    assert api.snapshots[int(snap_id)]["name"] == "web-1-before-upgrade"
    assert action_types(api) == [{"type": "snapshot", "name": "web-1-before-upgrade"}]


def test_destroy_is_idempotent(api):
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    p.destroy("web-1")
    p.destroy("web-1")
    assert api.droplets == {} and p.get("web-1") is None
    assert len(api.calls("DELETE")) == 1


def test_actions_on_a_missing_droplet_name_it(api):
    with pytest.raises(ProviderError, match="droplet ghost not found in environment dev"):
        provider(api).power("ghost", on=True)


# --- errors -------------------------------------------------------------------------------

def test_bad_token_is_a_one_line_error_without_the_token(api):
    bad = "dop_v1_wrong-token-fedcba9876543210"
    with pytest.raises(ProviderError) as e:
        provider(api, token=bad).create(spec(), PUBLIC_KEY)
    text = str(e.value)
    assert "web-1" in text and "401" in text and "DIGITALOCEAN_TOKEN" in text
    assert bad not in text and TOKEN not in text and "\n" not in text
    assert bad not in repr(provider(api, token=bad))


def test_invalid_size_is_a_clear_error(api):
    with pytest.raises(ProviderError) as e:
        provider(api).create(spec(size="s-99vcpu-1tb"), PUBLIC_KEY)
    text = str(e.value)
    assert text.startswith("creating droplet web-1: DigitalOcean refused the request "
                           "(422 unprocessable_entity: You specified an invalid size for Droplet creation.; "
                           "request_id ")
    assert "fix:" in text
    assert_one_line(e.value)


def test_an_error_line_has_the_id_message_and_request_id_of_the_error_body(api):
    api.fail_next(422, method="POST", body={"id": "unprocessable_entity", "request_id": "4d9d8375-3c56",
                                            "message": "This size is not available because it has a smaller disk."})
    with pytest.raises(ProviderError) as e:
        provider(api).create(spec(), PUBLIC_KEY)
    assert str(e.value).startswith(
        "creating droplet web-1: registering SSH key: DigitalOcean refused the request (422 unprocessable_entity: "
        "This size is not available because it has a smaller disk.; request_id 4d9d8375-3c56) (fix: ")
    assert_one_line(e.value)


def test_an_error_line_takes_the_request_id_from_the_header_when_the_body_has_none(api):
    api.fail_next(500, headers={"x-request-id": "515850a0-a812"}, body={"id": "server_error", "message": "oops"})
    with pytest.raises(ProviderError, match=r"\(500 server_error: oops; request_id 515850a0-a812\)"):
        provider(api).list()


def test_error_detail():
    body = {"id": "not_found", "message": "gone\nfor good", "request_id": "r-1"}
    assert do.error_detail(404, body) == "404 not_found: gone for good; request_id r-1"
    assert do.error_detail(422, None, "r-2") == "422 unprocessable_entity; request_id r-2"
    assert do.error_detail(503, "not json") == "503 service_unavailable"
    assert do.error_detail(599, {}) == "599"
    assert do.error_detail(500, {"message": "token s3cr3t"}, secret="s3cr3t") == "500 internal_server_error: token ***"


def test_rate_limit_is_retried_honouring_ratelimit_reset(api):
    p = provider(api)
    waits: list[float] = []
    p._sleep = waits.append
    reset = str(int(time.time()) + 3)
    api.fail_next(429, method="GET", times=2, headers={"ratelimit-remaining": "0", "ratelimit-reset": reset})
    assert p.list() == []
    assert len(waits) == 2 and all(1.5 <= w <= 3.0 for w in waits)
    assert len(api.calls("GET")) == 3


def test_rate_limit_gives_up_after_a_few_retries(api):
    p = provider(api)
    p._sleep = lambda s: None
    api.fail_next(429, times=100)
    with pytest.raises(ProviderError, match=r"listing droplets of environment dev: .*rate limit") as e:
        p.list()
    assert_one_line(e.value)
    assert len(api.requests) == do.RATE_LIMIT_RETRIES + 1


def test_server_errors_are_mapped(api):
    api.fail_next(503, body={"id": "service_unavailable", "message": "try later"})
    with pytest.raises(ProviderError) as e:
        provider(api).get("web-1")
    assert re.match(r"looking up droplet web-1: DigitalOcean API error \(503 service_unavailable: try later; "
                    r"request_id [0-9a-f-]{36}\) \(fix: rerun later", str(e.value))
    assert_one_line(e.value)


def test_a_token_echoed_by_the_api_is_redacted(api):
    api.fail_next(500, body={"id": "server_error", "message": f"bad thing with {TOKEN}\nsecond line"})
    with pytest.raises(ProviderError) as e:
        provider(api).list()
    assert "***" in str(e.value)
    assert_one_line(e.value)


def test_unreachable_api_is_a_provider_error():
    with fake_do_api() as api:
        url = api.url
    with pytest.raises(ProviderError, match="cannot reach the DigitalOcean API at 127.0.0.1"):
        DigitalOceanProvider(TOKEN, "dev", endpoint=url).list()


@pytest.mark.parametrize("token", ["", "   ", None])
def test_missing_token(token):
    with pytest.raises(DropshipError) as e:
        DigitalOceanProvider(token, "dev")
    assert e.value.message == "DigitalOcean token not set"
    assert e.value.fix == "export DIGITALOCEAN_TOKEN=... or set it in .secrets/dev.yaml"


def test_plain_http_only_to_loopback():
    with pytest.raises(DropshipError, match="refusing to send the DigitalOcean token"):
        DigitalOceanProvider(TOKEN, "dev", endpoint="http://api.example.com")
    DigitalOceanProvider(TOKEN, "dev", endpoint="https://api.example.com")


def test_bad_public_key_is_a_dropship_error(api):
    with pytest.raises(DropshipError, match="bad SSH public key"):
        provider(api).create(spec(), "ssh-ed25519 not-base64!")


# --- the fake itself ----------------------------------------------------------------------

def test_fake_rejects_requests_without_the_token(api):
    import requests
    r = requests.get(f"{api.url}/v2/droplets", timeout=5)
    assert r.status_code == 401 and r.json() == {"id": "unauthorized", "message": "Unable to authenticate you",
                                                 "request_id": r.headers["x-request-id"]}
    assert r.headers["content-type"].startswith("application/json") and "ratelimit-reset" in r.headers
    r = requests.get(f"{api.url}/v2/droplets?tag_name=a&name=b",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 400                                   # the spec forbids combining them
    r = requests.post(f"{api.url}/v2/droplets", json={"name": "x"},
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 422 and r.json()["id"] == "unprocessable_entity"


# --- pure helpers -------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_md5_fingerprint_matches_ssh_keygen(tmp_path, kind):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "a b c", "-f", str(key)], check=True)
    out = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", f"{key}.pub"],
                         check=True, capture_output=True, text=True).stdout
    expected = re.search(r"MD5:([0-9a-f:]{47})", out).group(1)
    public = (tmp_path / "id.pub").read_text()
    assert do.md5_fingerprint(public) == expected == fake_fingerprint(public)


@pytest.mark.parametrize("line", ["", "ssh-ed25519", "ssh-ed25519 %%%", "ssh-rsa " + PUBLIC_KEY.split()[1]])
def test_md5_fingerprint_rejects_non_keys(line):
    with pytest.raises(ValueError):
        do.md5_fingerprint(line)


def test_public_ipv4_picks_the_public_interface():
    nets = {"networks": {"v4": [
        {"ip_address": "10.128.192.124", "netmask": "255.255.0.0", "gateway": "nil", "type": "private"},
        {"ip_address": "192.241.165.154", "netmask": "255.255.255.0", "gateway": "192.241.165.1",
         "type": "public"}], "v6": []}}
    assert do.public_ipv4(nets) == "192.241.165.154"
    assert do.public_ipv4({"networks": {"v4": [], "v6": []}}) is None
    assert do.public_ipv4({}) is None


def test_to_droplet_from_an_api_object():
    d = do.to_droplet({
        "id": 3164444, "name": "example.com", "memory": 1024, "vcpus": 1, "status": "active",
        "image": {"id": 7555620, "slug": None}, "size_slug": "s-1vcpu-1gb", "region": {"slug": "nyc3"},
        "networks": {"v4": [{"ip_address": "104.236.32.182", "type": "public"}]}, "tags": ["web"]})
    assert (d.id, d.address, d.image, d.region, d.memory_mb, d.tags) == \
        ("3164444", "104.236.32.182", "7555620", "nyc3", 1024, ("web",))


def test_request_body_helpers():
    body = do.create_body(spec(tags=("web", "dropship")), "dev", 42)
    assert body["tags"] == ["dropship", "dropship-env-dev", "web"] and body["ssh_keys"] == [42]
    assert do.create_body(DropletSpec("a", "s-1vcpu-1gb", "nyc3", "12345"), "dev", 1)["image"] == 12345
    assert do.action_body("resize", size="s-2vcpu-4gb", disk=False) == \
        {"type": "resize", "size": "s-2vcpu-4gb", "disk": False}
    assert do.ssh_key_body("dev", PUBLIC_KEY + "\n") == {"name": "dropship-dev", "public_key": PUBLIC_KEY}


def test_rate_limit_wait():
    assert do.rate_limit_wait({"Retry-After": "7"}, 0, 1000.0) == 7.0
    assert do.rate_limit_wait({"ratelimit-reset": "1005"}, 0, 1000.0) == 5.0
    assert do.rate_limit_wait({"ratelimit-reset": "990"}, 0, 1000.0) == 0.0
    assert do.rate_limit_wait({"ratelimit-reset": "99999"}, 0, 1000.0) == do.MAX_RATE_LIMIT_WAIT
    assert [do.rate_limit_wait({}, n, 0) for n in range(3)] == [1.0, 2.0, 4.0]


# --- requests and responses against the OpenAPI spec --------------------------------------

OPENAPI_OPERATIONS = (  # spec operationIds of the calls the provider makes
    "droplets_list", "droplets_create", "droplets_get", "droplets_destroy", "dropletActions_post",
    "dropletActions_list", "actions_get", "sshKeys_list", "sshKeys_create", "droplets_list_snapshots",
    "sizes_list")

@pytest.fixture(scope="module")
def openapi():
    return OpenApi(load_operations(FAKE_OPERATIONS))      # FileNotFoundError (says where) without the spec


def test_the_spec_has_the_operations_the_provider_uses(openapi):
    assert set(OPENAPI_OPERATIONS) <= set(FAKE_OPERATIONS)
    assert {(op["method"], op["path"], op["response"]["status"])
            for op_id, op in openapi.operations.items() if op_id in OPENAPI_OPERATIONS} == {
        ("GET", "/v2/droplets", 200), ("POST", "/v2/droplets", 202),
        ("GET", "/v2/droplets/{droplet_id}", 200), ("DELETE", "/v2/droplets/{droplet_id}", 204),
        ("POST", "/v2/droplets/{droplet_id}/actions", 201), ("GET", "/v2/actions/{action_id}", 200),
        ("GET", "/v2/droplets/{droplet_id}/actions", 200), ("GET", "/v2/sizes", 200),
        ("GET", "/v2/account/keys", 200), ("POST", "/v2/account/keys", 201),
        ("GET", "/v2/droplets/{droplet_id}/snapshots", 200)}
    errors = openapi.operations["dropletActions_post"]["errors"]
    assert {"401", "404", "429", "500", "default"} <= errors.keys()
    assert errors["default"]["schema"]["required"] == ["id", "message"]
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= errors["429"]["headers"].keys()
    def refs(node) -> int:
        if isinstance(node, dict):
            return ("$ref" in node) + sum(refs(v) for v in node.values())
        return sum(refs(v) for v in node) if isinstance(node, list) else 0
    assert refs(openapi.doc) == 0                                  # every $ref resolved


def test_openapi_checker_is_not_vacuous(openapi):
    schema = openapi.request_schema("POST", "/v2/droplets")
    assert openapi.problems(schema, {"name": "a", "size": "s", "image": "i"}, request=True) == []
    assert openapi.problems(schema, {"name": "a", "image": "i", "colour": "red"}, request=True)
    assert openapi.problems(schema, {"name": "a", "size": "s", "image": "i", "monitoring": "yes"}, request=True)
    schema = openapi.request_schema("POST", "/v2/droplets/{droplet_id}/actions")
    assert openapi.problems(schema, {"type": "power_on", "size": "s-1vcpu-1gb"}, request=True) == ["unknown size"]
    assert openapi.problems(schema, {"type": "resize", "size": "s", "disk": "no"}, request=True) == \
        ["disk is not boolean"]
    schema = openapi.request_schema("POST", "/v2/account/keys")
    assert openapi.problems(schema, {"name": "k", "public_key": "ssh-ed25519 AAAA", "id": 1}, request=True) == \
        ["unknown id"]                                             # readOnly

    droplet = openapi.operation("GET", "/v2/droplets/1")["response"]["schema"]
    assert openapi.problems(droplet, {"droplet": {"id": "1", "name": "a"}})[:2] == \
        ["missing droplet.memory", "missing droplet.vcpus"]
    assert "droplet.id is not integer" in openapi.problems(droplet, {"droplet": {"id": "1"}})
    assert openapi.problems(droplet, {"droplet": {"id": 1, "status": "sleeping"}})[-1].startswith(
        "droplet.status is not one of")
    action = openapi.operation("GET", "/v2/actions/1")["response"]["schema"]
    assert openapi.problems(action, {"action": {"id": 1, "completed_at": None}}) == []   # nullable
    assert openapi.problems(action, {"action": {"id": True}}) == ["action.id is not integer"]
    keys = openapi.operation("GET", "/v2/account/keys")["response"]["schema"]
    assert openapi.problems(keys, {"ssh_keys": [{"id": 1}]}) == \
        ["missing meta", "missing ssh_keys[0].public_key", "missing ssh_keys[0].name"]


def test_exchange_problems(openapi):
    headers = {"ratelimit-limit": "5000", "ratelimit-remaining": "4999", "ratelimit-reset": "1444931833"}
    ok = {"action": {"id": 1, "status": "in-progress", "type": "power_on"}}
    assert openapi.exchange_problems("POST", "/v2/droplets/1/actions", 201, {"type": "power_on"}, ok, headers) == []
    assert openapi.exchange_problems("POST", "/v2/droplets/1/actions", 200, {"type": "power_on"}, ok, headers) == \
        ["POST /v2/droplets/1/actions -> 200: the spec answers 201"]
    assert openapi.exchange_problems("POST", "/v2/droplets/1/actions", 201, {"type": "resize", "disk": "no"},
                                     ok, headers) == ["POST /v2/droplets/1/actions -> 201: request disk is not boolean"]
    assert openapi.exchange_problems("GET", "/v2/sizes", 422, None, {"message": "m"}, {"ratelimit-reset": "x"}) == [
        "GET /v2/sizes -> 422: missing id", "GET /v2/sizes -> 422: missing header ratelimit-limit",
        "GET /v2/sizes -> 422: missing header ratelimit-remaining",
        "GET /v2/sizes -> 422: header ratelimit-reset is not integer"]
    assert openapi.exchange_problems("GET", "/v2/nothing", 200, None, {}, {}) == \
        ["GET /v2/nothing -> 200: no such operation in the spec"]
    assert openapi.exchange_problems("DELETE", "/v2/droplets/1", 204, None, {"x": 1},
                                     {**headers, "content-type": "application/json"}) == \
        ["DELETE /v2/droplets/1 -> 204: a body where the spec has none"]


def _exercise(api) -> None:
    """Run the provider through every call it makes."""
    p = provider(api)
    p.create(spec(), PUBLIC_KEY)
    p.power("web-1", on=False)
    p.power("web-1", on=True)
    p.check_resize("web-1", "s-2vcpu-4gb")
    p.resize("web-1", "s-2vcpu-4gb")
    p.resize("web-1", "s-4vcpu-8gb", disk=True)
    p.snapshot("web-1", "snap")
    p.destroy("web-1")


def test_every_request_body_conforms_to_the_openapi_spec(api, openapi):
    _exercise(api)
    sent = [r for r in api.requests if r.method in ("POST", "PUT", "PATCH")]
    assert {openapi.operation(r.method, r.path)["path"] for r in sent} == \
        {"/v2/droplets", "/v2/droplets/{droplet_id}/actions", "/v2/account/keys"}
    for r in sent:
        schema = openapi.request_schema(r.method, r.path)
        assert openapi.problems(schema, r.json, request=True) == [], (r.method, r.path, r.json)


def test_every_fake_answer_conforms_to_the_openapi_spec(api, openapi):
    _exercise(api)
    assert api.violations == []                 # each exchange was checked by the fake itself
    used = {op_id for op_id, op in openapi.operations.items()
            if any(openapi.find(r.method, r.path) is op for r in api.requests)}
    assert used == set(OPENAPI_OPERATIONS)


def test_a_fake_answer_that_breaks_the_spec_fails_the_test():
    with pytest.raises(AssertionError, match=r"broke the OpenAPI spec \(1\): GET /v2/sizes -> 200: "
                                             r"sizes\[1\]\.memory is not integer"):
        with fake_do_api(token=TOKEN) as api:
            api.sizes["s-1vcpu-1gb"]["memory"] = "1 GB"
            provider(api)._paged("listing sizes", provider(api)._client.sizes.list, "sizes")
