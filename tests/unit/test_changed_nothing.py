"""A host's error when a check of every host stopped a command before any change (pure)."""
from provision.errors import RemoteError, changed_nothing


def test_said_before_the_fix_or_at_the_end():
    error = str(RemoteError("web-2", "connect", "unreachable at 10.0.0.2:22 (timed out)", "start it"))
    assert changed_nothing(error, "deploy") == \
        "web-2: connect: unreachable at 10.0.0.2:22 (timed out); deploy changed nothing (fix: start it)"
    assert changed_nothing("web-2: rollback: gone", "rollback") == "web-2: rollback: gone; rollback changed nothing"
