"""The load generator (tests/loadgen.py) against a local http.server: pacing, failure counting,
release counting, keep-alive retries, prompt stop, and its safety bounds (127.0.0.1 only, max
duration, parent death)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.loadgen import LoadGenerator, check_url
from tests.support import PROJECT


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive unless the client asks otherwise
    counter = 0
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 - http.server's naming
        with Handler.lock:
            Handler.counter += 1
            n = Handler.counter
        if self.path == "/healthz":
            self.answer(200, json.dumps({"status": "ok", "release": "r1"}).encode())
        elif self.path == "/flaky":                     # every 4th request fails
            self.answer(500 if n % 4 == 0 else 200, b"flaky\n")
        elif self.path == "/drops-idle":                # closes every 2nd connection silently after answering
            self.answer(200, b"ok\n")
            if n % 2 == 0:
                self.close_connection = True
        else:
            self.answer(404, b"no\n")

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def run_for(gen: LoadGenerator, seconds: float):
    gen.start()
    time.sleep(seconds)
    started = time.monotonic()
    stats = gen.stop()
    return stats, time.monotonic() - started


def test_paces_to_the_rate_counts_releases_and_stops_promptly(server):
    before = time.monotonic()
    stats, stop_took = run_for(LoadGenerator(server + "/healthz", rate=100, concurrency=4), 0.5)
    first, last = stats.spans["r1"]                    # on the parent's clock
    assert before < first < before + 0.3 and last - first > 0.4 and last < time.monotonic()
    assert stop_took < 0.5
    assert stats.failed == 0 and stats.failures == []
    assert 85 <= stats.rps <= 115, stats.summary()
    assert 0.45 <= stats.seconds <= 0.7
    assert stats.total == stats.ok and stats.releases == {"r1": stats.total}
    assert stats.stopped_by == "parent"


def test_counts_non_2xx_answers_as_failures(server):
    stats, _ = run_for(LoadGenerator(server + "/flaky", rate=150), 0.3)
    assert stats.total >= 30
    assert stats.failed == stats.total - stats.ok
    assert abs(stats.failed - stats.total / 4) <= 3, stats.summary()
    assert stats.failures and all(f.startswith("+") and f.split()[1] == "500" for f in stats.failures)
    assert stats.releases == {}


def test_counts_connection_errors_and_keeps_the_first_twenty():
    import socket

    with socket.socket() as s:                         # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stats, _ = run_for(LoadGenerator(f"http://127.0.0.1:{port}/", rate=100), 0.25)
    assert stats.total >= 20 and stats.ok == 0 and stats.failed == stats.total
    assert len(stats.failures) == 20
    assert "ConnectionRefusedError" in stats.failures[0]


def test_keepalive_retries_a_reused_connection_the_server_closed(server):
    stats, _ = run_for(LoadGenerator(server + "/drops-idle", rate=100, keepalive=True), 0.3)
    assert stats.failed == 0, stats.summary()
    assert stats.retried > 0 and stats.total >= 25


def test_stops_by_itself_after_max_seconds(server):
    gen = LoadGenerator(server + "/healthz", rate=100, max_seconds=0.2)
    stats, _ = run_for(gen, 0.3)
    assert stats.stopped_by == "max_seconds"
    assert 0.18 <= stats.seconds <= 0.3 and stats.total >= 15


def test_stops_when_its_parent_dies(server):
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tests.loadgen import LoadGenerator\n"
         f"g = LoadGenerator({server + '/healthz'!r}, rate=20).start()\n"
         "print(g.proc.pid, flush=True)\ntime.sleep(60)\n"],
        cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.02)
        assert not _running(child), "the load generator outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("url", ["http://example.com/", "http://localhost:8080/", "https://localhost/",
                                 "http://10.0.0.1/healthz", "ftp://127.0.0.1/"])
def test_only_ever_targets_127_0_0_1(url):
    with pytest.raises(ValueError, match="only targets"):
        LoadGenerator(url)
    with pytest.raises(ValueError):
        check_url(url)


def test_url_parts():
    assert check_url("http://127.0.0.1:8080/healthz?x=1") == ("127.0.0.1", 8080, "/healthz?x=1")
    assert check_url("http://127.0.0.1") == ("127.0.0.1", 80, "/")
    assert check_url("https://127.0.0.1/x") == ("127.0.0.1", 443, "/x")
    assert os.path.isfile(LoadGenerator("http://127.0.0.1/").command()[2])
