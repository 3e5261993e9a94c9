"""Bounded parallel fan-out across hosts."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

PARALLEL = 32      # hosts worked on at once unless the invoke config's dropship.parallel says otherwise

T = TypeVar("T")
R = TypeVar("R")


def fan_out(items: Iterable[T], work: Callable[[T], R], limit: int = PARALLEL) -> list[tuple[T, R | None, BaseException | None]]:
    """Run ``work`` on every item, at most ``limit`` at once; keep input order; never raise."""
    items = list(items)

    def guarded(item):
        try:
            return item, work(item), None
        except BaseException as exc:  # reported per host by the caller
            return item, None, exc

    if len(items) <= 1 or limit <= 1:
        return [guarded(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        return list(pool.map(guarded, items))
