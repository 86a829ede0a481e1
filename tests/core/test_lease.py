"""One driver per run or sweep in storage: the lease object, on a real folder (the S3 form is in
tests/distributed/test_writers.py)."""
import json
import subprocess
import sys
import time

import pytest

from cyclegan.core.checkpoint import RunInUse
from cyclegan.core.lease import LEASE_FILE, Lease
from cyclegan.core.storage import Storage

from tests.helpers.processes import wait_for


def held_by(folder, **holder):
    (folder / LEASE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / LEASE_FILE).write_text(json.dumps({"holder": "someone-else", "since": "then", **holder}))


def test_a_second_driver_is_refused_naming_the_run_and_the_holder_until_the_first_lets_go(tmp_path):
    store, run = Storage.from_options(), str(tmp_path / "run")
    with Lease(store, run, "run", retry="give another --name"):
        with pytest.raises(RunInUse) as refused:
            Lease(store, run, "run", retry="give another --name").acquire()
        held = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
    assert str(refused.value).startswith(f"name: the run {run} is being written by another driver (pid "
                                         f"{held['pid']} on {held['host']}, since {held['since']}")
    assert str(refused.value).endswith("give another --name")
    assert not (tmp_path / "run" / LEASE_FILE).exists()  # let go at the end
    with Lease(store, run):
        pass


def test_a_killed_drivers_lease_on_this_host_is_taken_over_at_once(tmp_path):
    import socket
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held_by(tmp_path / "run", host=socket.gethostname(), pid=int(gone.stdout), expires=time.time() + 3600)
    with Lease(Storage.from_options(), str(tmp_path / "run")) as lease:
        assert json.loads((tmp_path / "run" / LEASE_FILE).read_text())["holder"] == lease.me["holder"]


def test_another_machines_lease_holds_until_it_expires(tmp_path):
    store, run = Storage.from_options(), str(tmp_path / "run")
    held_by(tmp_path / "run", host="node-that-vanished", pid=1, expires=time.time() + 600)
    with pytest.raises(RunInUse, match=r"pid 1 on node-that-vanished, since then; its lease ends in (599|600) s"):
        Lease(store, run).acquire()
    held_by(tmp_path / "run", host="node-that-vanished", pid=1, expires=time.time() - 1)
    with Lease(store, run) as lease:
        assert json.loads((tmp_path / "run" / LEASE_FILE).read_text())["host"] == lease.me["host"]


def test_a_live_process_on_this_host_keeps_its_lease_and_a_torn_file_holds_nothing(tmp_path):
    import os
    import socket
    store, run = Storage.from_options(), str(tmp_path / "run")
    held_by(tmp_path / "run", host=socket.gethostname(), pid=os.getpid(), expires=time.time() + 60)
    with pytest.raises(RunInUse):
        Lease(store, run).acquire()
    (tmp_path / "run" / LEASE_FILE).write_text('{"holder": "x", "pi')
    with Lease(store, run):
        pass


def test_the_holder_renews_its_lease_before_it_expires(tmp_path):
    store, run = Storage.from_options(), str(tmp_path / "run")
    with Lease(store, run, seconds=2) as lease:
        first = json.loads((tmp_path / "run" / LEASE_FILE).read_text())["expires"]
        wait_for(lambda: json.loads((tmp_path / "run" / LEASE_FILE).read_text())["expires"] > first, 10,
                 "the lease to be renewed")
        with pytest.raises(RunInUse):  # still held after its first term
            wait_for(lambda: time.time() > first + 0.5, 10, "the first term to end")
            Lease(store, run).acquire()
        assert lease.thread.is_alive()


def race(store, run, drivers=6):
    """``drivers`` threads take the same lease at the same instant; those that got it."""
    import threading
    start, won, lock = threading.Barrier(drivers), [], threading.Lock()
    leases = [Lease(store, run) for _ in range(drivers)]

    def take(lease):
        start.wait()
        try:
            lease.acquire()
        except RunInUse:
            return
        with lock:
            won.append(lease)
    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lease in won:
        lease.release()
    return won


def test_of_drivers_starting_in_the_same_instant_exactly_one_holds_the_run(tmp_path):
    store = Storage.from_options()
    assert len(race(store, str(tmp_path / "run"))) == 1
    import socket
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held_by(tmp_path / "run", host=socket.gethostname(), pid=int(gone.stdout), expires=time.time() + 3600)
    assert len(race(store, str(tmp_path / "run"))) == 1  # and of those taking over a dead driver's
