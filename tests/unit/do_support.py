"""What the DigitalOcean provider's unit tests share: the token, a public key, the fake API
(the ``api`` fixture of conftest.py), a provider pointed at it, and one-line error checks."""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provision.providers.base import DropletSpec
from provision.providers.digitalocean import DigitalOceanProvider
from tests.fakes.do_api import fake_do_api

TOKEN = "dop_v1_test-token-0123456789abcdef"


def new_public_key(comment: str = "dropship@test") -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


PUBLIC_KEY = new_public_key()


def fake_api():
    """The fake API as the ``api`` fixture gives it (tests/unit/conftest.py)."""
    return fake_do_api(token=TOKEN, boot_delay=0.02, action_delay=0.02)


def provider(api, env: str = "dev", token: str = TOKEN, **kw) -> DigitalOceanProvider:
    kw = {"poll_interval": 0.005, "timeout": 5, **kw}
    return DigitalOceanProvider(token, env, endpoint=api.url, **kw)


def spec(name: str = "web-1", size: str = "s-1vcpu-1gb", tags: tuple[str, ...] = ("web",)) -> DropletSpec:
    return DropletSpec(name=name, size=size, region="nyc3", image="ubuntu-24-04-x64", tags=tags)


def action_types(api) -> list[dict]:
    return [r.json for r in api.calls("POST", r"/actions$")]


def assert_one_line(err: Exception) -> None:
    text = str(err)
    assert "\n" not in text and TOKEN not in text and "Traceback" not in text
