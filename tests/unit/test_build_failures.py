"""Why a build failed (read from real-looking pip, apt, docker and debootstrap logs), the one-line
error that says it, the CA certificates a build here gets, and the ticker of long silent builds."""
from __future__ import annotations

import io
import itertools
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from provision import airflow_image as ai
from provision import image_on_host as ih
from provision.build_failures import (CERTIFICATE, DEPENDENCIES, NETWORK, build_failure_cause, failing_step,
                                      failure_message, files_note, shorten_around)
from provision.errors import RemoteError
from provision.inventory import LOCAL_PYTHON_BASE, AirflowBuild, AirflowSettings
from provision.report import last_log_line, ticker
from provision.transport.ssh import Result

AIRFLOW_SRC = Path(__file__).resolve().parents[2] / "app_src" / "airflow"
BASE_ID = "sha256:" + "ab" * 32

PIP_STEP = """\
Step 9/14 : RUN set -eu;     python3 -m venv "${AIRFLOW_VENV}";     pip install --no-cache-dir -c /opt/airflow-constraints.txt "apache-airflow[postgres]==${AIRFLOW_VERSION}"
 ---> Running in 4b1d2c3e4f50
"""
PIP_CERT = PIP_STEP + """\
\x1b[91mWARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1028)'))': /simple/apache-airflow/
\x1b[0m\x1b[91mERROR: Cannot install apache-airflow[postgres]==3.3.2 because these package versions have conflicting dependencies.
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
\x1b[0mThe command '/bin/sh -c set -eu; pip install ...' returned a non-zero code: 1
"""
PIP_ISSUER = PIP_STEP + """\
Could not fetch URL https://pypi.org/simple/apache-airflow/: There was a problem confirming the ssl certificate: HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded with url: /simple/apache-airflow/ (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1000)'))) - skipping
ERROR: No matching distribution found for apache-airflow==3.3.2
"""
PIP_DNS = PIP_STEP + """\
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f3a1c2b5d30>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/apache-airflow/
ERROR: Could not find a version that satisfies the requirement apache-airflow==3.3.2 (from versions: none)
ERROR: No matching distribution found for apache-airflow==3.3.2
The command '/bin/sh -c set -eu; pip install ...' returned a non-zero code: 1
"""
PIP_CONFLICT = """\
Step 8/14 : RUN apt-get update
WARNING: Retrying (Retry(total=4)) after connection broken by 'ReadTimeoutError("HTTPSConnectionPool(host='pypi.org', port=443): Read timed out. (read timeout=15)")': /simple/pip/
""" + PIP_STEP + """\
ERROR: Cannot install -r /opt/airflow-requirements.txt (line 1) and apache-airflow[postgres]==3.3.2 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested sqlalchemy==2.0.99
    apache-airflow-core 3.3.2 depends on sqlalchemy<2.1 and >=1.4.49

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""
PIP_MISSING = PIP_STEP + """\
ERROR: Could not find a version that satisfies the requirement apache-airflow==0.0.1 (from versions: 1.10.9, 2.0.0, 3.3.2)
ERROR: No matching distribution found for apache-airflow==0.0.1
"""
APT_DNS = """\
Step 4/14 : RUN set -eu; need=""; apt-get update; apt-get install -y --no-install-recommends $need
 ---> Running in 77aa01c2d3e4
Ign:1 http://deb.debian.org/debian trixie InRelease
Err:1 http://deb.debian.org/debian trixie InRelease
  Temporary failure resolving 'deb.debian.org'
W: Failed to fetch http://deb.debian.org/debian/dists/trixie/InRelease  Temporary failure resolving 'deb.debian.org'
W: Some index files failed to download. They have been ignored, or old ones used instead.
E: Unable to locate package curl
"""
APT_HTTPS = """\
Err:4 https://download.docker.com/linux/debian trixie InRelease
  Certificate verification failed: The certificate is NOT trusted. The certificate issuer is unknown.  Could not handshake: Error in the certificate verification. [IP: 203.0.113.9 443]
E: The repository 'https://download.docker.com/linux/debian trixie InRelease' is not signed.
"""
DOCKER_PULL = """\
Step 1/14 : ARG BASE_IMAGE=python:3.12-slim-bookworm
Step 2/14 : FROM ${BASE_IMAGE}
Get "https://registry-1.docker.io/v2/": tls: failed to verify certificate: x509: certificate signed by unknown authority
"""
DOCKER_REFUSED = """\
Step 2/14 : FROM ${BASE_IMAGE}
Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp 203.0.113.5:443: connect: connection refused
"""
# BuildKit's plain progress (docker 20.10): step 5 warns and passes, step 8 fails; its lines interleave.
BUILDKIT_UV = """\
#5 [stage-0 3/9] RUN set -eu; apt-get update; apt-get install -y --no-install-recommends curl
#5 sha256:386c82e382b18edb836f5388173894cb378caf5d0d91dd7fece70b4f2b8ae3eb
#5 1.012 W: Failed to fetch http://deb.debian.org/debian/dists/trixie/InRelease  Temporary failure resolving 'deb.debian.org'
#8 [stage-0 6/9] RUN --mount=type=cache,id=dropship-uv,target=/var/cache/uv set -eu; uv pip install "apache-airflow[postgres,fab,celery]==0.0.1"
#8 sha256:1d8925fa357c29193a6e4250ba80eb4c1dafee79acc75cf034a5c0bca1ab780f
#5 DONE 3.1s
#8 0.536 Using Python 3.13.5 environment at: /opt/airflow-venv
#8 0.588 error: No solution found when resolving dependencies
#8 0.589   cause: Because there is no version of apache-airflow[postgres]==0.0.1 and you require apache-airflow[postgres]==0.0.1, we can conclude that your requirements are unsatisfiable.
#8 ERROR: executor failed running [/bin/sh -c set -eu; uv pip install "apache-airflow[postgres,fab,celery]==${AIRFLOW_VERSION}"]: exit code: 1
------
 > [stage-0 6/9] RUN --mount=type=cache,id=dropship-uv,target=/var/cache/uv set -eu; uv pip install "apache-airflow[postgres,fab,celery]==0.0.1":
------
executor failed running [/bin/sh -c set -eu; uv pip install "apache-airflow[postgres,fab,celery]==${AIRFLOW_VERSION}"]: exit code: 1
"""
# buildx: uv behind a TLS-inspecting proxy without its CA.
BUILDX_CERT = """\
#9 [5/9] RUN --mount=type=cache,id=dropship-uv,target=/var/cache/uv set -eu; uv pip install x
#9 1.204 error: Request failed after 3 retries
#9 1.204   Caused by: Failed to fetch: `https://pypi.org/simple/apache-airflow/`
#9 1.204   Caused by: invalid peer certificate: UnknownIssuer
#9 ERROR: process "/bin/sh -c set -eu; uv pip install x" did not complete successfully: exit code: 2
------
 > [5/9] RUN --mount=type=cache,id=dropship-uv,target=/var/cache/uv set -eu; uv pip install x:
1.204   Caused by: invalid peer certificate: UnknownIssuer
------
ERROR: failed to solve: process "/bin/sh -c set -eu; uv pip install x" did not complete successfully: exit code: 2
"""
DEBOOTSTRAP = """\
I: Target architecture can be executed
I: Retrieving InRelease
I: Retrieving Release
E: Failed getting release file http://deb.debian.org/debian/dists/trixie/Release
"""


@pytest.mark.parametrize("log, kind, evidence", [
    (PIP_CERT, CERTIFICATE, "CERTIFICATE_VERIFY_FAILED"),
    (PIP_ISSUER, CERTIFICATE, "unable to get local issuer certificate"),
    (APT_HTTPS, CERTIFICATE, "Certificate verification failed: The certificate is NOT trusted"),
    (DOCKER_PULL, CERTIFICATE, "x509: certificate signed by unknown authority"),
    (PIP_DNS, NETWORK, "Temporary failure in name resolution"),
    (APT_DNS, NETWORK, "Temporary failure resolving 'deb.debian.org'"),
    (DOCKER_REFUSED, NETWORK, "connection refused"),
    (DEBOOTSTRAP, NETWORK, "Failed getting release file"),
    (PIP_CONFLICT, DEPENDENCIES, "conflicting dependencies"),
    (PIP_MISSING, DEPENDENCIES, "apache-airflow==0.0.1"),
    (BUILDKIT_UV, DEPENDENCIES, "no version of apache-airflow[postgres]==0.0.1"),
    (BUILDX_CERT, CERTIFICATE, "invalid peer certificate: UnknownIssuer"),
])
def test_cause_is_found_in_the_log(log, kind, evidence):
    cause = build_failure_cause(log)
    assert cause is not None and cause.kind == kind
    assert evidence in cause.evidence and "\n" not in cause.evidence and "\x1b" not in cause.evidence


def test_nothing_known_is_no_cause():
    assert build_failure_cause("Step 3/9 : RUN make\nmake: *** [all] Error 2\n") is None
    assert build_failure_cause("") is None


def test_only_the_failing_step_counts():
    """A timed-out retry in a step that passed is no cause: the conflict in the failing step is."""
    assert "Read timed out" in PIP_CONFLICT
    assert build_failure_cause(PIP_CONFLICT).kind == DEPENDENCIES


def test_only_the_failing_step_counts_with_buildkit():
    """The DNS failure of step 5 (which passed) is no cause; the failing step's lines are read."""
    assert failing_step(BUILDKIT_UV) == (
        "Using Python 3.13.5 environment at: /opt/airflow-venv\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because there is no version of apache-airflow[postgres]==0.0.1 and you require "
        "apache-airflow[postgres]==0.0.1, we can conclude that your requirements are unsatisfiable.\n"
        "ERROR: exit code: 1")
    assert failing_step(BUILDX_CERT).endswith("invalid peer certificate: UnknownIssuer\nERROR: exit code: 2")
    assert failing_step(PIP_CONFLICT).startswith(PIP_STEP.splitlines()[0])
    assert failing_step(DEBOOTSTRAP) == DEBOOTSTRAP


def test_summary_of_a_buildkit_failure_is_its_failing_steps_last_lines():
    message, _ = failure_message("building X", BUILDKIT_UV.replace("unsatisfiable", "odd"), "/l.log", "", FIXES, 1)
    assert message == ("building X failed (1): Using Python 3.13.5 environment at: /opt/airflow-venv | "
                       "error: No solution found when resolving dependencies | cause: Because there is no version "
                       "of apache-airflow[postgres]==0.0.1 and you require apache-airflow[postgres]==0.0.1, we can "
                       "conclude that your requirements are odd. | ERROR: exit code: 1")


def test_evidence_is_shortened_around_the_match():
    line = "x" * 300 + "CERTIFICATE_VERIFY_FAILED" + "y" * 300
    short = shorten_around(line, 300, width=100)
    assert "CERTIFICATE_VERIFY_FAILED" in short and short.startswith("…") and short.endswith("…")
    assert len(short) == 102
    assert shorten_around("short", 0) == "short"


FIXES = {CERTIFICATE: "trust the proxy", NETWORK: "check the network", DEPENDENCIES: "fix the pins"}


def test_failure_message_says_the_cause_first_then_the_log():
    message, fix = failure_message("building the Airflow image dropship/airflow:3.3.2-abc", PIP_CERT,
                                   "/logs/build.log", files_note(2, "the controller's"), FIXES, 1)
    assert message == (
        "building the Airflow image dropship/airflow:3.3.2-abc failed: certificate verification failed "
        "(a TLS-inspecting proxy? the controller's CA certificates were given to the build: 2 files): "
        "…tatus=None)) after connection broken by 'SSLError(SSLCertVerificationError(1, '[SSL: "
        "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate chain "
        "(_ssl.c:1028)'))…; see /logs/build.log")
    assert fix == "trust the proxy"
    message, fix = failure_message("debootstrap trixie", DEBOOTSTRAP, "/logs/d.log", "", FIXES, 1)
    assert message.startswith("debootstrap trixie failed: network failure (the build could not reach a package "
                              "server): E: Failed getting release file") and fix == "check the network"
    assert files_note(1, "the environment's").endswith("given to the build: 1 file")


def test_unknown_failure_keeps_the_last_lines_and_points_at_the_log():
    message, fix = failure_message("building X", "Step 3/9 : RUN make\nmake: *** [all] Error 2\n",
                                   "/logs/b.log", "", FIXES, 2)
    assert message == "building X failed (2): Step 3/9 : RUN make | make: *** [all] Error 2"
    assert fix == "see /logs/b.log"
    message, _ = failure_message("", "", "/logs/b.log", "", FIXES)
    assert message == "no output"


# ---- the CA certificates a build here gets ------------------------------------------------------------

def pem(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    return path


def test_controller_cas_are_added_to_the_environments(tmp_path):
    here = [pem(tmp_path / "controller" / "proxy.crt", "P"), pem(tmp_path / "controller" / "corp.crt", "C")]
    listed = pem(tmp_path / "repo" / "corp.crt", "C")               # corp.crt's content, listed by the inventory
    own = pem(tmp_path / "repo" / "own.crt", "O")
    assert ai.with_controller_cas((), here) == tuple(here)           # a DigitalOcean env lists none by default
    assert ai.with_controller_cas((own,), here) == (own, *here)
    assert ai.with_controller_cas((listed,), here) == (listed, here[0])   # same content: not twice
    # a local env's default list is this machine's: nothing added, so its tag stays what it was
    assert ai.with_controller_cas(tuple(here), here) == tuple(here)


def env_with(where: str, cas=(), base: str = LOCAL_PYTHON_BASE):
    settings = AirflowSettings(version="3.3.2", image=None, build=AirflowBuild(AIRFLOW_SRC, base, where),
                               dags=AIRFLOW_SRC / "dags")
    return SimpleNamespace(name="prod", settings=SimpleNamespace(airflow=settings), ca_certificates=tuple(cas))


def test_builds_here_get_the_controllers_cas_whatever_the_provider(tmp_path, monkeypatch):
    here = (pem(tmp_path / "proxy.crt", "P"),)
    monkeypatch.setattr(ai, "controller_ca_files", lambda: here)
    monkeypatch.setattr(ai, "image_id", lambda ref: BASE_ID)
    remote = env_with("local")                                      # e.g. DigitalOcean: no CAs listed
    local = env_with("local", here)                                  # the local provider's default
    assert ai.build_ca_files(remote) == here
    assert ai.planned_tag(remote) == ai.planned_tag(local) == ai.image_tag(remote.settings.airflow, here, BASE_ID)
    assert ai.planned_tag(remote) != ai.image_tag(remote.settings.airflow, (), BASE_ID)


def test_host_builds_get_only_the_environments_cas(tmp_path, monkeypatch):
    monkeypatch.setattr(ai, "controller_ca_files", lambda: (pem(tmp_path / "proxy.crt", "P"),))
    env = env_with("host", base="python:3.12-slim-bookworm")
    plan = ai.plan_host_build(env)
    assert plan.tag == ai.image_tag(env.settings.airflow, (), "") == ai.planned_tag(env)
    assert plan.ca_count == 0 and plan.source == AIRFLOW_SRC


# ---- the host build's error -----------------------------------------------------------------------------

class FailingHost:
    user, name = "deploy", "web-1"
    target = SimpleNamespace(address="203.0.113.7")

    def __init__(self, output: str):
        self.output = output

    def run(self, command, timeout=None):
        return Result(0 if "python:3.12" in command else 1, "", "")

    def send_stream(self, command, chunks, timeout=None):
        b"".join(chunks)
        return Result(0, "", "")

    def script(self, text, timeout=None, on_line=None):
        return Result(1, self.output, "")


def test_failed_host_build_names_the_certificate_cause_and_the_fix(tmp_path):
    env = env_with("host", (pem(tmp_path / "corp.crt", "C"),), base="python:3.12-slim-bookworm")
    plan = ai.plan_host_build(env)
    with pytest.raises(RemoteError) as info:
        ih.build_on_host(FailingHost(PIP_CERT), plan)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"web-1: docker build {plan.tag}: certificate verification failed (a TLS-inspecting "
                           "proxy? the environment's CA certificates were given to the build: 1 file): ")
    assert re.search(r"; see /var/tmp/dropship-airflow-build-[0-9a-f]{12}\.log on the host \(fix: list the "
                     r"proxy's root CA under the environment's ca_certificates in the inventory, then deploy "
                     r"again\)$", text), text


def test_failed_host_build_names_the_network_cause():
    plan = ai.plan_host_build(env_with("host", base="python:3.12-slim-bookworm"))
    with pytest.raises(RemoteError) as info:
        ih.build_on_host(FailingHost(APT_DNS), plan)
    assert ": network failure (the build could not reach a package server): " in str(info.value)
    assert "check that the host reaches the package servers" in info.value.fix


# ---- the ticker -----------------------------------------------------------------------------------------

def wait_for(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_ticker_says_what_it_builds_how_long_and_the_logs_last_line(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("Step 9/14 : RUN pip install\n ---> Running in 4b1d\n\x1b[91mCollecting apache-airflow==3.3.2\n"
                   "Removing intermediate container 4b1d\n\n")
    out, clock = io.StringIO(), itertools.count(0, 10).__next__      # every look at the clock: 10 s later
    with ticker("dropship/airflow:3.3.2-abc123", log, stream=out, interval=0.01, clock=clock):
        wait_for(lambda: out.getvalue().count("\n") >= 3)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"building dropship/airflow:3.3.2-abc123 (log: {log})"
    assert re.fullmatch(r"  … \d+0s: Collecting apache-airflow==3\.3\.2", lines[1])
    assert re.fullmatch(r"built dropship/airflow:3\.3\.2-abc123 in \d+0s", lines[-1])
    assert all(ln.startswith("  … ") for ln in lines[1:-1])


def test_ticker_of_a_failed_build_leaves_the_end_to_the_error(tmp_path):
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with ticker("x", tmp_path / "missing.log", stream=out, interval=0.01):
            wait_for(lambda: "…" in out.getvalue())
            raise RuntimeError("failed")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("building x (log: ") and not lines[-1].startswith("built")
    assert re.fullmatch(r"  … \d+s", lines[1])                       # no log yet: only the time


def test_last_log_line_is_shortened(tmp_path):
    log = tmp_path / "b.log"
    log.write_text("Step 1/2 : FROM x\nDownloading " + "a" * 300 + "\r  Progress 50%\n")
    assert last_log_line(log) == "Progress 50%"
    log.write_text("Downloading " + "a" * 300 + "\n")
    assert last_log_line(log, width=40) == "Downloading " + "a" * 28 + "…"
    assert last_log_line(tmp_path / "none.log") == ""


def test_failed_droplet_image_build_names_the_cause(tmp_path, monkeypatch):
    from provision.errors import ProviderError
    from provision.providers import local_image

    log = tmp_path / "droplet.log"
    log.write_text("I: Retrieving Release\nI: Base system installed successfully.\n")   # debootstrap's, before

    def docker_build(argv, input, stdout, stderr, timeout):
        assert argv[:2] == ["docker", "build"] and input.startswith(b"Dockerfile")
        stdout.write(APT_DNS.encode())
        return SimpleNamespace(returncode=1)

    monkeypatch.setattr(local_image.subprocess, "run", docker_build)
    with pytest.raises(ProviderError) as info:
        local_image._build("dropship/droplet:trixie-abc", "FROM x\n", {}, 60, log)
    assert str(info.value).startswith("building the local droplet image dropship/droplet:trixie-abc failed: "
                                      "network failure (the build could not reach a package server): ")
    assert f"; see {log} (fix: check that this machine reaches http://deb.debian.org/debian" in str(info.value)
    assert log.read_text().startswith("I: Retrieving Release\n")                # appended to, not replaced
