"""A local fake of the DigitalOcean v2 API subset Dropship uses (shapes follow the OpenAPI spec).

Served by a threaded HTTP server on 127.0.0.1 (random port)::

    with fake_do_api() as api:
        provider = DigitalOceanProvider("test-token", "dev", endpoint=api.url, poll_interval=0.01)
        ...
        api.droplets      # {id: droplet object}, as GET /v2/droplets/{id} would show it
        api.sizes         # {slug: size object}, as GET /v2/sizes shows them
        api.requests      # [Request(method, path, json)] in arrival order (path includes ?query)
        api.fail_next(429, headers={"ratelimit-reset": "..."})   # inject failures
        api.set_size("s-2vcpu-4gb", available=False)             # or regions=["fra1"]
        api.fail_action("resize")                # the next resize action ends "errored"
        api.fail_action("resize", status=422)    # the next POST of a resize action is refused

Modelled: Bearer-token check (401), request validation (422, strict: unknown keys are
refused too), droplets going ``new`` -> ``active`` after ``boot_delay``, actions going
``in-progress`` -> ``completed`` after ``action_delay`` (one pending action per droplet: another
is refused with 422), sizes (unknown, unavailable or not in the region: 422), resize only while
off and never to a disk smaller than the droplet's or than its image's ``min_disk_size``,
pagination (``page``/``per_page``, ``links.pages``, ``meta.total``), rate-limit headers, error
bodies ``{"id", "message", "request_id"}`` (the same id in ``x-request-id``). Transitions are
applied lazily at the next request, so no timers run.

Every exchange is checked against DigitalOcean's OpenAPI spec (tests/fakes/do_openapi.py):
an answer that does not fit it, or a request the fake accepted that does not, is recorded in
``api.violations`` and fails the ``with`` block when it ends (``spec_check=False`` turns it off).

Where droplets "run" is up to a Backend: the default MemoryBackend only hands out
127.0.0.x addresses; a container backend can make them real SSH-able hosts.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, NamedTuple, Protocol
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tests.fakes.do_openapi import OpenApi, load_operations

# slug -> (vcpus, memory MB, disk GB, transfer TB, price_monthly): each fake starts with these
SIZES: dict[str, tuple[int, int, int, float, float]] = {
    "s-1vcpu-512mb-10gb": (1, 512, 10, 0.5, 4.0),
    "s-1vcpu-1gb": (1, 1024, 25, 1.0, 6.0),
    "s-1vcpu-2gb": (1, 2048, 50, 2.0, 12.0),
    "s-2vcpu-2gb": (2, 2048, 60, 3.0, 18.0),
    "s-2vcpu-4gb": (2, 4096, 80, 4.0, 24.0),
    "s-4vcpu-8gb": (4, 8192, 160, 5.0, 48.0),
    "s-8vcpu-16gb": (8, 16384, 320, 6.0, 96.0),
}
REGIONS: dict[str, str] = {
    "nyc1": "New York 1", "nyc3": "New York 3", "sfo2": "San Francisco 2",
    "sfo3": "San Francisco 3", "ams3": "Amsterdam 3", "sgp1": "Singapore 1",
    "lon1": "London 1", "fra1": "Frankfurt 1", "tor1": "Toronto 1",
    "blr1": "Bangalore 1", "syd1": "Sydney 1",
}
_IMAGE_SLUG = re.compile(r"^[a-z]+-[0-9a-z-]+-x64$")           # ubuntu-24-04-x64, debian-12-x64
_DROPLET_NAME = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
_TAG = re.compile(r"^[a-zA-Z0-9_\-:]{1,255}$")
_CREATE_KEYS = {"name", "region", "size", "image", "ssh_keys", "backups", "backup_policy", "ipv6",
                "monitoring", "tags", "user_data", "private_networking", "volumes", "vpc_uuid",
                "with_droplet_agent", "public_networking"}
_ERRORS: dict[int, tuple[str, str]] = {      # status -> DigitalOcean's error id, a default message
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Unable to authenticate you"),
    403: ("forbidden", "You do not have access for the attempted action."),
    404: ("not_found", "The resource you were accessing could not be found."),
    409: ("conflict", "The request conflicts with the current state of the resource."),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("too_many_requests", "API rate limit exceeded."),
    500: ("server_error", "Unexpected server-side error"),
    503: ("service_unavailable", "The service is temporarily unavailable."),
}
_ACTION_KEYS = {
    "enable_backups": {"backup_policy"}, "disable_backups": set(), "change_backup_policy": {"backup_policy"},
    "reboot": set(), "power_cycle": set(), "shutdown": set(), "power_off": set(), "power_on": set(),
    "restore": {"image"}, "password_reset": set(), "resize": {"size", "disk"}, "rebuild": {"image"},
    "rename": {"name"}, "change_kernel": {"kernel"}, "enable_ipv6": set(), "snapshot": {"name"},
}


# --- backends: where droplets actually live ---------------------------------------------

class Backend(Protocol):
    """What the fake API calls when droplets come and go."""

    def create(self, name: str, size: str, *, image: str, region: str, public_keys: list[str]) -> str:
        """Start a machine; return the address it is reachable at (its "public IPv4")."""

    def destroy(self, name: str) -> None: ...

    def resize(self, name: str, size: str) -> None: ...

    def power(self, name: str, on: bool) -> None: ...


class MemoryBackend:
    """Nothing runs: droplets get addresses 127.0.0.2, 127.0.0.3, ..."""

    def __init__(self) -> None:
        self.machines: dict[str, dict] = {}
        self._next = itertools.count(2)

    def create(self, name: str, size: str, *, image: str, region: str, public_keys: list[str]) -> str:
        address = f"127.0.0.{(next(self._next) - 2) % 253 + 2}"
        self.machines[name] = {"address": address, "size": size, "image": image, "on": True,
                               "public_keys": list(public_keys)}
        return address

    def destroy(self, name: str) -> None:
        self.machines.pop(name, None)

    def resize(self, name: str, size: str) -> None:
        self.machines[name]["size"] = size

    def power(self, name: str, on: bool) -> None:
        self.machines[name]["on"] = on


# --- records ------------------------------------------------------------------------------

class Request(NamedTuple):
    method: str
    path: str               # with the query string, if any
    json: Any               # the parsed body, or None


@dataclass
class Fault:
    """An injected failure for the next matching requests."""

    status: int
    method: str | None = None
    path: str | None = None             # regex searched in the path
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: dict | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method in (None, method)) and (self.path is None or re.search(self.path, path) is not None)


@dataclass
class ActionFault:
    """An injected failure of the next ``times`` actions of type ``kind`` (on droplet ``droplet``):
    refused with ``status`` when posted, or (status None) accepted, then ending ``errored``."""

    kind: str
    status: int | None = None
    droplet: str | None = None          # a droplet name; None: any
    times: int = 1
    message: str | None = None

    def matches(self, kind: str, droplet: str, refused: bool) -> bool:
        return (self.times > 0 and self.kind == kind and self.droplet in (None, droplet)
                and (self.status is not None) == refused)


class ApiError(Exception):
    def __init__(self, status: int, error_id: str, message: str):
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message

    @classmethod
    def of(cls, status: int, message: str | None = None) -> "ApiError":
        """The error DigitalOcean answers with ``status`` (its id; its usual message by default)."""
        error_id, default = _ERRORS.get(status, ("server_error" if status >= 500 else "error", "Error"))
        return cls(status, error_id, message or default)

    def body(self) -> dict:
        """DigitalOcean's error body, with a new request id."""
        return {"id": self.error_id, "message": self.message, "request_id": str(uuid.uuid4())}


def _unprocessable(message: str) -> ApiError:
    return ApiError.of(422, message)


def _not_found() -> ApiError:
    return ApiError.of(404)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def fingerprint(public_key: str) -> str | None:
    """MD5 fingerprint of an OpenSSH public key line, or None if it is not one."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        return None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


# --- JSON shapes --------------------------------------------------------------------------

def size_json(slug: str) -> dict:
    """The size object of one of SIZES, available in every region."""
    vcpus, memory, disk, transfer, price = SIZES[slug]
    return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": transfer,
            "price_monthly": price, "price_hourly": round(price / 672, 5),
            "regions": sorted(REGIONS), "available": True, "description": "Basic",
            "disk_info": disk_info(disk)}


def disk_info(disk: int) -> list[dict]:
    return [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]


def region_json(slug: str) -> dict:
    return {"name": REGIONS[slug], "slug": slug, "available": True, "sizes": sorted(SIZES),
            "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]}


def image_json(slug: str) -> dict:
    distro = slug.split("-")[0].capitalize()
    return {"id": 100000 + int(hashlib.sha1(slug.encode()).hexdigest()[:6], 16), "name": slug,
            "distribution": distro, "slug": slug, "public": True, "regions": sorted(REGIONS),
            "created_at": "2024-04-25T00:00:00Z", "type": "base", "min_disk_size": 7,
            "size_gigabytes": 2.5, "description": "", "tags": [], "status": "available",
            "error_message": ""}


def action_json(action_id: int, kind: str, droplet_id: int, region: str) -> dict:
    return {"id": action_id, "status": "in-progress", "type": kind, "started_at": _now_iso(),
            "completed_at": None, "resource_id": droplet_id, "resource_type": "droplet",
            "region": region_json(region), "region_slug": region}


def network_v4(address: str, kind: str) -> dict:
    gateway = address.rsplit(".", 1)[0] + ".1" if kind == "public" else "nil"
    netmask = "255.255.255.0" if kind == "public" else "255.255.240.0"
    return {"ip_address": address, "netmask": netmask, "gateway": gateway, "type": kind}


# --- the fake service ---------------------------------------------------------------------

class FakeDigitalOcean:
    """State and request handling; the HTTP plumbing is in _Handler."""

    def __init__(self, token: str, backend: Backend, boot_delay: float, action_delay: float,
                 openapi: OpenApi | None = None):
        self.token, self.backend = token, backend
        self.boot_delay, self.action_delay = boot_delay, action_delay
        self.openapi = openapi
        self.url = ""
        self.droplets: dict[int, dict] = {}
        self.sizes: dict[str, dict] = {slug: size_json(slug) for slug in SIZES}
        self.ssh_keys: dict[int, dict] = {}
        self.actions: dict[int, dict] = {}
        self.snapshots: dict[int, dict] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.action_faults: list[ActionFault] = []
        self.errored_actions: set[str] = set()  # action types that always end "errored", e.g. {"shutdown"}
        self.violations: list[str] = []         # exchanges that break the OpenAPI spec
        self.lock = threading.RLock()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._droplet_ids = itertools.count(3164444)
        self._action_ids = itertools.count(36804636)
        self._key_ids = itertools.count(289794)
        self._snapshot_ids = itertools.count(67512819)
        self._busy: dict[int, int] = {}         # droplet id -> pending action id
        self._remaining = 5000

    # -- helpers for tests

    def droplet(self, name: str) -> dict | None:
        """The droplet called ``name`` (first by id), or None."""
        with self.lock:
            self._tick()
            found = sorted((d for d in self.droplets.values() if d["name"] == name), key=lambda d: d["id"])
            return found[0] if found else None

    def fail_next(self, status: int, *, method: str | None = None, path: str | None = None,
                  times: int = 1, headers: dict[str, str] | None = None, body: dict | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead (and ``body``, sent as
        given; by default DigitalOcean's error body for ``status``)."""
        with self.lock:
            self.faults.append(Fault(status, method, path, times, dict(headers or {}), body))

    def fail_action(self, kind: str, *, status: int | None = None, droplet: str | None = None,
                    times: int = 1, message: str | None = None) -> None:
        """Make the next ``times`` actions of type ``kind`` (on the droplet called ``droplet``, or any)
        fail: without ``status`` they are accepted and end ``errored`` with no effect; with one,
        their POST is answered with that status (and ``message``) and changes nothing."""
        with self.lock:
            self.action_faults.append(ActionFault(kind, status, droplet, times, message))

    def set_size(self, slug: str, *, available: bool | None = None,
                 regions: list[str] | None = None) -> dict:
        """Mark the size ``slug`` (un)available, or offer it only in ``regions``; returns it."""
        with self.lock:
            size = self.sizes[slug]
            if available is not None:
                size["available"] = available
            if regions is not None:
                size["regions"] = sorted(regions)
            return size

    def finish_actions(self) -> None:
        """Let every action in progress end now (its effect applied at the next request)."""
        with self.lock:
            self._due = [(0.0, seq, fn) for _, seq, fn in self._due]

    def assert_conforms(self) -> None:
        """Raise AssertionError if any exchange so far broke the OpenAPI spec."""
        with self.lock:
            if self.violations:
                raise AssertionError(f"the fake DigitalOcean API broke the OpenAPI spec "
                                     f"({len(self.violations)}): " + "; ".join(self.violations[:5]))

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Logged requests filtered by method and a path regex."""
        with self.lock:
            return [r for r in self.requests
                    if method in (None, r.method) and (path is None or re.search(path, r.path))]

    # -- request entry point

    def handle(self, method: str, target: str, auth: str | None, raw: bytes) -> tuple[int, dict, Any]:
        """-> (status, headers, JSON payload or None); checks the exchange against the spec."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self.lock:
            self.requests.append(Request(method, target, body))
            self._tick()
            status, headers, payload = self._answer(method, target, auth, body)
            request_id = payload.get("request_id") if status >= 400 and isinstance(payload, dict) else None
            headers = {"content-type": "application/json; charset=utf-8", **self._rate_headers(),
                       "x-request-id": request_id or str(uuid.uuid4()), **headers}  # 204s too, as DO does
            if self.openapi is not None:
                self.violations += self.openapi.exchange_problems(method, target, status, body, payload, headers)
            return status, headers, payload

    def _answer(self, method: str, target: str, auth: str | None, body: Any) -> tuple[int, dict, Any]:
        fault = self._take_fault(method, target)
        if fault:
            return fault
        try:
            if auth != f"Bearer {self.token}":
                raise ApiError.of(401)
            return self._route(method, target, body)
        except ApiError as e:
            return e.status, {}, e.body()
        except Exception as e:  # a backend failure is the API's 500, not a dead request thread
            return 500, {}, ApiError.of(500, str(e)).body()

    def _rate_headers(self) -> dict[str, str]:
        self._remaining = max(self._remaining - 1, 0)
        return {"ratelimit-limit": "5000", "ratelimit-remaining": str(self._remaining),
                "ratelimit-reset": str(int(time.time()) + 60)}

    def _take_fault(self, method: str, path: str) -> tuple[int, dict, Any] | None:
        for fault in self.faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                body = dict(fault.body) if fault.body else ApiError.of(fault.status).body()
                return fault.status, dict(fault.headers), body
        return None

    def _take_action_fault(self, kind: str, droplet: dict, refused: bool) -> ActionFault | None:
        fault = next((f for f in self.action_faults if f.matches(kind, droplet["name"], refused)), None)
        if fault:
            fault.times -= 1
        return fault

    def _route(self, method: str, target: str, body: Any) -> tuple[int, dict, Any]:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for verb, pattern, fn, _ in _ROUTES:
            m = re.fullmatch(pattern, parts.path.rstrip("/"))
            if m and verb == method:
                status, payload = fn(self, query=query, body=body, **m.groupdict())
                return status, {}, payload
        raise _not_found()

    # -- lazy state transitions

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        self._due.append((time.monotonic() + delay, next(self._seq), fn))

    def _tick(self) -> None:
        now = time.monotonic()
        ready = sorted(d for d in self._due if d[0] <= now)
        self._due = [d for d in self._due if d[0] > now]
        for _, _, fn in ready:
            fn()

    # -- pagination

    def _page(self, path: str, key: str, items: list, query: dict) -> dict:
        try:
            per_page = min(max(int(query.get("per_page", 20)), 1), 200)
            page = max(int(query.get("page", 1)), 1)
        except ValueError:
            raise ApiError(400, "bad_request", "page and per_page must be integers") from None
        last = max((len(items) + per_page - 1) // per_page, 1)
        rest = {k: v for k, v in query.items() if k not in ("page", "per_page")}

        def link(n: int) -> str:
            return f"{self.url}{path}?{urlencode({**rest, 'page': n, 'per_page': per_page})}"
        pages = {}
        if page > 1:
            pages.update(first=link(1), prev=link(min(page - 1, last)))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        chunk = items[(page - 1) * per_page: page * per_page]
        return {key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}}

    # -- SSH keys

    def list_keys(self, query: dict, body: Any) -> tuple[int, dict]:
        return 200, self._page("/v2/account/keys", "ssh_keys", list(self.ssh_keys.values()), query)

    def create_key(self, query: dict, body: Any) -> tuple[int, dict]:
        _require_object(body, {"name", "public_key"}, {"name", "public_key"})
        fp = fingerprint(body["public_key"])
        if fp is None:
            raise _unprocessable("Key invalid, key should be of the format `type key [comment]`")
        if any(k["fingerprint"] == fp for k in self.ssh_keys.values()):
            raise _unprocessable("SSH Key is already in use on your account")
        key = {"id": next(self._key_ids), "fingerprint": fp, "public_key": body["public_key"],
               "name": body["name"]}
        self.ssh_keys[key["id"]] = key
        return 201, {"ssh_key": key}

    def _key(self, ref: Any) -> dict | None:
        ref = unquote(str(ref))
        return next((k for k in self.ssh_keys.values() if ref in (str(k["id"]), k["fingerprint"])), None)

    def get_key(self, query: dict, body: Any, key: str) -> tuple[int, dict]:
        found = self._key(key)
        if found is None:
            raise _not_found()
        return 200, {"ssh_key": found}

    def delete_key(self, query: dict, body: Any, key: str) -> tuple[int, None]:
        found = self._key(key)
        if found is None:
            raise _not_found()
        del self.ssh_keys[found["id"]]
        return 204, None

    # -- droplets

    def list_droplets(self, query: dict, body: Any) -> tuple[int, dict]:
        if "tag_name" in query and ("name" in query or "type" in query):
            raise ApiError(400, "bad_request", "tag_name can not be combined with name or type")
        found = sorted(self.droplets.values(), key=lambda d: d["id"])
        if "tag_name" in query:
            found = [d for d in found if query["tag_name"] in d["tags"]]
        if "name" in query:
            found = [d for d in found if d["name"].lower() == query["name"].lower()]
        return 200, self._page("/v2/droplets", "droplets", found, query)

    def create_droplet(self, query: dict, body: Any) -> tuple[int, dict]:
        if isinstance(body, dict) and "names" in body:
            raise _unprocessable("creating several droplets at once (names) is not supported by the fake")
        _require_object(body, {"name", "size", "image"}, _CREATE_KEYS | {"name"})
        name, size, region = body["name"], body["size"], body.get("region") or "nyc3"
        if not isinstance(name, str) or len(name) > 255 or not _DROPLET_NAME.match(name):
            raise _unprocessable("Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        if region not in REGIONS:
            raise _unprocessable("You specified an invalid region for Droplet creation.")
        self._size(size, region, "creation")
        image = self._image(body["image"])
        if self.sizes[size]["disk"] < image["min_disk_size"]:
            raise _unprocessable("This image requires a larger disk than the size offers.")
        tags = _tags(body.get("tags"))
        keys = [self._key(ref) for ref in body.get("ssh_keys") or []]
        if None in keys:
            raise _unprocessable("ssh_keys: one of the keys is not on the account")
        for flag in ("monitoring", "ipv6", "backups"):
            if not isinstance(body.get(flag, False), bool):
                raise _unprocessable(f"{flag} must be a boolean")
        address = self.backend.create(name, size, image=image["slug"] or str(image["id"]),
                                      region=region, public_keys=[k["public_key"] for k in keys])
        droplet = self._new_droplet(name, size, region, image, tags, bool(body.get("monitoring")))
        action = self._start_action(droplet, "create", lambda: self._boot(droplet, address),
                                    delay=self.boot_delay)
        links = {"actions": [{"id": action["id"], "rel": "create",
                              "href": f"{self.url}/v2/actions/{action['id']}"}]}
        return 202, {"droplet": droplet, "links": links}

    def _image(self, ref: Any) -> dict:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            snap = self.snapshots.get(int(ref))
            if snap is None:
                raise _unprocessable("You specified an invalid image for Droplet creation.")
            return {**image_json(snap["name"]), "id": snap["id"], "name": snap["name"], "slug": None,
                    "type": "snapshot", "public": False, "min_disk_size": snap["min_disk_size"]}
        if not isinstance(ref, str) or not _IMAGE_SLUG.match(ref):
            raise _unprocessable("You specified an invalid image for Droplet creation.")
        return image_json(ref)

    def _size(self, slug: Any, region: str, event: str) -> dict:
        """The size ``slug`` if a droplet in ``region`` may get it, else the API's 422."""
        size = self.sizes.get(slug) if isinstance(slug, str) else None
        if size is None:
            raise _unprocessable(f"You specified an invalid size for Droplet {event}.")
        if not size["available"]:
            raise _unprocessable("This size is not available at this time.")
        if region not in size["regions"]:
            raise _unprocessable(f"This size is not available in the region {region}.")
        return size

    def _new_droplet(self, name: str, size: str, region: str, image: dict, tags: list, monitoring: bool) -> dict:
        droplet = {
            "id": next(self._droplet_ids), "name": name, "locked": False, "status": "new",
            "kernel": None, "created_at": _now_iso(),
            "features": ["private_networking"] + (["monitoring"] if monitoring else []),
            "backup_ids": [], "next_backup_window": None, "snapshot_ids": [], "image": image,
            "volume_ids": [], "networks": {"v4": [], "v6": []}, "region": region_json(region), "tags": tags,
            "vpc_uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"vpc-{region}")),
        }
        self._set_size(droplet, size, disk=True)
        self.droplets[droplet["id"]] = droplet
        return droplet

    def _set_size(self, droplet: dict, slug: str, disk: bool) -> None:
        """Give ``droplet`` the CPUs and memory of the size ``slug``, and its disk if ``disk``."""
        size = copy.deepcopy(self.sizes[slug])
        droplet.update(size_slug=slug, size=size, vcpus=size["vcpus"], memory=size["memory"])
        if disk:
            droplet.update(disk=size["disk"], disk_info=disk_info(size["disk"]))

    def _boot(self, droplet: dict, address: str) -> None:
        private = f"10.110.0.{droplet['id'] % 250 + 2}"
        droplet["networks"]["v4"] = [network_v4(private, "private"), network_v4(address, "public")]
        droplet["status"] = "active"

    def get_droplet(self, query: dict, body: Any, droplet_id: str) -> tuple[int, dict]:
        return 200, {"droplet": self._droplet(droplet_id)}

    def delete_droplet(self, query: dict, body: Any, droplet_id: str) -> tuple[int, None]:
        droplet = self._droplet(droplet_id)
        self.backend.destroy(droplet["name"])
        del self.droplets[droplet["id"]]
        self._busy.pop(droplet["id"], None)
        return 204, None

    def _droplet(self, droplet_id: Any) -> dict:
        droplet = self.droplets.get(int(droplet_id))
        if droplet is None:
            raise _not_found()
        return droplet

    def list_snapshots(self, query: dict, body: Any, droplet_id: str) -> tuple[int, dict]:
        droplet = self._droplet(droplet_id)
        snaps = [self.snapshots[i] for i in droplet["snapshot_ids"] if i in self.snapshots]
        shown = [{k: s[k] for k in ("id", "name", "created_at", "regions", "min_disk_size",
                                    "size_gigabytes", "type")} for s in snaps]
        return 200, self._page(f"/v2/droplets/{droplet['id']}/snapshots", "snapshots", shown, query)

    # -- actions

    def list_actions(self, query: dict, body: Any, droplet_id: str) -> tuple[int, dict]:
        droplet = self._droplet(droplet_id)
        mine = [a for a in self.actions.values() if a["resource_id"] == droplet["id"]]
        return 200, self._page(f"/v2/droplets/{droplet['id']}/actions", "actions", mine, query)

    def post_action(self, query: dict, body: Any, droplet_id: str) -> tuple[int, dict]:
        droplet = self._droplet(droplet_id)
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in _ACTION_KEYS:
            raise _unprocessable(f"type: {kind!r} is not a droplet action")
        _require_object(body, {"type"}, _ACTION_KEYS[kind] | {"type"})
        refusal = self._take_action_fault(kind, droplet, refused=True)
        if refusal:
            raise ApiError.of(refusal.status, refusal.message)
        if droplet["id"] in self._busy or droplet["status"] == "new":
            raise _unprocessable("Droplet already has a pending event.")
        effect = self._effect(droplet, kind, body)
        errored = self._take_action_fault(kind, droplet, refused=False) is not None
        action = self._start_action(droplet, kind, effect, delay=self.action_delay, errored=errored)
        return 201, {"action": action}

    def _effect(self, droplet: dict, kind: str, body: dict) -> Callable[[], str]:
        """Validate an action now; return what happens when it completes."""
        name = droplet["name"]
        if kind in ("power_on", "reboot", "power_cycle"):
            return lambda: self._set_power(droplet, True)
        if kind in ("power_off", "shutdown"):
            return lambda: self._set_power(droplet, False)
        if kind == "resize":
            slug = body.get("size")
            size = self._size(slug, droplet["region"]["slug"], "resize")
            if droplet["status"] != "off":
                raise _unprocessable("Droplet is currently on. Please power it off to run this event.")
            if not isinstance(body.get("disk", False), bool):
                raise _unprocessable("disk must be a boolean")
            if size["disk"] < droplet["disk"]:
                raise _unprocessable("This size is not available because it has a smaller disk.")
            if size["disk"] < (droplet["image"].get("min_disk_size") or 0):
                raise _unprocessable("This size is not available because its disk is smaller than "
                                     "the image's minimum disk size.")
            return lambda: self._resize(droplet, slug, bool(body.get("disk")))
        if kind == "snapshot":
            snap_name = body.get("name") or f"{name}-{int(time.time() * 1000)}"
            return lambda: self._snapshot(droplet, snap_name)
        if kind == "rename":
            return lambda: droplet.update(name=body["name"])
        return lambda: None

    def _start_action(self, droplet: dict, kind: str, effect: Callable[[], Any], delay: float,
                      errored: bool = False) -> dict:
        action = action_json(next(self._action_ids), kind, droplet["id"], droplet["region"]["slug"])
        self.actions[action["id"]] = action
        self._busy[droplet["id"]] = action["id"]
        droplet["locked"] = kind != "create"

        def complete() -> None:
            if droplet["id"] not in self.droplets or errored or kind in self.errored_actions:
                action["status"] = "errored"
            else:
                effect()
                action["status"] = "completed"
            action["completed_at"] = _now_iso()
            droplet["locked"] = False
            self._busy.pop(droplet["id"], None)
        self._later(delay, complete)
        return action

    def _set_power(self, droplet: dict, on: bool) -> None:
        self.backend.power(droplet["name"], on)
        droplet["status"] = "active" if on else "off"

    def _resize(self, droplet: dict, size: str, disk: bool) -> None:
        self.backend.resize(droplet["name"], size)
        self._set_size(droplet, size, disk)

    def _snapshot(self, droplet: dict, name: str) -> None:
        snap = {"id": next(self._snapshot_ids), "name": name, "created_at": _now_iso(),
                "regions": [droplet["region"]["slug"]], "min_disk_size": droplet["disk"],
                "size_gigabytes": 1.5, "type": "snapshot", "resource_id": str(droplet["id"]),
                "resource_type": "droplet", "tags": []}
        self.snapshots[snap["id"]] = snap
        droplet["snapshot_ids"].append(snap["id"])

    # -- sizes

    def list_sizes(self, query: dict, body: Any) -> tuple[int, dict]:
        return 200, self._page("/v2/sizes", "sizes", list(self.sizes.values()), query)

    def get_action(self, query: dict, body: Any, action_id: str) -> tuple[int, dict]:
        action = self.actions.get(int(action_id))
        if action is None:
            raise _not_found()
        return 200, {"action": action}

    def get_droplet_action(self, query: dict, body: Any, droplet_id: str, action_id: str) -> tuple[int, dict]:
        status, payload = self.get_action(query, body, action_id)
        if payload["action"]["resource_id"] != int(droplet_id):
            raise _not_found()
        return status, payload


def _require_object(body: Any, required: set[str], allowed: set[str]) -> None:
    if not isinstance(body, dict):
        raise _unprocessable("request body must be a JSON object")
    missing = sorted(required - body.keys())
    if missing:
        raise _unprocessable(f"{', '.join(missing)} is required")
    unknown = sorted(body.keys() - allowed)
    if unknown:
        raise _unprocessable(f"unknown attribute(s): {', '.join(unknown)}")


def _tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) and _TAG.match(t) for t in tags):
        raise _unprocessable("tags: only letters, numbers, colons, dashes and underscores are allowed")
    return list(dict.fromkeys(tags))


_ROUTES: list[tuple[str, str, Callable, str]] = [      # (method, path regex, handler, spec operationId)
    ("GET", r"/v2/account/keys", FakeDigitalOcean.list_keys, "sshKeys_list"),
    ("POST", r"/v2/account/keys", FakeDigitalOcean.create_key, "sshKeys_create"),
    ("GET", r"/v2/account/keys/(?P<key>[^/]+)", FakeDigitalOcean.get_key, "sshKeys_get"),
    ("DELETE", r"/v2/account/keys/(?P<key>[^/]+)", FakeDigitalOcean.delete_key, "sshKeys_delete"),
    ("GET", r"/v2/droplets", FakeDigitalOcean.list_droplets, "droplets_list"),
    ("POST", r"/v2/droplets", FakeDigitalOcean.create_droplet, "droplets_create"),
    ("GET", r"/v2/droplets/(?P<droplet_id>\d+)", FakeDigitalOcean.get_droplet, "droplets_get"),
    ("DELETE", r"/v2/droplets/(?P<droplet_id>\d+)", FakeDigitalOcean.delete_droplet, "droplets_destroy"),
    ("GET", r"/v2/droplets/(?P<droplet_id>\d+)/actions", FakeDigitalOcean.list_actions, "dropletActions_list"),
    ("POST", r"/v2/droplets/(?P<droplet_id>\d+)/actions", FakeDigitalOcean.post_action, "dropletActions_post"),
    ("GET", r"/v2/droplets/(?P<droplet_id>\d+)/actions/(?P<action_id>\d+)", FakeDigitalOcean.get_droplet_action,
     "dropletActions_get"),
    ("GET", r"/v2/droplets/(?P<droplet_id>\d+)/snapshots", FakeDigitalOcean.list_snapshots,
     "droplets_list_snapshots"),
    ("GET", r"/v2/actions/(?P<action_id>\d+)", FakeDigitalOcean.get_action, "actions_get"),
    ("GET", r"/v2/sizes", FakeDigitalOcean.list_sizes, "sizes_list"),
]
OPERATIONS = tuple(route[3] for route in _ROUTES)     # the spec operations the fake serves


# --- HTTP plumbing ------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # else each answer waits ~40 ms for a delayed ACK
    api: FakeDigitalOcean           # set on the per-server subclass

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, payload = self.api.handle(self.command, self.path,
                                                   self.headers.get("Authorization"), raw)
        data = b"" if payload is None or status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:      # keep test output quiet
        pass


@contextlib.contextmanager
def fake_do_api(token: str = "test-token", backend: Backend | None = None, *,
                boot_delay: float = 0.05, action_delay: float = 0.05,
                spec_check: bool = True) -> Iterator[FakeDigitalOcean]:
    """Serve a fake DigitalOcean API on 127.0.0.1 for the duration of the block; with
    ``spec_check`` (it needs the spec, see do_openapi.spec_path) the block fails at its end if
    an exchange broke DigitalOcean's OpenAPI spec."""
    openapi = OpenApi(load_operations(OPERATIONS)) if spec_check else None
    api = FakeDigitalOcean(token, backend or MemoryBackend(), boot_delay, action_delay, openapi)
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    api.assert_conforms()                   # not reached when the block raised
