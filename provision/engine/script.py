"""The batched shell scripts sent to a host, and the parsers of what comes back (pure).

One probe script gathers the facts of every resource; one apply script per phase runs every
change, each in its own ``set -e`` subshell between markers, so progress streams back and a
failure names its step.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from typing import Callable

from . import batch
from .model import Change, Handler, Resource


def marker() -> str:
    return f"@@dropship-{secrets.token_hex(4)}"


def probe_script(probes: list[str], mark: str) -> str:
    parts = []
    for i, probe in enumerate(probes):
        # `echo` ends a last line printed without a newline (base64 -w0) so the next marker stays alone.
        parts.append(f"echo '{mark} F {i}'\n{{ {probe}\n}} 2>/dev/null; echo")
    return "\n".join(parts) + f"\necho '{mark} END'\n"


def build_probe(resources: list[Resource], mark: str, want_content: bool = False
                ) -> tuple[str, Callable[[str], dict[str, object]]]:
    """The probe script for ``resources`` (batched kinds share one command) and its decoder.

    The decoder maps the script's output to ``{resource.key: facts}``; it raises ValueError when
    the output is incomplete.
    """
    singles = [r for r in resources if not r.batch]
    groups: dict[str, list[Resource]] = {}
    for r in resources:
        if r.batch:
            groups.setdefault(r.batch, []).append(r)
    items = {kind: [r.batch_item(want_content) for r in rs] for kind, rs in groups.items()}
    probes = [r.probe(want_content) for r in singles] + [batch.script(k, items[k], want_content) for k in groups]

    def decode(output: str) -> dict[str, object]:
        texts = parse_probe(output, mark, len(probes))
        found = {r.key: r.parse(text) for r, text in zip(singles, texts)}
        for (kind, rs), text in zip(groups.items(), texts[len(singles):]):
            for r, part in zip(rs, batch.split(kind, text, items[kind])):
                found[r.key] = r.parse(part)
        return found

    return probe_script(probes, mark), decode


def parse_probe(output: str, mark: str, count: int) -> list[str]:
    """Split the probe output into one text per resource; raises ValueError when incomplete."""
    chunks: dict[int, list[str]] = {}
    current = None
    ended = False
    for line in output.split("\n"):
        if line.startswith(mark + " "):
            tag = line[len(mark) + 1:].split()
            if tag[0] == "F":
                current = int(tag[1])
                chunks[current] = []
            elif tag[0] == "END":
                ended = True
                current = None
            continue
        if current is not None:
            chunks[current].append(line)
    if not ended or len(chunks) != count:
        raise ValueError("fact gathering ended early")
    return ["\n".join(chunks[i]).strip("\n") for i in range(count)]


@dataclass
class Step:
    """One unit of an apply script: a change, or a handler."""

    label: str
    commands: list[str]
    change: Change | None = None
    notifies: tuple[int, ...] = ()     # handler steps this change triggers once it is done
    handler: bool = False


def plan_handlers(changes: list[Change]) -> list[Handler]:
    """Handlers notified by ``changes``, once each, minus those of a service this phase starts
    after every change that notifies it (a change made after the start still needs its reload)."""
    started = {c.service: i for i, c in enumerate(changes) if c.service}
    out: list[Handler] = []
    for i, c in enumerate(changes):
        for h in c.notify:
            if h not in out and not (h.service in started and i < started[h.service]):
                out.append(h)
    return out


def apply_steps(changes: list[Change]) -> list[Step]:
    handlers = plan_handlers(changes)
    changed = [c for c in changes if c.commands]
    first = len(changed)
    steps = [Step(f"{c.role + ': ' if c.role else ''}{c.summary}", c.commands, c,
                  tuple(first + handlers.index(h) for h in c.notify if h in handlers)) for c in changed]
    return steps + [Step(f"handler: {h.name}", [h.command], handler=True) for h in handlers]


def _run_step(i: int, step: Step, mark: str, on_failure: str) -> str:
    body = "\n".join(step.commands)
    flags = "".join(f"\nnotified_{j}=1" for j in step.notifies)
    return (f"echo '{mark} S {i}'\n( set -e\n{body}\n) >\"$log\" 2>&1 </dev/null\nrc=$?\n"
            f"if [ $rc -ne 0 ]; then echo '{mark} X {i}' $rc; tail -n 15 \"$log\"; echo '{mark} E'; {on_failure}\n"
            f"else echo '{mark} D {i}'{flags}\nfi")


def apply_script(steps: list[Step], mark: str) -> str:
    """Changes run in order and stop at the first failure; then the handlers of the changes that
    were done still run (a restart is never lost because a later step failed)."""
    out = ["set -u", 'log=$(mktemp /tmp/.dropship-log.XXXXXX)', "trap 'rm -f \"$log\"' EXIT", "failed=0",
           "changes() {", ":"]
    out += [_run_step(i, s, mark, "return 1") for i, s in enumerate(steps) if not s.handler]
    out += ["}", "changes\nfailed=$?"]        # not `changes || ...`: that would switch off set -e inside
    out += [f"if [ -n \"${{notified_{i}:-}}\" ]; then\n{_run_step(i, s, mark, 'failed=1')}\nfi"
            for i, s in enumerate(steps) if s.handler]
    out.append(f"[ $failed -eq 0 ] && echo '{mark} END'\nexit $failed")
    return "\n".join(out) + "\n"


@dataclass
class ApplyEvents:
    """What an apply script reported: steps done, the failing step and its output."""

    done: list[int] = field(default_factory=list)
    failed: int | None = None
    rc: int = 0
    output: list[str] = field(default_factory=list)
    ended: bool = False


def read_event(line: str, mark: str, events: ApplyEvents) -> tuple[str, int] | None:
    """Fold one output line into ``events``; returns ("start"|"done"|"failed", step) for markers."""
    if not line.startswith(mark + " "):
        if events.failed is not None:
            events.output.append(line)
        return None
    tag = line[len(mark) + 1:].split()
    if tag[0] == "S":
        return "start", int(tag[1])
    if tag[0] == "D":
        events.done.append(int(tag[1]))
        return "done", int(tag[1])
    if tag[0] == "X":
        if events.failed is None:            # the first failure is the one to report
            events.failed, events.rc = int(tag[1]), int(tag[2])
        return "failed", int(tag[1])
    if tag[0] == "END":
        events.ended = True
    return None
