"""droplet.create makes at most CREATE_AT_ONCE droplets at a time, whatever the commands' parallelism
(each one being created polls the provider's API, and DigitalOcean allows 250 requests a minute)."""
import textwrap
import threading
import time

from provision.inventory import load_inventory
from provision.providers.base import Droplet
from provision.workflows import droplets as workflow


class CountingProvider:
    def __init__(self):
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def create(self, spec, public_key):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.05)
        with self.lock:
            self.now -= 1
        return Droplet(spec.name, f"id-{spec.name}", "active", "10.0.0.1", 22, host_keys=[])


def test_at_most_eight_droplets_are_created_at_once(tmp_path, monkeypatch):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(textwrap.dedent("""\
        environments:
          e:
            provider: local
            droplets:
        """) + "".join(f"      - {{name: web-{i}, size: s-1vcpu-1gb, roles: [base]}}\n" for i in range(20)))
    env = load_inventory(inventory)["e"]
    provider = CountingProvider()
    monkeypatch.setattr(workflow, "provider_for", lambda env: provider)
    made = workflow.create(env, list(env.hosts), progress=type("P", (), {"step": lambda *a: None})(), parallel=32)
    assert [d.name for d in made] == [f"web-{i}" for i in range(20)]
    assert workflow.CREATE_AT_ONCE == 8 and provider.most == 8
