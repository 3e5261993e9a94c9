"""A tar of an app's shared folders for the scheduled backup, with each SQLite database in it as a
consistent copy (SQLite's online backup, so a write during the backup cannot tear it, WAL or not).

Standard-library only: hosts run this very file, as the app's user (``python3 files_archive.py
FOLDER`` writes the tar to stdout), so opening a database creates no file the app could not write.
A file that changes while it is read is read again; one that keeps changing fails the run.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile

HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")        # a database's own: its copy holds what they hold
TRIES = 3


def is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(HEADER)) == HEADER
    except OSError:
        return False


def snapshot(database: str, to: str) -> None:
    """A consistent copy of the SQLite database at ``database`` in ``to``, read only."""
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)
    target = sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def steady_copy(path: str, to: str) -> bool:
    """Copy the file at ``path`` to ``to`` unchanged while it was read (same size and mtime before and
    after), trying ``TRIES`` times; False when it is gone."""
    for _ in range(TRIES):
        try:
            before = os.stat(path)
            shutil.copyfile(path, to)
            after = os.stat(path)
        except FileNotFoundError:
            return False
        if before.st_mtime_ns == after.st_mtime_ns and before.st_size == after.st_size == os.path.getsize(to):
            return True
    raise OSError(f"{path} kept changing while it was read ({TRIES} tries)")


def _add(tar: tarfile.TarFile, path: str, name: str, scratch: str) -> bool:
    """Add ``path`` as ``name``; False when it was removed while the backup ran (not part of it)."""
    try:
        info = tar.gettarinfo(path, arcname=name)
    except FileNotFoundError:
        return False
    if info is None:
        return False                                # a socket: nothing to keep (tar skips them too)
    if not info.isfile():
        tar.addfile(info)                           # a folder, a link: as it is
        return True
    copy = os.path.join(scratch, "copy")
    if is_sqlite(path):
        snapshot(path, copy)
    elif not steady_copy(path, copy):
        return False
    info.size = os.path.getsize(copy)
    with open(copy, "rb") as fh:
        tar.addfile(info, fh)
    os.unlink(copy)
    return True


def archive(folder: str, out) -> list[str]:
    """Write the tar of ``folder`` (names relative to it) to the binary stream ``out``; returns its names.
    Links are kept as links; a database's -wal/-shm/-journal files are left out (its copy holds them)."""
    names: list[str] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar, \
            tempfile.TemporaryDirectory(prefix="dropship-files-") as scratch:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            here = os.path.relpath(root, folder)
            chosen = [(root, here)] if here != "." else []          # the folder itself, then what is in it
            for entry in sorted(dirs + files):
                path = os.path.join(root, entry)
                if entry in dirs and not os.path.islink(path):
                    continue                                        # added when walked
                if not (entry.endswith(SIDE_FILES) and is_sqlite(path[:path.rindex("-")])):
                    chosen.append((path, os.path.normpath(os.path.join(here, entry))))
            names += [name for path, name in chosen if _add(tar, path, name, scratch)]
    return names


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: python3 files_archive.py FOLDER > archive.tar")
    archive(sys.argv[1], sys.stdout.buffer)
