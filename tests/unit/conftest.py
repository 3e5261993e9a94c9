"""Fixtures of the unit tier."""
import pytest

from tests.unit.do_support import fake_api


@pytest.fixture
def api():
    """The local fake DigitalOcean API (in-process, MemoryBackend), checked against the spec."""
    with fake_api() as fake:
        yield fake
