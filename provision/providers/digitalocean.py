"""DigitalOcean droplets through the official client, pydo.

An environment's droplets carry the tags ``dropship`` and ``dropship-env-<env>``. Every
API failure becomes a one-line ProviderError naming the droplet and the fix; the token
never appears in a message. pydo is imported on first use: it is slow to import.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import time
from http import HTTPStatus
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from provision.errors import DropshipError, ProviderError
from provision.providers.base import Droplet, DropletSpec, SizeInfo

BASE_TAG = "dropship"
ENV_TAG_PREFIX = "dropship-env-"
PER_PAGE = 200                  # the API's maximum page size
RATE_LIMIT_RETRIES = 4
SUGGESTED_SIZES = 4             # sizes named in the fix of a refused resize
MAX_RATE_LIMIT_WAIT = 60.0
TOKEN_URL = "cloud.digitalocean.com/account/api/tokens"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# --- pure helpers ------------------------------------------------------------------------

def env_tag(env: str) -> str:
    """The tag that scopes droplets to one environment."""
    return f"{ENV_TAG_PREFIX}{env}"


def droplet_tags(env: str, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``dropship``, ``dropship-env-<env>`` then the spec's own tags, without duplicates."""
    return list(dict.fromkeys([BASE_TAG, env_tag(env), *extra]))


def md5_fingerprint(public_key: str) -> str:
    """MD5 fingerprint (``aa:bb:...``) of an OpenSSH public key line, as DigitalOcean shows it.

    Raises ValueError when the line is not ``<type> <base64 blob> [comment]``.
    """
    parts = public_key.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line ('<type> <base64> [comment]')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the public key's base64 part does not decode") from None
    if _blob_key_type(blob) != parts[0]:
        raise ValueError(f"the public key blob is not of type {parts[0]!r}")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _blob_key_type(blob: bytes) -> str | None:
    """The key type string that opens an SSH wire-format key blob."""
    if len(blob) < 4:
        return None
    n = int.from_bytes(blob[:4], "big")
    return blob[4:4 + n].decode("ascii", "replace") if len(blob) >= 4 + n else None


def public_ipv4(droplet: Mapping[str, Any]) -> str | None:
    """The first public IPv4 address in ``networks.v4``, or None while there is none."""
    return _ipv4(droplet, "public")


def private_ipv4(droplet: Mapping[str, Any]) -> str | None:
    """The first private (VPC) IPv4 address in ``networks.v4``, or None while there is none."""
    return _ipv4(droplet, "private")


def _ipv4(droplet: Mapping[str, Any], kind: str) -> str | None:
    for net in (droplet.get("networks") or {}).get("v4") or []:
        if net.get("type") == kind and net.get("ip_address"):
            return net["ip_address"]
    return None


def image_ref(image: str) -> str | int:
    """Image slugs stay strings; numeric ids (snapshots, custom images) become integers."""
    return int(image) if image.isdigit() else image


def create_body(spec: DropletSpec, env: str, ssh_key_id: int) -> dict:
    """Request body of ``POST /v2/droplets`` for one droplet (no region: DigitalOcean picks one)."""
    body = {
        "name": spec.name, "region": spec.region, "size": spec.size,
        "image": image_ref(spec.image), "ssh_keys": [ssh_key_id],
        "tags": droplet_tags(env, spec.tags), "monitoring": True,
    }
    if spec.vpc_uuid:
        body["vpc_uuid"] = spec.vpc_uuid
    return body if spec.region else {k: v for k, v in body.items() if k != "region"}


def ssh_key_body(env: str, public_key: str) -> dict:
    """Request body of ``POST /v2/account/keys``."""
    return {"name": f"dropship-{env}", "public_key": public_key.strip()}


def action_body(kind: str, **attrs: Any) -> dict:
    """Request body of ``POST /v2/droplets/{id}/actions``, e.g. ``action_body("resize", size=..., disk=False)``."""
    return {"type": kind, **attrs}


def size_slug(d: Mapping[str, Any]) -> str:
    """The slug of an API droplet object's size."""
    return d.get("size_slug") or (d.get("size") or {}).get("slug", "")


def _gb(obj: Mapping[str, Any] | None, key: str = "disk") -> int:
    return int((obj or {}).get(key) or 0)


def to_droplet(d: Mapping[str, Any]) -> Droplet:
    """A DigitalOcean droplet object as a Droplet (address: its public IPv4, or ""; private_address:
    its VPC IPv4, or "")."""
    image = d.get("image") or {}
    return Droplet(
        name=d["name"], id=str(d["id"]), status=d.get("status", ""),
        address=public_ipv4(d) or "", ssh_port=22,
        size=size_slug(d), region=(d.get("region") or {}).get("slug", ""),
        image=image.get("slug") or str(image.get("id", "")),
        tags=tuple(d.get("tags") or ()), vcpus=int(d.get("vcpus") or 0),
        memory_mb=int(d.get("memory") or 0), disk_gb=_gb(d), host_keys=[],
        private_address=private_ipv4(d) or "",
    )


def size_info(s: Mapping[str, Any]) -> SizeInfo:
    """A DigitalOcean size object as a SizeInfo."""
    return SizeInfo(slug=s["slug"], vcpus=int(s.get("vcpus") or 0), memory_mb=int(s.get("memory") or 0),
                    disk_gb=_gb(s))


def fitting_sizes(sizes: list[Mapping[str, Any]], region: str, min_disk: int,
                  exclude: tuple[str, ...] = (), limit: int = SUGGESTED_SIZES) -> list[str]:
    """Slugs of up to ``limit`` sizes available in ``region`` with a disk of ``min_disk`` GB or
    more, cheapest first, leaving out ``exclude``."""
    fit = [s for s in sizes if s.get("available") and region in (s.get("regions") or ())
           and _gb(s) >= min_disk and s["slug"] not in exclude]
    fit.sort(key=lambda s: (float(s.get("price_monthly") or 0), _gb(s), s["slug"]))
    return [s["slug"] for s in fit[:limit]]


def resize_refusal(droplet: Mapping[str, Any], size: str, sizes: list[Mapping[str, Any]],
                   actions: list[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why DigitalOcean would refuse to resize ``droplet`` (an API droplet object) to ``size``,
    given all sizes and the droplet's actions: ``(problem, fix)``, or None when it would not.
    The disk rule holds with ``disk`` false too: a size's disk below the droplet's is refused."""
    region = (droplet.get("region") or {}).get("slug", "")
    disk, image = _gb(droplet), droplet.get("image") or {}
    image_min = _gb(image, "min_disk_size")
    target = next((s for s in sizes if s.get("slug") == size), None)
    problem = None
    if target is None:
        problem = f"DigitalOcean has no size {size}"
    elif not target.get("available"):
        problem = f"size {size} is not available at DigitalOcean now"
    elif region not in (target.get("regions") or ()):
        problem = f"size {size} is not offered in region {region}"
    elif _gb(target) < image_min:
        problem = (f"size {size} has a {_gb(target)} GB disk, smaller than the {image_min} GB "
                   f"its image {image.get('slug') or image.get('id')} needs")
    elif _gb(target) < disk:
        problem = (f"size {size} has a {_gb(target)} GB disk, smaller than the droplet's {disk} GB "
                   f"disk (a disk never shrinks, even in a CPU/RAM-only resize)")
    if problem:
        min_disk = max(disk, image_min)
        fits = fitting_sizes(sizes, region, min_disk, exclude=(size, size_slug(droplet)))
        fix = (f"pick a size available in {region} with at least {min_disk} GB of disk, e.g. "
               f"{', '.join(fits)} (doctl compute size list)" if fits else
               f"no other size available in {region} has {min_disk} GB of disk or more; "
               f"see doctl compute size list")
        return problem, fix
    busy = [a for a in actions if a.get("status") == "in-progress"]
    if busy:
        return (f"its {busy[0].get('type')} action (id {busy[0].get('id')}) is still in progress",
                f"wait until it completes (doctl compute action get {busy[0].get('id')}), then rerun")
    return None


def rate_limit_wait(headers: Mapping[str, str], attempt: int, now: float) -> float:
    """Seconds to wait after a 429: Retry-After, else ratelimit-reset (epoch), else 1, 2, 4..."""
    for key, relative in (("retry-after", True), ("ratelimit-reset", False)):
        value = _header(headers, key)
        try:
            seconds = float(value) if relative else float(value) - now
        except (TypeError, ValueError):
            continue
        return min(max(seconds, 0.0), MAX_RATE_LIMIT_WAIT)
    return min(float(2 ** attempt), MAX_RATE_LIMIT_WAIT)


def _header(headers: Mapping[str, str], key: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == key:
            return v
    return None


def one_line(text: Any, secret: str = "", limit: int = 200) -> str:
    """API text made safe for a one-line message: no newlines, no secret, bounded length."""
    s = " ".join(str(text).split())
    if secret:
        s = s.replace(secret, "***")
    return s if len(s) <= limit else s[:limit - 3] + "..."


def error_detail(status: int, body: Any, request_id: str = "", secret: str = "") -> str:
    """``422 unprocessable_entity: <message>; request_id <id>`` from a DigitalOcean error body
    ``{"id", "message", "request_id"}``, with what it has (id: from the status if absent;
    request id: ``request_id``, e.g. the x-request-id header, if absent), ``secret`` masked."""
    body = body if isinstance(body, dict) else {}
    error_id = body.get("id") or _status_id(status)
    text = f"{status} {one_line(error_id, secret, 60)}" if error_id else str(status)
    if body.get("message"):
        text += f": {one_line(body['message'], secret, 160)}"
    rid = body.get("request_id") or request_id
    return f"{text}; request_id {one_line(rid, secret, 60)}" if rid else text


def _status_id(status: int) -> str:
    """``unprocessable_entity`` for 422: DigitalOcean's style of error id."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return ""


def api_error(what: str, status: int, body: Any, env: str, *, request_id: str = "",
              secret: str = "") -> ProviderError:
    """The one-line ProviderError for an HTTP error answer to ``what`` (e.g. "creating droplet
    web-1"): DigitalOcean's error id, message and request id (see error_detail), and the fix."""
    detail = error_detail(status, body, request_id, secret)
    if status == 401:
        return ProviderError(
            f"{what}: DigitalOcean rejected the API token ({detail})",
            fix=f"create a read/write token at {TOKEN_URL} and export DIGITALOCEAN_TOKEN=... "
                f"or set it in .secrets/{env}.yaml")
    if status == 403:
        return ProviderError(f"{what}: the API token lacks permission ({detail})",
                             fix="use a token with droplet, ssh_key, tag, image and size scopes")
    if status == 404:
        return ProviderError(f"{what}: not found on DigitalOcean ({detail})",
                             fix="run `list` to see the environment's droplets")
    if status == 422:
        return ProviderError(f"{what}: DigitalOcean refused the request ({detail})",
                             fix="check the size, region and image slugs in the inventory "
                                 "(doctl compute size list / region list)")
    if status == 429:
        return ProviderError(f"{what}: DigitalOcean API rate limit exceeded ({detail}), retried "
                             f"{RATE_LIMIT_RETRIES} times",
                             fix="wait a minute and rerun; the limit is 250 requests/minute")
    if status >= 500:
        return ProviderError(f"{what}: DigitalOcean API error ({detail})",
                             fix="rerun later (it resumes); see status.digitalocean.com")
    return ProviderError(f"{what}: unexpected DigitalOcean answer ({detail})",
                         fix="rerun; if it persists, check the droplet in the control panel")


def _error_body(body: Any) -> bool:
    """pydo returns (not raises) 404 bodies for some calls: ``{"id": ..., "message": ...}``."""
    return isinstance(body, dict) and "id" in body and "message" in body and len(body) <= 3


# --- the provider ------------------------------------------------------------------------

class DigitalOceanProvider:
    """The Provider for DigitalOcean, one environment at a time."""

    def __init__(self, token: str, env: str, *, endpoint: str | None = None,
                 poll_interval: float = 2.0, timeout: float = 300):
        if not token or not token.strip():
            raise DropshipError("DigitalOcean token not set",
                                fix=f"export DIGITALOCEAN_TOKEN=... or set it in .secrets/{env}.yaml")
        self._token = token.strip()
        self.env = env
        self.endpoint = endpoint
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._call_opts = _transport_options(endpoint)
        self._client_obj = None
        self._sleep: Callable[[float], None] = time.sleep   # tests replace it

    def __repr__(self) -> str:              # never show the token
        return f"DigitalOceanProvider(env={self.env!r}, endpoint={self.endpoint!r})"

    # -- Provider interface

    def create(self, spec: DropletSpec, public_key: str) -> Droplet:
        """Create the droplet (or return the existing one) and wait until it is reachable."""
        what = f"creating droplet {spec.name}"
        existing = self._find(spec.name)
        if existing is not None:
            if existing["status"] == "off":
                return self.power(spec.name, True)
            ready = existing["status"] != "new" and public_ipv4(existing)
            return to_droplet(existing) if ready else self._wait_ready(what, existing["id"])
        key_id = self._ensure_ssh_key(what, public_key)
        body = create_body(spec, self.env, key_id)
        answer = self._call(what, self._client.droplets.create, body=body)
        return self._wait_ready(what, answer["droplet"]["id"])

    def get(self, name: str) -> Droplet | None:
        d = self._find(name)
        return to_droplet(d) if d else None

    def list(self) -> list[Droplet]:
        what = f"listing droplets of environment {self.env}"
        found = self._paged(what, self._client.droplets.list, "droplets", tag_name=env_tag(self.env))
        return [to_droplet(d) for d in sorted(found, key=lambda d: d["name"])]

    def power(self, name: str, on: bool) -> Droplet:
        d = self._require(name)
        want = "active" if on else "off"
        if d["status"] != want:
            if on:
                self._run_action(d, action_body("power_on"), f"powering on droplet {name}")
            else:
                self._power_off(d)
        return self._wait_status(d, want)

    def check_resize(self, name: str, size: str, disk: bool = False) -> SizeInfo:
        """The size ``size``, or a one-line ProviderError naming why DigitalOcean would refuse to
        resize ``name`` to it and the fix; changes nothing. (``disk`` changes no rule: even a
        CPU/RAM-only resize needs a size whose disk is at least the droplet's.)"""
        what = f"checking the resize of droplet {name} to {size}"
        d = self._require(name)
        sizes = self._paged(what, self._client.sizes.list, "sizes")
        actions = self._paged(what, self._client.droplet_actions.list, "actions", droplet_id=d["id"])
        refusal = resize_refusal(d, size, sizes, actions)
        if refusal:
            problem, fix = refusal
            raise ProviderError(f"cannot resize droplet {name} from {size_slug(d)} to {size}: {problem}",
                                fix=fix)
        return size_info(next(s for s in sizes if s["slug"] == size))

    def resize(self, name: str, size: str, disk: bool = False) -> Droplet:
        """Resize CPU/RAM, and with ``disk`` the disk too (permanent: it can never shrink back);
        a droplet that is on is powered off first and back on after, even when the resize fails."""
        d = self._require(name)
        grow_disk = disk and _gb(d) < _gb(d.get("size"))    # a CPU/RAM-only resize left it behind
        if size_slug(d) == size and not grow_disk:
            return to_droplet(d)
        was_on = d["status"] == "active"
        if was_on:
            self._power_off(d)
        try:
            self._run_action(d, action_body("resize", size=size, disk=bool(disk)),
                             f"resizing droplet {name} to {size}")
        except ProviderError:
            if was_on:                          # best effort: leave it running as we found it
                with contextlib.suppress(ProviderError):
                    self._run_action(d, action_body("power_on"), f"powering on droplet {name}", check=False)
            raise
        if was_on:
            self._run_action(d, action_body("power_on"), f"powering on droplet {name}")
        return self._wait_status(d, "active" if was_on else "off")

    def snapshot(self, name: str, snapshot_name: str) -> str:
        """Snapshot the droplet; returns the snapshot's image id."""
        what = f"snapshotting droplet {name} as {snapshot_name}"
        d = self._require(name)
        self._run_action(d, action_body("snapshot", name=snapshot_name), what)
        snaps = self._paged(what, self._client.droplets.list_snapshots, "snapshots", droplet_id=d["id"])
        ids = [s["id"] for s in snaps if s.get("name") == snapshot_name]
        if not ids:
            raise ProviderError(f"{what}: the snapshot action completed but no snapshot is listed",
                                fix="check Images > Snapshots in the control panel")
        return str(max(ids))

    def destroy(self, name: str) -> None:
        """Delete the droplet; nothing to do when it is already gone."""
        d = self._find(name)
        if d is not None:
            self._call(f"destroying droplet {name}", self._client.droplets.destroy, droplet_id=d["id"])

    # -- lookups

    def _find(self, name: str) -> dict | None:
        """The environment's droplet called ``name`` (``name`` and ``tag_name`` can't be combined)."""
        found = self._paged(f"looking up droplet {name}", self._client.droplets.list, "droplets", name=name)
        mine = [d for d in found if d["name"] == name and env_tag(self.env) in (d.get("tags") or [])]
        return min(mine, key=lambda d: d["id"]) if mine else None

    def _require(self, name: str) -> dict:
        d = self._find(name)
        if d is None:
            raise ProviderError(f"droplet {name} not found in environment {self.env}",
                                fix="check the name, or create it first")
        return d

    def _get_by_id(self, what: str, droplet_id: int) -> dict:
        body = self._call(what, self._client.droplets.get, droplet_id=droplet_id)
        if _error_body(body):
            raise ProviderError(f"{what}: the droplet disappeared (id {droplet_id})",
                                fix="it was deleted meanwhile; rerun to create it again")
        return body["droplet"]

    def _paged(self, what: str, fn: Callable, key: str, **params: Any) -> list[dict]:
        items: list[dict] = []
        for page in range(1, 1000):
            body = self._call(what, fn, per_page=PER_PAGE, page=page, **params)
            if _error_body(body):
                raise self._api_error(what, 404, body)
            items.extend(body.get(key) or [])
            if not ((body.get("links") or {}).get("pages") or {}).get("next"):
                break
        return items

    # -- SSH key

    def _ensure_ssh_key(self, what: str, public_key: str) -> int:
        """The account key id for ``public_key``, registering it as ``dropship-<env>`` if new."""
        try:
            fingerprint = md5_fingerprint(public_key)
        except ValueError as e:
            raise DropshipError(f"{what}: bad SSH public key: {e}",
                                fix="delete the environment's key under .dropship/keys/ to regenerate it") from None
        keys = self._paged(f"{what}: listing SSH keys", self._client.ssh_keys.list, "ssh_keys")
        for key in keys:
            if key.get("fingerprint") == fingerprint:
                return key["id"]
        answer = self._call(f"{what}: registering SSH key", self._client.ssh_keys.create,
                            body=ssh_key_body(self.env, public_key))
        return answer["ssh_key"]["id"]

    # -- actions and waiting

    def _power_off(self, d: dict) -> None:
        """Graceful ``shutdown``; hard ``power_off`` if that fails (as DigitalOcean advises)."""
        name = d["name"]
        status = self._run_action(d, action_body("shutdown"), f"shutting down droplet {name}", check=False)
        if status != "completed" or self._get_by_id(f"shutting down droplet {name}", d["id"])["status"] != "off":
            self._run_action(d, action_body("power_off"), f"powering off droplet {name}")

    def _run_action(self, d: dict, body: dict, what: str, check: bool = True) -> str:
        """Start a droplet action, wait for it; returns its final status (raises if errored and check)."""
        answer = self._call(what, self._client.droplet_actions.post, droplet_id=d["id"], body=body)
        if _error_body(answer):
            raise self._api_error(what, 404, answer)
        action_id = answer["action"]["id"]
        status = self._poll(what, lambda: self._action_status(what, action_id))
        if status == "errored" and check:
            raise ProviderError(f"{what}: the {body['type']} action failed on DigitalOcean",
                                fix="see the droplet's history in the control panel, then rerun")
        return status

    def _action_status(self, what: str, action_id: int) -> str | None:
        body = self._call(what, self._client.actions.get, action_id=action_id)
        if _error_body(body):
            raise self._api_error(what, 404, body)
        status = body["action"]["status"]
        return status if status in ("completed", "errored") else None

    def _wait_ready(self, what: str, droplet_id: int) -> Droplet:
        def ready():
            d = self._get_by_id(what, droplet_id)
            return d if d["status"] == "active" and public_ipv4(d) else None
        return to_droplet(self._poll(what, ready))

    def _wait_status(self, d: dict, status: str) -> Droplet:
        what = f"waiting for droplet {d['name']} to be {status}"
        def reached():
            now = self._get_by_id(what, d["id"])
            return now if now["status"] == status else None
        return to_droplet(self._poll(what, reached))

    def _poll(self, what: str, check: Callable[[], Any]) -> Any:
        """Call ``check`` every poll_interval until it returns something truthy, or time out."""
        deadline = time.monotonic() + self.timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise ProviderError(f"{what}: still not done after {self.timeout:g}s",
                                    fix="rerun to resume waiting; check the droplet in the control panel")
            self._sleep(self.poll_interval)

    # -- the API client

    @property
    def _client(self):
        if self._client_obj is None:
            import pydo                         # slow import: only when the API is used
            kwargs = {"endpoint": self.endpoint} if self.endpoint else {}
            # retry_total=0: we retry 429s ourselves, honouring the rate-limit headers
            self._client_obj = pydo.Client(token=self._token, retry_total=0, **kwargs)
        return self._client_obj

    def _call(self, what: str, fn: Callable, **kwargs: Any) -> Any:
        """Run one pydo call; retry 429s; turn failures into one-line ProviderErrors."""
        from azure.core.exceptions import AzureError, HttpResponseError
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                return fn(**kwargs, **self._call_opts)
            except HttpResponseError as e:
                status = e.status_code or 0
                headers = dict(e.response.headers) if e.response is not None else {}
                if status == 429 and attempt < RATE_LIMIT_RETRIES:
                    self._sleep(rate_limit_wait(headers, attempt, time.time()))
                    continue
                raise self._api_error(what, status, _json(e.response),
                                      _header(headers, "x-request-id") or "") from e
            except AzureError as e:
                host = urlsplit(self.endpoint or "https://api.digitalocean.com").netloc
                raise ProviderError(f"{what}: cannot reach the DigitalOcean API at {host}: "
                                    f"{one_line(e, self._token, 120)}",
                                    fix="check the network connection and rerun") from e
        raise AssertionError("unreachable")

    def _api_error(self, what: str, status: int, body: Any, request_id: str = "") -> ProviderError:
        return api_error(what, status, body, self.env, request_id=request_id, secret=self._token)


def _json(response: Any) -> Any:
    try:
        return response.json() if response is not None else None
    except Exception:               # not JSON: the status code alone will do
        return None


def _transport_options(endpoint: str | None) -> dict:
    """Per-call pydo options: plain http is allowed only to a loopback test server."""
    if not endpoint:
        return {}
    parts = urlsplit(endpoint)
    if parts.scheme == "https":
        return {}
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return {"enforce_https": False}     # azure-core refuses bearer tokens over http otherwise
    raise DropshipError(f"refusing to send the DigitalOcean token to {parts.scheme}://{parts.hostname}",
                        fix="use an https:// endpoint (plain http only for 127.0.0.1/localhost)")
