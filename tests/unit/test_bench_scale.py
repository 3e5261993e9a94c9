"""bench/scale.py's pure parts: the environment it builds, the live slot's CPU probe and the CPU
floor it prints."""
from __future__ import annotations

import sys

from tests.support import PROJECT

sys.path.insert(0, str(PROJECT / "bench"))

import scale  # noqa: E402


def test_the_first_host_holds_the_database_and_the_others_the_app_only(monkeypatch):
    import tests.support

    monkeypatch.setattr(tests.support, "warm_image", lambda: "dropship/droplet-warm:x")   # (built by the bench)
    hosts = scale.droplets(3)
    assert {h["image"] for h in hosts} == {"dropship/droplet-warm:x"}
    assert [h["name"] for h in hosts] == ["h01", "h02", "h03"]
    assert hosts[0]["roles"] == scale.DB_ROLES and hosts[1]["roles"] == hosts[2]["roles"] == scale.WEB_ROLES


def test_the_live_slot_probe_sums_the_master_and_its_workers():
    assert scale.live_slot_cpu_command("shop") == (
        "main=$(systemctl show -p MainPID --value shop@$(cat /srv/shop/live).service); "
        '[ "${main:-0}" -gt 0 ] || exit 1; '
        "for p in $main $(pgrep -P $main); do sed 's/.*) //' /proc/$p/stat | cut -d' ' -f12,13; done | "
        "awk -v hz=$(getconf CLK_TCK) '{t += $1 + $2} END {printf \"%.3f\\n\", t / hz}'")


def test_the_floor_shows_idle_and_the_apps_own_start_apart(monkeypatch):
    monkeypatch.setattr(scale.os, "cpu_count", lambda: 2)
    runs = [{"cli": 0.9, "droplets": 30.0, "app_start": 18.0}, {"cli": 1.1, "droplets": 34.0, "app_start": 20.0}]
    assert scale.floor(runs, 10.0, 0.05) == (
        "droplets 32.00 (0.50 of it idle; 19.00 the app's new gunicorns starting, alone >= 9.50 s) "
        "+ CLI 1.00 CPU-s, so >= 16.50 s on 2 CPU(s)")


def test_the_floor_leaves_out_what_could_not_be_read(monkeypatch):
    monkeypatch.setattr(scale.os, "cpu_count", lambda: 2)
    assert scale.floor([{"cli": 0.4, "droplets": 1.0, "app_start": None}], 1.0, None) == \
        "droplets 1.00 + CLI 0.40 CPU-s, so >= 0.70 s on 2 CPU(s)"
    assert scale.floor([{"cli": 0.4}], 1.0, None) == "the CLI used 0.40 CPU-s"
