"""The shared folders' archive the scheduled backup takes: the file hosts run, with real SQLite
databases written while it reads them."""
import io
import os
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from provision import files_archive as fa

SCRIPT = Path(fa.__file__)


def make(folder: Path) -> None:
    (folder / "instance").mkdir(parents=True)
    (folder / "media" / "uploads").mkdir(parents=True)
    (folder / "media" / "uploads" / "cat's photo; $(x).txt").write_text("meow")
    (folder / "media" / "empty").mkdir()
    os.symlink("media/uploads", folder / "latest")


def test_the_archive_holds_the_folder_as_it_is_links_and_empty_folders_too(tmp_path):
    make(tmp_path / "data")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "data" / "media" / "app.sock"))          # a socket is left out, as tar does
    out = io.BytesIO()
    names = fa.archive(str(tmp_path / "data"), out)
    assert names == ["latest", "instance", "media", "media/empty", "media/uploads",
                     "media/uploads/cat's photo; $(x).txt"]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getmember("latest").issym() and tar.getmember("latest").linkname == "media/uploads"
        assert tar.extractfile("media/uploads/cat's photo; $(x).txt").read() == b"meow"
        assert tar.getmember("media/empty").isdir()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_database_written_during_the_backup_is_archived_whole(tmp_path, journal):
    """A writer commits rows in pairs all along; every copy holds whole pairs, and its -wal/-shm stay out."""
    make(tmp_path / "data")
    path = tmp_path / "data" / "instance" / "notes.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal}")
    db.execute("CREATE TABLE note (body TEXT)")
    db.commit()
    stop = threading.Event()

    def write() -> None:
        con = sqlite3.connect(path, timeout=30)
        n = 0
        while not stop.is_set():
            con.executemany("INSERT INTO note VALUES (?)", [(f"a{n}",), (f"b{n}",)])
            con.commit()
            n += 1
        con.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copies = []
        for i in range(5):
            out = tmp_path / f"out{i}.tar"
            with open(out, "wb") as fh:
                subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "data")], stdout=fh, check=True,
                               timeout=120)
            copies.append(out)
    finally:
        stop.set()
        writer.join()
    counts = []
    for i, out in enumerate(copies):
        with tarfile.open(out) as tar:
            assert not [n for n in tar.getnames() if n.endswith(("-wal", "-shm", "-journal"))]
            (tmp_path / f"copy{i}.sqlite").write_bytes(tar.extractfile("instance/notes.sqlite").read())
        copy = sqlite3.connect(tmp_path / f"copy{i}.sqlite")
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count = copy.execute("SELECT count(*) FROM note").fetchone()[0]
        assert count % 2 == 0
        counts.append(count)
    assert counts[-1] > 0


def test_a_file_that_keeps_changing_fails_the_run_and_a_removed_one_is_left_out(tmp_path, monkeypatch):
    make(tmp_path / "data")
    real = fa.shutil.copyfile

    def append_while_copying(src, dst):
        real(src, dst)
        with open(src, "a") as fh:
            fh.write("more")
        os.utime(src, ns=(1, os.stat(src).st_mtime_ns + 1000))

    monkeypatch.setattr(fa.shutil, "copyfile", append_while_copying)
    with pytest.raises(OSError, match="kept changing while it was read"):
        fa.archive(str(tmp_path / "data"), io.BytesIO())

    def remove_first(src, dst):
        os.unlink(src)
        raise FileNotFoundError(src)

    monkeypatch.setattr(fa.shutil, "copyfile", remove_first)
    out = io.BytesIO()
    assert "media/uploads/cat's photo; $(x).txt" not in fa.archive(str(tmp_path / "data"), out)


def test_the_script_refuses_anything_but_one_folder(tmp_path):
    ran = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope")], capture_output=True, text=True)
    assert ran.returncode == 1 and "usage: python3 files_archive.py FOLDER" in ran.stderr
