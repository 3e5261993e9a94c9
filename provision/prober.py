"""Downtime as seen from outside: a prober asks a URL many times a second from this machine,
and ``downtime`` reads its samples (pure): first failed request to the first good answer after
the last failure."""
from __future__ import annotations

import http.client
import threading
import time
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
    """GET ``url`` (with ``host`` as the Host header) every ``interval`` seconds in a thread; a
    2xx/3xx answer within ``timeout`` is good."""

    url: str
    host: str | None = None
    interval: float = 0.04        # ≥ 20 requests a second
    timeout: float = 1.0
    samples: list[tuple[float, bool]] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> Downtime:
        return downtime(list(self.samples))

    def good_since(self, seconds: float) -> bool:
        """Every sample of the last ``seconds`` was good (and there was one)."""
        now = time.monotonic()
        recent = [ok for t, ok in list(self.samples) if t >= now - seconds]
        return bool(recent) and all(recent)

    def _ask(self) -> bool:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
        try:
            conn.request("GET", parts.path or "/", headers={"Host": self.host} if self.host else {})
            return 200 <= conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append((started, self._ask()))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
