"""Where a rollback goes on one host (pure): the warm release by default, or --to's, refused with
the fix when it is not retained, not there, or already live."""
from __future__ import annotations

from provision.workflows.host_deploy import AppState, rollback_target

R1, R2, R3 = "20261201T000000Z-aaaaaaaa", "20261202T000000Z-bbbbbbbb", "20261203T000000Z-cccccccc"


def state(live: str | None, blue: str | None, green: str | None, releases: list[str]) -> AppState:
    return AppState(live, {"blue": blue, "green": green}, releases)


def test_the_warm_release_by_default_and_a_retained_one_with_to():
    assert rollback_target(state("green", R1, R2, [R1, R2]), None) == (R1, "", "")
    assert rollback_target(state("green", R2, R3, [R1, R2, R3]), R1) == (R1, "", "")


def test_a_host_that_joined_after_the_release_has_none_warm_and_not_the_one_asked_for():
    fresh = state("blue", R3, None, [R3])
    assert rollback_target(fresh, None) == (
        "", "no previous release is kept warm", "pass --to with one of the releases listed by `invoke releases`")
    assert rollback_target(fresh, R1) == ("", f"unknown release {R1}", f"use one of: {R3}")
    assert rollback_target(state(None, None, None, []), R1)[1:] == (f"unknown release {R1}", "use one of: none retained")


def test_the_live_release_is_refused():
    assert rollback_target(state("blue", R2, R1, [R1, R2]), R2) == ("", f"{R2} is already live", "nothing to do")
