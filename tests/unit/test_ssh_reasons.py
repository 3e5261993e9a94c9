"""Why a host could not be logged in to, in a few words (the transport's connect errors)."""
from __future__ import annotations

import socket

import paramiko

from provision.transport.ssh import _reason


def test_refused_and_timed_out_connections():
    refused = paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): ConnectionRefusedError()})
    assert _reason(refused) == "connection refused"
    assert _reason(socket.timeout()) == "timed out"


def test_a_host_that_takes_the_connection_and_says_nothing():
    # paramiko's words when no banner came in time, or when its transport had ended by then
    for said in ("Error reading SSH protocol banner", "No existing session"):
        assert _reason(paramiko.SSHException(said)) == "connected, but sshd did not answer"


def test_anything_else_is_its_first_line():
    assert _reason(paramiko.SSHException("Incompatible ssh peer\nmore")) == "Incompatible ssh peer"
    assert _reason(OSError()) == "OSError"
