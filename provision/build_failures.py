"""Why an image build failed, read from its log (pure): certificates, network, or dependencies.

A failed ``pip install`` behind a TLS-inspecting proxy ends in ``ResolutionImpossible`` or ``No matching
distribution``; the cause (``CERTIFICATE_VERIFY_FAILED``) is further up. ``build_failure_cause`` finds
it, ``failure_message`` turns it into the one-line error (cause first, then the log) and its fix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

CERTIFICATE = "certificate verification failed"
NETWORK = "network failure"
DEPENDENCIES = "dependency resolution failed"

# Most telling first: a certificate failure also shows as "Could not fetch URL" and as a resolution failure.
PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    (CERTIFICATE, re.compile(r"CERTIFICATE_VERIFY_FAILED|self[- ]signed certificate in certificate chain"
                             r"|unable to get local issuer certificate|x509: |certificate verif\w* failed"
                             r"|SSL certificate problem|SSLCertVerificationError"
                             r"|invalid peer certificate|UnknownIssuer", re.I)),
    (NETWORK, re.compile(r"Name or service not known|Temporary failure in name resolution|Connection refused"
                         r"|Connection timed out|Read timed out|Network is unreachable|No route to host"
                         r"|Could not fetch URL|Failed to establish a new connection|Could not resolve"
                         r"|Temporary failure resolving|Could not connect to|no such host|i/o timeout"
                         r"|Failed getting release file", re.I)),
    (DEPENDENCIES, re.compile(r"ResolutionImpossible|conflicting dependencies|No matching distribution found"
                              r"|Could not find a version that satisfies|Unable to correct problems, you have held"
                              r"|unmet dependencies|requirements are unsatisfiable|Unable to locate package"
                              r"|Couldn't find these debs", re.I)),
)
HINTS = {
    NETWORK: "the build could not reach a package server",
    DEPENDENCIES: "the requested packages do not fit together or do not exist",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STEP = re.compile(r"^Step \d+/\d+ : ", re.M)              # the legacy builder's step headers
# BuildKit's plain progress: "#8 0.588 <output>" and "#8 ERROR: <why>" of step 8.
_BK_ERROR = re.compile(r"^#(\d+) ERROR: ", re.M)
_BK_RUN_FAILED = re.compile(r'^ERROR: (?:executor failed running \[.*\]|process ".*" did not complete successfully): ')
NOISE = ("Removing intermediate container", "---> ", "Sending build context")
BUILDKIT_NOISE = ("[", "sha256:", "DONE ", "CACHED")


@dataclass(frozen=True)
class Cause:
    kind: str            # CERTIFICATE, NETWORK or DEPENDENCIES
    evidence: str        # the log line that shows it, shortened


def build_failure_cause(log_text: str) -> Cause | None:
    """The cause of a failed build from its log, or None when it says nothing known.

    Only the failing step is read (``failing_step``: a warning in a step that passed is no cause);
    the most telling kind found wins.
    """
    lines = [ln.strip() for ln in failing_step(log_text).splitlines()]
    for kind, pattern in PATTERNS:
        for line in lines:
            found = pattern.search(line)
            if found:
                return Cause(kind, shorten_around(line, found.start()))
    return None


def failing_step(log_text: str) -> str:
    """The failing step's part of a build log, without colours (pure): the legacy builder's last
    ``Step n/m`` on; BuildKit's lines of the step that ended in ``#n ERROR``, without their ``#n 1.234``
    prefixes and with the command left out of the error; else the whole log."""
    text = _ANSI.sub("", log_text or "")
    errors = list(_BK_ERROR.finditer(text))
    if errors:
        step = re.compile(rf"^#{errors[-1].group(1)} (?:\d+\.\d+ )?(.*)$")
        own = (m.group(1) for m in map(step.match, text.splitlines()) if m)
        return "\n".join(_BK_RUN_FAILED.sub("ERROR: ", ln) for ln in own if not ln.startswith(BUILDKIT_NOISE))
    steps = list(_STEP.finditer(text))
    return text[steps[-1].start():] if steps else text


def shorten_around(line: str, at: int, width: int = 200) -> str:
    """``line`` cut to ``width`` characters keeping position ``at`` in view (pure)."""
    if len(line) <= width:
        return line
    start = max(0, min(at - width // 4, len(line) - width))
    cut = line[start:start + width]
    return ("…" if start else "") + cut + ("…" if start + width < len(line) else "")


def meaningful_lines(build_log: str) -> list[str]:
    """The log's lines without colours, blanks and the builder's bookkeeping (pure)."""
    plain = (_ANSI.sub("", ln).strip() for ln in build_log.replace("\r", "\n").splitlines())
    return [ln for ln in plain if ln and not ln.startswith(NOISE)]


def failure_summary(build_log: str, lines: int = 6, limit: int = 900) -> str:
    """The last meaningful lines of a failed ``docker build`` (of its failing step, with BuildKit),
    joined into one line (pure)."""
    if _BK_ERROR.search(_ANSI.sub("", build_log or "")):
        build_log = failing_step(build_log)
    text = " | ".join(meaningful_lines(build_log)[-lines:])
    return text if len(text) <= limit else "…" + text[-limit:]


def failure_message(what: str, log_text: str, log_where: str, ca_note: str, fixes: dict[str, str],
                    status: object = None, unknown_fix: str | None = None) -> tuple[str, str]:
    """(one-line error, fix) of a failed build of ``what`` (pure).

    With a known cause: ``<what> failed: <cause> (<hint>): <evidence>; see <log>`` and ``fixes[kind]``
    (``ca_note`` says which CA certificates the build had). Otherwise ``<what> failed (<status>): <the
    log's last lines>`` and ``unknown_fix`` (default: see the log). Without ``what`` the line starts
    at the cause (for an error that names the step already).
    """
    cause = build_failure_cause(log_text)
    if cause is None:
        head = f"{what} failed{f' ({status})' if status is not None else ''}: " if what else ""
        return head + (failure_summary(log_text) or "no output"), unknown_fix or f"see {log_where}"
    head = f"{what} failed: " if what else ""
    hint = f"a TLS-inspecting proxy? {ca_note}" if cause.kind == CERTIFICATE else HINTS[cause.kind]
    return f"{head}{cause.kind} ({hint}): {cause.evidence}; see {log_where}", fixes[cause.kind]


def files_note(count: int, whose: str) -> str:
    """``the controller's CA certificates were given to the build: 2 files`` (pure)."""
    return f"{whose} CA certificates were given to the build: {count} file{'' if count == 1 else 's'}"
