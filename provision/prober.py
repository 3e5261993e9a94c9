"""Downtime as seen from outside: a prober asks a URL many times a second from this machine,
and ``downtime`` reads its samples (pure): first failed request to the first good answer after
the last failure."""
from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Downtime:
    seconds: float | None          # None: it never came back while probed
    first_failed: float | None     # monotonic times
    first_good: float | None
    failed: int
    total: int

    def describe(self) -> str:
        if self.first_failed is None:
            return f"no failed request (of {self.total})"
        if self.seconds is None:
            return f"still down: {self.failed} of {self.total} requests failed and none answered since"
        return f"{self.seconds:.1f} s (first failed request to first good answer; {self.failed} of {self.total} failed)"


def downtime(samples: list[tuple[float, bool]]) -> Downtime:
    """From ``(time, ok)`` samples in time order (pure)."""
    failed = [t for t, ok in samples if not ok]
    if not failed:
        return Downtime(0.0, None, None, 0, len(samples))
    good = next((t for t, ok in samples if ok and t > failed[-1]), None)
    return Downtime(None if good is None else good - failed[0], failed[0], good, len(failed), len(samples))


@dataclass
class Prober:
    """GET ``url`` (with ``host`` as the Host header) every ``interval`` seconds from a pool of
    threads, so the rate holds while requests hang; a 2xx/3xx answer within ``timeout`` is good.
    Each sample is stamped with the time its request was sent."""

    url: str
    host: str | None = None
    interval: float = 0.04        # 25 requests a second
    timeout: float = 0.5
    workers: int = 16             # ≥ rate × timeout: requests that hang do not slow the others
    samples: list[tuple[float, bool]] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def __enter__(self) -> "Prober":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._ended = time.monotonic()

    def result(self) -> Downtime:
        return downtime(self._sorted())

    def rate(self) -> float:
        """Requests sent per second while it ran."""
        span = getattr(self, "_ended", time.monotonic()) - getattr(self, "_started", time.monotonic())
        return len(self.samples) / span if span > 0 else 0.0

    def good_since(self, seconds: float) -> bool:
        """Every sample of a span of ``seconds`` was good, and there was one: the span ends ``timeout``
        ago, so each of its requests has had its answer."""
        settled = time.monotonic() - self.timeout
        recent = [ok for t, ok in self._sorted() if settled - seconds <= t <= settled]
        return bool(recent) and all(recent)

    def _sorted(self) -> list[tuple[float, bool]]:
        with self._lock:
            return sorted(self.samples)

    def _ask(self, sent: float) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
        try:
            conn.request("GET", parts.path or "/", headers={"Host": self.host} if self.host else {})
            ok = 200 <= conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            conn.close()
        with self._lock:
            self.samples.append((sent, ok))

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="probe") as pool:
            due = time.monotonic()
            while not self._stop.is_set():
                pool.submit(self._ask, time.monotonic())
                due += self.interval
                self._stop.wait(max(0.0, due - time.monotonic()))
