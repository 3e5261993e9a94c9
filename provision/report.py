"""What users see: per-host progress while work runs, then a recap (or one JSON object)."""
from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .build_failures import meaningful_lines, shorten_around

from .engine.runner import HostOutcome, Progress


@dataclass
class Report:
    command: str
    env: str
    seconds: float = 0.0
    hosts: dict[str, HostOutcome] = field(default_factory=dict)
    dry_run: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(not h.failed for h in self.hosts.values())

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "hosts": {n: {"ok": h.ok, "changed": h.changed, "failed": h.failed, "skipped": h.skipped,
                          "seconds": round(h.seconds, 3), **({"error": h.error} if h.error else {})}
                      for n, h in self.hosts.items()},
            "changes": [c.to_dict(n) for n, h in self.hosts.items() for c in h.changes],
            **self.extra,
        }


class ConsoleProgress(Progress):
    """One line per event, prefixed with the host; diffs indented. Thread-safe."""

    COLORS = {"changed": "33", "would change": "33", "failed": "31", "ok": "32", "skipped": "36", "ran": "35"}

    def __init__(self, stream=None, color: bool | None = None):
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty() if color is None else color
        self.lock = threading.Lock()
        self.width = 12

    def _paint(self, text: str, status: str) -> str:
        code = self.COLORS.get(status)
        return f"\033[{code}m{text}\033[0m" if self.color and code else text

    def line(self, text: str) -> None:
        with self.lock:
            print(text, file=self.stream, flush=True)

    def step(self, host: str, status: str, label: str, seconds: float | None = None) -> None:
        took = f" ({seconds:.1f}s)" if seconds is not None else ""
        self.line(f"[{host}] {self._paint(status.ljust(self.width), status)} {label}{took}")

    def diff(self, host: str, text: str) -> None:
        body = "\n".join(f"    {self._paint(ln, 'ok' if ln.startswith('+') else 'failed' if ln.startswith('-') else '')}"
                         for ln in text.rstrip("\n").splitlines())
        self.line(body)


def recap(report: Report, progress: ConsoleProgress) -> None:
    title = f"RECAP {report.command} --env {report.env}{' (dry run)' if report.dry_run else ''}"
    progress.line(f"\n{title} — {report.seconds:.1f}s")
    name_w = max([len(n) for n in report.hosts] + [4])
    for name, h in report.hosts.items():
        status = "failed" if h.failed else ("changed" if h.changed else "ok")
        verb = "would change" if report.dry_run else "changed"
        progress.line(f"  {progress._paint(name.ljust(name_w), status)}  ok={h.ok:<3} {verb}={h.changed:<3} "
                      f"failed={h.failed:<2} skipped={h.skipped:<2} {h.seconds:.1f}s")
    for name, h in report.hosts.items():
        if h.error:
            progress.line(progress._paint(f"error: {h.error}", "failed"))


def emit(report: Report, as_json: bool, progress: ConsoleProgress) -> None:
    if as_json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        recap(report, progress)


TICK_SECONDS = 10.0


def last_log_line(path: Path, width: int = 100, tail: int = 8192) -> str:
    """The last meaningful line of the log at ``path``, shortened to ``width`` ('' when none yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail))
            lines = meaningful_lines(f.read().decode(errors="replace"))
    except OSError:
        return ""
    return shorten_around(lines[-1], 0, width) if lines else ""


@contextmanager
def ticker(label: str, log_path: Path, stream=None, interval: float = TICK_SECONDS, clock=time.monotonic):
    """Say what a long silent build does, on stderr (``--json`` output stays clean).

    ``building <label> (log: <path>)`` first, then every ``interval`` s ``  … 40s: <the log's last
    line>``, and ``built <label> in 63s`` when the block ends without an error (the error says the rest).
    """
    out = stream or sys.stderr
    started, stop = clock(), threading.Event()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    def tick() -> None:
        while not stop.wait(interval):
            last = last_log_line(log_path)
            say(f"  … {clock() - started:.0f}s{': ' + last if last else ''}")

    say(f"building {label} (log: {log_path})")
    thread = threading.Thread(target=tick, name="ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    say(f"built {label} in {clock() - started:.0f}s")
