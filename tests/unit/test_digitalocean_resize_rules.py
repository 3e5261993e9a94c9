"""Resizing on DigitalOcean: check_resize's refusals, resize with and without the disk, the fake
API's own resize rules (hit directly through pydo), its fault injection, and the pure helpers.

Against the in-process fake (tests/fakes/do_api.py, MemoryBackend): fast, no Docker.
"""
from __future__ import annotations

import re

import pytest

from provision.errors import ProviderError
from provision.providers import digitalocean as do
from provision.providers.base import SizeInfo
from tests.fakes.do_api import size_json
from tests.unit.do_support import PUBLIC_KEY, TOKEN, action_types, assert_one_line, provider, spec


def created(api, size: str = "s-1vcpu-1gb", name: str = "web-1") -> do.DigitalOceanProvider:
    p = provider(api)
    p.create(spec(name, size=size), PUBLIC_KEY)
    return p


def refused(api, p: do.DigitalOceanProvider, size: str, disk: bool = False) -> str:
    """check_resize's one-line error, having checked it changed nothing."""
    before = len(api.requests)
    with pytest.raises(ProviderError) as e:
        p.check_resize("web-1", size, disk=disk)
    assert_one_line(e.value)
    assert [r.method for r in api.requests[before:]] and all(r.method == "GET" for r in api.requests[before:])
    return str(e.value)


# --- check_resize ---------------------------------------------------------------------------

def test_check_resize_returns_the_target_size_and_changes_nothing(api):
    p = created(api)
    assert p.check_resize("web-1", "s-2vcpu-4gb") == SizeInfo("s-2vcpu-4gb", 2, 4096, 80)
    assert p.check_resize("web-1", "s-2vcpu-4gb", disk=True) == SizeInfo("s-2vcpu-4gb", 2, 4096, 80)
    assert p.check_resize("web-1", "s-1vcpu-1gb") == SizeInfo("s-1vcpu-1gb", 1, 1024, 25)   # its own size
    assert action_types(api) == [] and api.droplet("web-1")["size_slug"] == "s-1vcpu-1gb"
    assert api.calls("GET", r"^/v2/sizes\?") and api.calls("GET", r"^/v2/droplets/\d+/actions\?")


def test_check_resize_refuses_an_unknown_size(api):
    text = refused(api, created(api), "s-64vcpu-1tb")
    assert text == ("cannot resize droplet web-1 from s-1vcpu-1gb to s-64vcpu-1tb: DigitalOcean has no size "
                    "s-64vcpu-1tb (fix: pick a size available in nyc3 with at least 25 GB of disk, e.g. "
                    "s-1vcpu-2gb, s-2vcpu-2gb, s-2vcpu-4gb, s-4vcpu-8gb (doctl compute size list))")


def test_check_resize_refuses_an_unavailable_size(api):
    p = created(api)
    api.set_size("s-2vcpu-4gb", available=False)
    text = refused(api, p, "s-2vcpu-4gb")
    assert text.startswith("cannot resize droplet web-1 from s-1vcpu-1gb to s-2vcpu-4gb: "
                           "size s-2vcpu-4gb is not available at DigitalOcean now (fix: ")
    assert "e.g. s-1vcpu-2gb, s-2vcpu-2gb, s-4vcpu-8gb, s-8vcpu-16gb " in text


def test_check_resize_refuses_a_size_not_offered_in_the_droplets_region(api):
    p = created(api)
    api.set_size("s-2vcpu-4gb", regions=["fra1", "ams3"])
    api.set_size("s-2vcpu-2gb", regions=["fra1"])
    text = refused(api, p, "s-2vcpu-4gb")
    assert "web-1 from s-1vcpu-1gb to s-2vcpu-4gb: size s-2vcpu-4gb is not offered in region nyc3 (fix: " in text
    assert "e.g. s-1vcpu-2gb, s-4vcpu-8gb, s-8vcpu-16gb " in text                # only sizes offered in nyc3


def test_check_resize_refuses_a_size_too_small_for_the_image(api):
    p = created(api, size="s-1vcpu-512mb-10gb")
    api.droplet("web-1")["image"]["min_disk_size"] = 30                       # e.g. a big custom image
    text = refused(api, p, "s-1vcpu-1gb")
    assert text.startswith("cannot resize droplet web-1 from s-1vcpu-512mb-10gb to s-1vcpu-1gb: size "
                           "s-1vcpu-1gb has a 25 GB disk, smaller than the 30 GB its image ubuntu-24-04-x64 needs "
                           "(fix: pick a size available in nyc3 with at least 30 GB of disk, e.g. s-1vcpu-2gb, ")


@pytest.mark.parametrize("disk", [False, True])
def test_check_resize_refuses_a_smaller_disk_with_or_without_disk(api, disk):
    p = created(api, size="s-1vcpu-2gb")
    text = refused(api, p, "s-1vcpu-1gb", disk=disk)
    assert text.startswith("cannot resize droplet web-1 from s-1vcpu-2gb to s-1vcpu-1gb: size s-1vcpu-1gb has a "
                           "25 GB disk, smaller than the droplet's 50 GB disk (a disk never shrinks, even in a "
                           "CPU/RAM-only resize) (fix: pick a size available in nyc3 with at least 50 GB of disk, "
                           "e.g. s-2vcpu-2gb, s-2vcpu-4gb, ")


def test_check_resize_counts_the_disk_not_the_size_slug(api):
    p = created(api)
    p.resize("web-1", "s-2vcpu-4gb", disk=True)                             # the disk grew to 80 GB
    assert "smaller than the droplet's 80 GB disk" in refused(api, p, "s-2vcpu-2gb")
    p.resize("web-1", "s-4vcpu-8gb")                                        # CPU/RAM only: still 80 GB
    assert p.check_resize("web-1", "s-2vcpu-4gb").disk_gb == 80


def test_check_resize_refuses_while_an_action_is_in_progress(api):
    p = created(api)
    api.action_delay = 60                                                   # the next action stays pending
    p._client.droplet_actions.post(droplet_id=api.droplet("web-1")["id"], body={"type": "power_off"},
                                   **p._call_opts)
    (pending,) = [a for a in api.actions.values() if a["type"] == "power_off"]
    text = refused(api, p, "s-2vcpu-4gb")
    assert text == (f"cannot resize droplet web-1 from s-1vcpu-1gb to s-2vcpu-4gb: its power_off action "
                    f"(id {pending['id']}) is still in progress (fix: wait until it completes "
                    f"(doctl compute action get {pending['id']}), then rerun)")


def test_check_resize_of_a_missing_droplet(api):
    with pytest.raises(ProviderError, match="droplet ghost not found in environment dev"):
        provider(api).check_resize("ghost", "s-2vcpu-4gb")


def test_check_resize_with_a_wrong_token_is_one_line_without_the_token(api):
    bad = "dop_v1_wrong-token-fedcba9876543210"
    with pytest.raises(ProviderError) as e:
        provider(api, token=bad).check_resize("web-1", "s-2vcpu-4gb")
    text = str(e.value)
    assert re.match(r"looking up droplet web-1: DigitalOcean rejected the API token \(401 unauthorized: "
                    r"Unable to authenticate you; request_id [0-9a-f-]{36}\) \(fix: create a read/write token "
                    r"at cloud\.digitalocean\.com/account/api/tokens and export DIGITALOCEAN_TOKEN=", text)
    assert bad not in text and TOKEN not in text and "\n" not in text


def test_check_resize_retries_a_rate_limit_honouring_retry_after(api):
    p = created(api)
    waits: list[float] = []
    p._sleep = waits.append
    api.fail_next(429, method="GET", path=r"^/v2/sizes", times=2, headers={"retry-after": "3"})
    assert p.check_resize("web-1", "s-2vcpu-4gb").slug == "s-2vcpu-4gb"
    assert waits == [3.0, 3.0] and len(api.calls("GET", r"^/v2/sizes")) == 3


def test_check_resize_follows_pages(api, monkeypatch):
    p = created(api)
    monkeypatch.setattr(do, "PER_PAGE", 2)
    assert p.check_resize("web-1", "s-8vcpu-16gb").slug == "s-8vcpu-16gb"   # the last size, on page 4
    assert len(api.calls("GET", r"^/v2/sizes\?")) == 4


# --- resize -----------------------------------------------------------------------------------

def test_resize_with_disk_grows_the_disk(api):
    p = created(api)
    d = p.resize("web-1", "s-2vcpu-4gb", disk=True)
    assert (d.size, d.vcpus, d.memory_mb, d.disk_gb, d.status) == ("s-2vcpu-4gb", 2, 4096, 80, "active")
    assert action_types(api)[1] == {"type": "resize", "size": "s-2vcpu-4gb", "disk": True}


def test_resize_without_disk_keeps_the_disk(api):
    p = created(api)
    d = p.resize("web-1", "s-2vcpu-4gb")
    assert (d.size, d.memory_mb, d.disk_gb) == ("s-2vcpu-4gb", 4096, 25)
    assert action_types(api)[1] == {"type": "resize", "size": "s-2vcpu-4gb", "disk": False}


def test_resize_to_its_size_with_disk_grows_a_disk_left_behind(api):
    p = created(api)
    p.resize("web-1", "s-2vcpu-4gb")
    assert p.resize("web-1", "s-2vcpu-4gb").disk_gb == 25                  # nothing to do
    assert p.resize("web-1", "s-2vcpu-4gb", disk=True).disk_gb == 80
    assert [b["type"] for b in action_types(api)].count("resize") == 2


def test_a_resize_action_that_errors_leaves_the_droplet_on_at_its_old_size(api):
    p = created(api)
    api.fail_action("resize")
    with pytest.raises(ProviderError, match="resizing droplet web-1 to s-2vcpu-4gb: the resize action failed"):
        p.resize("web-1", "s-2vcpu-4gb")
    d = p.get("web-1")
    assert (d.status, d.size, d.memory_mb) == ("active", "s-1vcpu-1gb", 1024)
    assert [b["type"] for b in action_types(api)] == ["shutdown", "resize", "power_on"]
    assert p.resize("web-1", "s-2vcpu-4gb").size == "s-2vcpu-4gb"          # only the next one failed


def test_a_refused_resize_post_is_one_line_and_the_droplet_is_powered_back_on(api):
    p = created(api)
    api.fail_action("resize", status=422, message="This size is not available because it has a smaller disk.")
    with pytest.raises(ProviderError) as e:
        p.resize("web-1", "s-2vcpu-4gb")
    assert re.match(r"resizing droplet web-1 to s-2vcpu-4gb: DigitalOcean refused the request \(422 "
                    r"unprocessable_entity: This size is not available because it has a smaller disk\.; "
                    r"request_id [0-9a-f-]{36}\) \(fix: ", str(e.value))
    assert_one_line(e.value)
    assert (p.get("web-1").status, p.get("web-1").size) == ("active", "s-1vcpu-1gb")


# --- the fake's own rules, through pydo -------------------------------------------------------

def answer(call) -> tuple[int, dict]:
    """(status, error body) of a pydo call the fake refuses."""
    from azure.core.exceptions import HttpResponseError
    with pytest.raises(HttpResponseError) as e:
        call()
    body = e.value.response.json()
    assert set(body) == {"id", "message", "request_id"}
    assert body["request_id"] == e.value.response.headers["x-request-id"]
    return e.value.status_code, body


def post(api, p, name: str = "web-1", **body):
    return lambda: p._client.droplet_actions.post(droplet_id=api.droplet(name)["id"], body=body, **p._call_opts)


def off(api, size: str = "s-1vcpu-1gb") -> do.DigitalOceanProvider:
    p = created(api, size=size)
    p.power("web-1", on=False)
    return p


def test_fake_refuses_to_resize_a_powered_on_droplet(api):
    p = created(api)
    status, body = answer(post(api, p, type="resize", size="s-2vcpu-4gb"))
    assert (status, body["id"], body["message"]) == \
        (422, "unprocessable_entity", "Droplet is currently on. Please power it off to run this event.")
    assert api.droplet("web-1")["size_slug"] == "s-1vcpu-1gb"


@pytest.mark.parametrize("change, size, message", [
    (None, "s-64vcpu-1tb", "You specified an invalid size for Droplet resize."),
    ({"available": False}, "s-2vcpu-4gb", "This size is not available at this time."),
    ({"regions": ["fra1"]}, "s-2vcpu-4gb", "This size is not available in the region nyc3."),
    (None, "s-1vcpu-512mb-10gb", "This size is not available because it has a smaller disk."),
])
@pytest.mark.parametrize("disk", [False, True])
def test_fake_refuses_sizes_a_droplet_cannot_get(api, change, size, message, disk):
    p = off(api)
    if change:
        api.set_size(size, **change)
    status, body = answer(post(api, p, type="resize", size=size, disk=disk))
    assert (status, body["id"], body["message"]) == (422, "unprocessable_entity", message)
    assert api.droplet("web-1")["size_slug"] == "s-1vcpu-1gb"


def test_fake_refuses_a_size_below_the_images_min_disk_size(api):
    p = off(api, size="s-1vcpu-512mb-10gb")
    api.droplet("web-1")["image"]["min_disk_size"] = 30
    status, body = answer(post(api, p, type="resize", size="s-1vcpu-1gb"))
    assert status == 422 and "minimum disk size" in body["message"]


def test_fake_refuses_an_action_while_another_is_in_progress(api):
    p = off(api)
    api.action_delay = 60
    post(api, p, type="power_on")()
    status, body = answer(post(api, p, type="resize", size="s-2vcpu-4gb"))
    assert (status, body["message"]) == (422, "Droplet already has a pending event.")
    (listed,) = [a for a in p._client.droplet_actions.list(droplet_id=api.droplet("web-1")["id"],
                                                            **p._call_opts)["actions"]
                 if a["status"] == "in-progress"]
    assert listed["type"] == "power_on"


def test_fake_refuses_to_create_with_an_unavailable_size(api):
    api.set_size("s-1vcpu-1gb", regions=["fra1"])
    with pytest.raises(ProviderError, match=r"\(422 unprocessable_entity: This size is not available in the "
                                            r"region nyc3\.; request_id "):
        created(api)


def test_fake_lists_sizes_in_pages_in_the_specs_shape(api):
    p = provider(api)
    first = p._client.sizes.list(per_page=3, page=1, **p._call_opts)
    assert [s["slug"] for s in first["sizes"]] == ["s-1vcpu-512mb-10gb", "s-1vcpu-1gb", "s-1vcpu-2gb"]
    assert first["meta"] == {"total": 7} and first["links"]["pages"]["next"].endswith("/v2/sizes?page=2&per_page=3")
    assert first["sizes"][1] == size_json("s-1vcpu-1gb")
    api.set_size("s-1vcpu-1gb", available=False, regions=["fra1"])
    third = p._client.sizes.list(per_page=3, page=3, **p._call_opts)
    assert [s["slug"] for s in third["sizes"]] == ["s-8vcpu-16gb"] and "next" not in third["links"]["pages"]
    again = p._client.sizes.list(per_page=3, page=1, **p._call_opts)["sizes"][1]
    assert (again["available"], again["regions"]) == (False, ["fra1"])
    assert api.violations == []


def test_fake_lists_a_droplets_actions_in_pages(api):
    p = off(api)
    droplet_id = api.droplet("web-1")["id"]
    pages = [p._client.droplet_actions.list(droplet_id=droplet_id, per_page=1, page=n, **p._call_opts)
             for n in (1, 2)]
    assert [a["type"] for page in pages for a in page["actions"]] == ["create", "shutdown"]
    assert all(a["status"] == "completed" and a["resource_id"] == droplet_id for pg in pages for a in pg["actions"])
    assert pages[0]["meta"] == {"total": 2} and "next" in pages[0]["links"]["pages"]


def test_fake_action_faults(api):
    p = off(api)
    api.fail_action("power_on", droplet="other")                           # another droplet: no effect
    api.fail_action("power_on", status=500, times=2)
    for _ in range(2):
        status, body = answer(post(api, p, type="power_on"))
        assert (status, body["id"]) == (500, "server_error")
    assert api.droplet("web-1")["status"] == "off"
    api.fail_action("power_on")
    action = post(api, p, type="power_on")()["action"]
    assert action["status"] == "in-progress"
    assert p._poll("waiting", lambda: p._action_status("waiting", action["id"])) == "errored"
    assert api.droplet("web-1")["status"] == "off"                         # no effect
    assert p.power("web-1", on=True).status == "active"                    # faults used up


def test_fake_error_bodies_carry_a_request_id(api):
    import requests
    r = requests.post(f"{api.url}/v2/droplets", json={"name": "x"}, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=5)
    assert r.status_code == 422 and r.json() == {"id": "unprocessable_entity", "message": "image, size is required",
                                                 "request_id": r.headers["x-request-id"]}


# --- pure helpers -----------------------------------------------------------------------------

def size(slug: str, disk: int, price: float, available: bool = True, regions=("nyc3",)) -> dict:
    return {"slug": slug, "disk": disk, "price_monthly": price, "available": available, "regions": list(regions),
            "vcpus": 1, "memory": 1024}


SIZES = [size("big", 100, 40.0), size("mid", 50, 20.0), size("small", 25, 10.0), size("gone", 80, 30.0, False),
         size("far", 80, 30.0, regions=("fra1",))]
DROPLET = {"name": "web-1", "size_slug": "small", "disk": 25, "region": {"slug": "nyc3"},
           "image": {"slug": "ubuntu-24-04-x64", "min_disk_size": 7}}


def test_fitting_sizes():
    assert do.fitting_sizes(SIZES, "nyc3", 25) == ["small", "mid", "big"]
    assert do.fitting_sizes(SIZES, "nyc3", 26, exclude=("big",)) == ["mid"]
    assert do.fitting_sizes(SIZES, "fra1", 25) == ["far"]
    assert do.fitting_sizes(SIZES, "nyc3", 25, limit=1) == ["small"]
    assert do.fitting_sizes(SIZES, "sgp1", 1) == []


@pytest.mark.parametrize("target, problem", [
    ("nope", "DigitalOcean has no size nope"),
    ("gone", "size gone is not available at DigitalOcean now"),
    ("far", "size far is not offered in region nyc3"),
])
def test_resize_refusal_names_the_problem_and_sizes_that_fit(target, problem):
    assert do.resize_refusal(DROPLET, target, SIZES, []) == (
        problem, "pick a size available in nyc3 with at least 25 GB of disk, e.g. mid, big (doctl compute size list)")


def test_resize_refusal_disk_rules():
    bigger = {**DROPLET, "size_slug": "mid", "disk": 50}
    problem, fix = do.resize_refusal(bigger, "small", SIZES, [])
    assert problem.startswith("size small has a 25 GB disk, smaller than the droplet's 50 GB disk")
    assert fix.endswith("at least 50 GB of disk, e.g. big (doctl compute size list)")
    heavy = {**DROPLET, "image": {"id": 42, "slug": None, "min_disk_size": 60}}
    assert do.resize_refusal(heavy, "mid", SIZES, [])[0] == \
        "size mid has a 50 GB disk, smaller than the 60 GB its image 42 needs"
    huge = {**DROPLET, "disk": 200}
    assert do.resize_refusal(huge, "big", SIZES, [])[1] == \
        "no other size available in nyc3 has 200 GB of disk or more; see doctl compute size list"


def test_resize_refusal_for_an_action_in_progress():
    actions = [{"id": 1, "type": "create", "status": "completed"}, {"id": 7, "type": "snapshot", "status": "in-progress"}]
    assert do.resize_refusal(DROPLET, "mid", SIZES, actions) == (
        "its snapshot action (id 7) is still in progress",
        "wait until it completes (doctl compute action get 7), then rerun")
    assert do.resize_refusal(DROPLET, "mid", SIZES, actions[:1]) is None
    assert do.resize_refusal(DROPLET, "small", SIZES, []) is None           # its own size


def test_size_info_and_to_droplet_disk():
    assert do.size_info(size("mid", 50, 20.0)) == SizeInfo("mid", 1, 1024, 50)
    d = do.to_droplet({"id": 1, "name": "a", "disk": 80, "size": {"slug": "s-2vcpu-4gb"}})
    assert (d.disk_gb, d.size) == (80, "s-2vcpu-4gb")
