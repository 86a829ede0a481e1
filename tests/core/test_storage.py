"""Local files written whole or not at all: what a killed writer leaves is found and removed."""
import subprocess
import sys
import threading

from cyclegan.core.storage import Storage


def gone_pid() -> int:
    """The pid of a process that has ended."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(gone.stdout)


def test_a_killed_writers_unfinished_files_go_and_a_live_ones_stay_until_it_is_stopped(tmp_path):
    store = Storage.from_options()
    store.write_bytes(str(tmp_path / "out" / "a.png"), b"whole")
    (tmp_path / "out" / f"b.png.{gone_pid()}.part").write_bytes(b"half")
    names = {"a.png", "b.png", "sub/c.png"}
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = tmp_path / "out" / "sub" / f"c.png.{writer.pid}.part"
        live.parent.mkdir()
        live.write_bytes(b"being written")
        assert store.remove_stale_parts(str(tmp_path / "out"), names) == 1  # the dead writer's only
        assert live.exists()
        # A killed job's worker that Ray stops while this one waits: its file goes once it has.
        stop = threading.Timer(0.5, writer.kill)
        stop.start()
        assert store.remove_stale_parts(str(tmp_path / "out"), names, wait_s=120) == 1
        stop.join()
    finally:
        writer.kill()
        writer.wait()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["a.png"]
    assert (tmp_path / "out" / "a.png").read_bytes() == b"whole"


def test_only_the_named_files_unfinished_parts_go(tmp_path):
    """A file that only looks like a dead writer's (``notes.<pid>.part``, ``c.png.<pid>.part`` of a file
    that is not among the names asked about) is the user's: it stays."""
    pid = gone_pid()
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for name in ("a.png", "notes", "sub/c.png", "b.png"):
        (out / f"{name}.{pid}.part").write_bytes(b"x")
    assert Storage.from_options().remove_stale_parts(str(out), {"a.png", "sub/c.png", "notes.png"}) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.part")) == [f"b.png.{pid}.part",
                                                                                 f"notes.{pid}.part"]
