"""A paced HTTP load generator that runs in its own process, for zero-downtime checks.

    gen = LoadGenerator("http://127.0.0.1:8080/healthz", rate=60)
    gen.start()             # returns once requests are flowing
    ...                     # deploy, roll back, ...
    stats = gen.stop()      # LoadStats(total, ok, failed, seconds, rps, failures, releases, ...)

The generator is a child Python process (``python tests/loadgen.py ...``, standard library only)
so the test process's GIL, imports and subprocesses cannot slow it down. Requests are paced on
a fixed schedule (request n is due at t0 + n/rate) by ``concurrency`` worker threads, each with
its own ``http.client`` connection: a fresh one per request (default; every failure is the
server's) or kept alive (a request that fails on a *reused* idle connection before any byte of
the answer is retried once on a new connection, as browsers and urllib3 do; counted in
``retried``). A non-2xx answer, a timeout or a connection error is a failure.

Safety: it only targets 127.0.0.1; it stops by itself after ``max_seconds`` (default 600) and
when its parent goes away (its stdin, a pipe from the parent, reaches EOF, or its parent pid
changes). Protocol: the child prints ``READY`` once running, then one JSON line of stats when its
stdin closes; ``stop()`` closes it.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_FAILURES = 20
ALLOWED_HOST = "127.0.0.1"


@dataclass
class LoadStats:
    total: int
    ok: int
    failed: int
    seconds: float
    rps: float
    failures: list[str] = field(default_factory=list)     # the first MAX_FAILURES, with their time since the
                                                          # start: "+1.234s 502", "+1.2s ConnectionResetError: ..."
    releases: Counter = field(default_factory=Counter)    # the "release" field of JSON answers (/healthz)
    retried: int = 0                                      # keep-alive only: stale reused connections retried
    spans: dict = field(default_factory=dict)             # release -> [first, last]: time.monotonic() when the
                                                          # requests answered by it were sent (one clock for
                                                          # every process on Linux: compare with the parent's)
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    latency_max: float = 0.0
    stopped_by: str = "parent"                            # parent | max_seconds | parent_gone

    def summary(self) -> str:
        rel = ", ".join(f"{r}={n}" for r, n in sorted(self.releases.items()))
        return (f"{self.total} requests in {self.seconds:.1f} s ({self.rps:.0f}/s), {self.failed} failed, "
                f"latency p50 {self.latency_p50 * 1000:.0f} ms p99 {self.latency_p99 * 1000:.0f} ms "
                f"max {self.latency_max * 1000:.0f} ms" + (f"; releases {rel}" if rel else "")
                + (f"; first failures: {self.failures[:5]}" if self.failures else ""))

    def to_json(self) -> dict:
        return {"total": self.total, "ok": self.ok, "failed": self.failed, "seconds": round(self.seconds, 3),
                "rps": round(self.rps, 2), "failures": self.failures, "releases": dict(self.releases),
                "retried": self.retried, "spans": self.spans, "latency_p50": round(self.latency_p50, 4),
                "latency_p99": round(self.latency_p99, 4), "latency_max": round(self.latency_max, 4),
                "stopped_by": self.stopped_by}

    @classmethod
    def from_json(cls, data: dict) -> LoadStats:
        return cls(total=data["total"], ok=data["ok"], failed=data["failed"], seconds=data["seconds"],
                   rps=data["rps"], failures=list(data["failures"]), releases=Counter(data["releases"]),
                   retried=data["retried"], spans={r: tuple(v) for r, v in data["spans"].items()},
                   latency_p50=data["latency_p50"], latency_p99=data["latency_p99"],
                   latency_max=data["latency_max"], stopped_by=data["stopped_by"])


def check_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// or https:// URL on 127.0.0.1; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname != ALLOWED_HOST:
        raise ValueError(f"the load generator only targets http(s)://{ALLOWED_HOST}, not {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), path


class LoadGenerator:
    """Controller side: starts the child process, stops it, returns its LoadStats."""

    def __init__(self, url: str, rate: float = 60, concurrency: int = 8, max_seconds: float = 600,
                 timeout: float = 5.0, keepalive: bool = False, server_name: str = "", cafile: str = ""):
        check_url(url)
        if rate <= 0 or concurrency < 1 or max_seconds <= 0:
            raise ValueError("rate, concurrency and max_seconds must be positive")
        self.url, self.rate, self.concurrency = url, rate, concurrency
        self.max_seconds, self.timeout, self.keepalive = max_seconds, timeout, keepalive
        self.server_name, self.cafile = server_name, cafile      # https: SNI + Host, the CA to verify against
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-u", os.path.abspath(__file__), "--url", self.url, "--rate", str(self.rate),
               "--concurrency", str(self.concurrency), "--max-seconds", str(self.max_seconds),
               "--timeout", str(self.timeout)]
        cmd += ["--server-name", self.server_name] if self.server_name else []
        cmd += ["--cafile", self.cafile] if self.cafile else []
        return cmd + (["--keepalive"] if self.keepalive else [])

    def start(self, ready_timeout: float = 10) -> LoadGenerator:
        if self.proc is not None:
            raise RuntimeError("already started")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)   # a Ctrl-C in the terminal goes to the parent only
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "READY":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"load generator did not start: {line.strip() or 'no answer'}")
        return self

    def stop(self, timeout: float | None = None) -> LoadStats:
        """Stop sending (in-flight requests finish, bounded by the request timeout); the stats."""
        if self.proc is None:
            raise RuntimeError("not started")
        proc, self.proc = self.proc, None
        try:
            out, _ = proc.communicate(timeout=timeout or self.timeout + 5)     # closes stdin: the stop signal
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("load generator did not stop in time") from None
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"load generator failed (exit {proc.returncode}): {out.strip()[-500:]}")
        return LoadStats.from_json(json.loads(lines[-1]))

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- the child process ----------------------------------------------------------------------------

class _Run:
    def __init__(self, url: str, rate: float, concurrency: int, timeout: float, keepalive: bool,
                 server_name: str = "", cafile: str = ""):
        self.host, self.port, self.path = check_url(url)
        self.https, self.server_name, self.cafile = url.startswith("https:"), server_name, cafile
        self.rate, self.concurrency, self.timeout, self.keepalive = rate, concurrency, timeout, keepalive
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.next = 0
        self.t0 = 0.0
        self.ok = self.failed = self.retried = 0
        self.failures: list[str] = []
        self.releases: Counter = Counter()
        self.spans: dict[str, list[float]] = {}
        self.latencies: list[float] = []

    def ticket(self) -> float | None:
        """When the next request is due (monotonic), or None once stopping."""
        with self.lock:
            n = self.next
            self.next += 1
        due = self.t0 + n / self.rate
        delay = due - time.monotonic()
        if delay > 0 and self.stopping.wait(delay):
            return None
        return None if self.stopping.is_set() else due

    def connection(self) -> http.client.HTTPConnection:
        if not self.https:
            return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        # TLS for ``server_name`` (SNI, Host, the certificate's name), the TCP connection to 127.0.0.1
        name = self.server_name or self.host
        context = ssl.create_default_context(cafile=self.cafile or None)
        conn = http.client.HTTPSConnection(name, self.port, timeout=self.timeout, context=context)
        conn._create_connection = lambda _addr, timeout, source: socket.create_connection(
            (self.host, self.port), timeout, source)
        return conn

    def request(self, conn: http.client.HTTPConnection, reused: bool) -> tuple[int, bytes, bool]:
        """(status, body, server_wants_close); retries once a stale reused keep-alive connection."""
        try:
            conn.request("GET", self.path, headers={"Connection": "keep-alive" if self.keepalive else "close"})
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            conn.close()                        # the server closed the idle connection as we sent: retry once
            with self.lock:
                self.retried += 1
            conn.request("GET", self.path, headers={"Connection": "keep-alive"})
            resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, resp.will_close

    def worker(self) -> None:
        conn, used = None, False
        while True:
            due = self.ticket()
            if due is None:
                break
            if conn is None:
                conn, used = self.connection(), False
            started = time.monotonic()
            try:
                status, body, closing = self.request(conn, used)
                used = True
                error = None if 200 <= status < 300 else str(status)
            except Exception as exc:  # noqa: BLE001 - any failure to get an answer counts
                status, body, closing = 0, b"", True
                error = f"{type(exc).__name__}: {exc}"
            took = time.monotonic() - started
            if closing or not self.keepalive or error:
                conn.close()
                conn = None
            release = None
            if body[:1] == b"{":
                try:
                    release = json.loads(body).get("release")
                except (ValueError, AttributeError):
                    release = None
            with self.lock:
                self.latencies.append(took)
                if release is not None:
                    self.releases[str(release)] += 1
                    span = self.spans.setdefault(str(release), [started, started])
                    span[0], span[1] = min(span[0], started), max(span[1], started)
                if error is None:
                    self.ok += 1
                else:
                    self.failed += 1
                    if len(self.failures) < MAX_FAILURES:
                        self.failures.append(f"+{started - self.t0:.3f}s {error}")
        if conn is not None:
            conn.close()

    def stats(self, seconds: float, stopped_by: str) -> LoadStats:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0

        total = self.ok + self.failed
        return LoadStats(total, self.ok, self.failed, seconds, total / seconds if seconds > 0 else 0.0,
                         self.failures, self.releases, self.retried, self.spans, pct(0.5), pct(0.99),
                         lat[-1] if lat else 0.0, stopped_by)


def _stdin_closed(event: threading.Event) -> None:
    """Block on stdin (a pipe from the parent): EOF means stop (closed, or the parent died)."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    event.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paced HTTP load on 127.0.0.1 until stdin closes")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--keepalive", action="store_true")
    parser.add_argument("--server-name", default="")
    parser.add_argument("--cafile", default="")
    args = parser.parse_args(argv)
    run = _Run(args.url, args.rate, args.concurrency, args.timeout, args.keepalive, args.server_name, args.cafile)
    parent = os.getppid()
    stdin_eof = threading.Event()
    threading.Thread(target=_stdin_closed, args=(stdin_eof,), daemon=True).start()
    run.t0 = time.monotonic()
    threads = [threading.Thread(target=run.worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    print("READY", flush=True)
    deadline = run.t0 + args.max_seconds
    stopped_by = "parent"
    while not stdin_eof.wait(0.05):
        if time.monotonic() >= deadline:
            stopped_by = "max_seconds"
            break
        if os.getppid() != parent:
            stopped_by = "parent_gone"
            break
    seconds = time.monotonic() - run.t0
    run.stopping.set()
    for t in threads:
        t.join(args.timeout + 1)
    try:
        print(json.dumps(run.stats(seconds, stopped_by).to_json()), flush=True)
    except BrokenPipeError:           # nobody is listening any more (parent gone)
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
