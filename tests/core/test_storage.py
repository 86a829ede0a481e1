"""Local files written whole or not at all: what a killed writer leaves is found and removed."""
import subprocess
import sys
import threading

from cyclegan.core.storage import Storage


def test_a_killed_writers_unfinished_files_go_and_a_live_ones_stay_until_it_is_stopped(tmp_path):
    store = Storage.from_options()
    store.write_bytes(str(tmp_path / "out" / "a.png"), b"whole")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "out" / f"b.png.{int(gone.stdout)}.part").write_bytes(b"half")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = tmp_path / "out" / "sub" / f"c.png.{writer.pid}.part"
        live.parent.mkdir()
        live.write_bytes(b"being written")
        assert store.remove_stale_parts(str(tmp_path / "out")) == 1  # the dead writer's only
        assert live.exists()
        # A killed job's worker that Ray stops while this one waits: its file goes once it has.
        stop = threading.Timer(0.5, writer.kill)
        stop.start()
        assert store.remove_stale_parts(str(tmp_path / "out"), wait_s=120) == 1
        stop.join()
    finally:
        writer.kill()
        writer.wait()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["a.png"]
    assert (tmp_path / "out" / "a.png").read_bytes() == b"whole"
