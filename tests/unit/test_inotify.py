"""The inotify diagnosis of a local droplet that stopped while booting: the room measured on this
machine, and the sentence by exact string."""
from provision.providers import inotify


def test_headroom_opens_counts_and_closes():
    before = inotify.headroom(50)
    assert before is not None and 0 < before <= 50      # the suite runs as root, as local droplets do
    assert inotify.headroom(50) == before               # nothing left open
    assert inotify.headroom(3) == min(3, before)


def test_shortage_sentence():
    assert inotify.shortage(12, 128) is None
    assert inotify.shortage(None, 128) is None
    assert inotify.shortage(3, None) is None
    assert inotify.shortage(3, 128) == (
        "this machine's inotify instances are used up (room for 3 more; fs.inotify.max_user_instances=128, and "
        "every local droplet's systemd takes several)")
    assert inotify.fix() == ("raise the limit: `sysctl -w fs.inotify.max_user_instances=1024` (scripts/setup.sh "
                             "does), then run again")
