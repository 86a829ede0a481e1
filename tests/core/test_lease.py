"""One driver per run or sweep in storage: the lease object, on a real folder and on the loopback S3 server
(more of the S3 form is in tests/distributed/test_writers.py). Periods are a second or less, so waiting
one out is quick; another machine's driver is a Lease that says it is on another host."""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cyclegan.core.checkpoint import RunInUse
from cyclegan.core.lease import LEASE_FILE, MAX_LEASE_BYTES, Lease, LeaseLost, this_process
from cyclegan.core.storage import Changed, Storage

from tests.helpers.processes import stop, wait_for

OTHER_HOST = {"host": "node-b", "boot": "0b0b0b0b-another-boot", "pidns": "pid:[4026539999]", "pid": 4242}


def here() -> dict:
    """What names this machine (and this container) in a lease."""
    mine = this_process()
    return {k: mine[k] for k in ("host", "boot", "pidns")}


def gone_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def record(**holder) -> bytes:
    """A lease as a driver writes it; another host's unless told otherwise."""
    return json.dumps({"holder": "someone-else", **OTHER_HOST, "since": "then", "seconds": 0.5, "renewal": 1,
                       **holder}).encode()


def held_by(folder, **holder):
    (folder / LEASE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / LEASE_FILE).write_bytes(record(**holder))


def stored(folder) -> dict:
    return json.loads((folder / LEASE_FILE).read_text())


class Driver(Lease):
    """A driver as another machine or container runs it: ``me`` overrides who it says it is, ``skew`` is how
    far its clock is off (it writes an ``expires`` by that clock, as drivers once did)."""

    def __init__(self, store, run, seconds=0.5, skew=None, **me):
        super().__init__(store, run, seconds=seconds)
        self.me.update(me)
        self.skew = skew

    def _record(self):
        held = super()._record()
        return held if self.skew is None else {**held, "expires": time.time() + self.skew + self.seconds}


def vanish(lease: Lease) -> None:
    """The holder's machine is gone: no more renewals, its lease left as it was."""
    lease.stopped.set()
    lease.thread.join()


def timed_acquire(lease: Lease) -> float:
    start = time.monotonic()
    lease.acquire()
    return time.monotonic() - start


def test_a_second_driver_is_refused_naming_the_run_and_the_holder_until_the_first_lets_go(tmp_path):
    store, run = Storage.from_options(), str(tmp_path / "run")
    with Lease(store, run, "run", retry="give another --name"):
        with pytest.raises(RunInUse) as refused:
            Lease(store, run, "run", retry="give another --name").acquire()
        held = stored(tmp_path / "run")
    assert str(refused.value) == (f"name: the run {run} is being written by another driver (pid {held['pid']} on "
                                  f"{held['host']}, since {held['since']}; it runs on this machine); give another --name")
    assert not (tmp_path / "run" / LEASE_FILE).exists()  # let go at the end
    with Lease(store, run):
        pass


def test_a_killed_drivers_lease_on_this_machine_is_taken_over_at_once(tmp_path):
    held_by(tmp_path / "run", **here(), pid=gone_pid(), seconds=60)
    lease = Lease(Storage.from_options(), str(tmp_path / "run"))
    assert timed_acquire(lease) < 30  # not its period
    try:
        assert stored(tmp_path / "run")["holder"] == lease.me["holder"]
    finally:
        lease.release()


def test_a_pid_reused_by_another_process_is_not_the_holder(tmp_path):
    # This test's own pid, alive, but started at another time than the holder's: a later process's.
    held_by(tmp_path / "run", **here(), pid=os.getpid(), started=1, seconds=60, expires=time.time() + 3600)
    with Lease(Storage.from_options(), str(tmp_path / "run")) as lease:
        assert stored(tmp_path / "run")["holder"] == lease.me["holder"]


def test_another_hosts_clock_is_not_trusted_its_lease_is_watched_on_this_ones(tmp_path):
    store, run = Storage.from_options(), str(tmp_path / "run")
    # A host whose clock runs an hour slow writes leases that "expired" long ago: alive, it keeps its run.
    slow = Driver(store, run, skew=-3600, **OTHER_HOST)
    slow.acquire()
    try:
        with pytest.raises(RunInUse, match="it renewed its lease while this driver waited, so it is alive"):
            Lease(store, run, seconds=0.5).acquire()
    finally:
        slow.release()
    # One an hour fast: its lease "ends" in an hour, yet once its host is gone it lapses after its period.
    fast = Driver(store, run, skew=3600, **OTHER_HOST)
    fast.acquire()
    vanish(fast)
    lease = Lease(store, run, seconds=0.5)
    waited = timed_acquire(lease)
    try:
        assert 0.5 <= waited < 10
        assert stored(tmp_path / "run")["holder"] == lease.me["holder"]
    finally:
        lease.release()


@pytest.mark.parametrize("differs", ["pidns", "boot"])
def test_a_holder_on_this_host_name_in_another_container_or_boot_is_not_judged_by_its_pid(tmp_path, differs):
    # Containers on the host's network share its name; their pids mean nothing in this pid namespace.
    store, run = Storage.from_options(), str(tmp_path / "run")
    other = Driver(store, run, **{**here(), "pid": gone_pid(), differs: OTHER_HOST[differs]})
    other.acquire()
    try:
        with pytest.raises(RunInUse, match=re.escape(f"pid {other.me['pid']} on {here()['host']}, since ")):
            Lease(store, run, seconds=0.5).acquire()
    finally:
        vanish(other)
    lease = Lease(store, run, seconds=0.5)
    assert timed_acquire(lease) >= 0.5  # not at once: its period waited out
    lease.release()


class LostReplies:
    """A real store whose next ``lose`` conditional writes land but report ``error``, as when a reply is lost
    on its way back (or the client retries a PUT that had landed and the retry finds it changed)."""

    def __init__(self, store: Storage, error: Exception):
        self.store, self.error, self.lose = store, error, 0

    def read_tagged(self, uri, **limit):
        return self.store.read_tagged(uri, **limit)

    def remove(self, uri):
        self.store.remove(uri)

    def write_if(self, uri, data, tag):
        tagged = self.store.write_if(uri, data, tag)
        if self.lose:
            self.lose -= 1
            raise self.error
        return tagged


def keeps_its_lease_through_lost_replies(store: Storage, run: str, error: Exception, seconds: float) -> None:
    lossy = LostReplies(store, error)
    with Lease(lossy, run, seconds=seconds) as lease:
        lossy.lose = 2
        wait_for(lambda: not lossy.lose, 10 * seconds, "two renewals whose replies are lost")
        landed = lease.renewal
        wait_for(lambda: json.loads(store.read_tagged(f"{run}/{LEASE_FILE}")[0])["renewal"] > landed + 1,
                 10 * seconds, "renewals after them")
        assert not lease.lost.is_set() and lease.thread.is_alive()
        with pytest.raises(RunInUse):
            Lease(store, run, seconds=seconds).acquire()
    assert not lease.lost.is_set()


@pytest.mark.parametrize("error", [Changed("lease"), OSError("connection reset by peer")], ids=["changed", "reset"])
def test_a_renewal_that_landed_though_its_reply_was_lost_keeps_the_lease(tmp_path, error):
    keeps_its_lease_through_lost_replies(Storage.from_options(), str(tmp_path / "run"), error, seconds=1)


def test_in_a_bucket_lost_replies_keep_the_lease_and_a_vanished_hosts_lease_is_waited_out(s3, caplog):
    s3.mkdir("lapses")
    store, run = Storage.from_options(), "s3://lapses/run"
    keeps_its_lease_through_lost_replies(store, run, Changed("lease"), seconds=2)
    # A RayJob's retry on a new cluster, moments after its head was lost: it waits, then takes over.
    s3.pipe(f"lapses/run/{LEASE_FILE}", record(seconds=1))
    lease = Lease(store, run, seconds=120)
    with caplog.at_level(logging.INFO, logger="cyclegan"):
        waited = timed_acquire(lease)
    try:
        assert 1 <= waited < 30
        assert json.loads(s3.cat(f"lapses/run/{LEASE_FILE}"))["holder"] == lease.me["holder"]
        waits = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
        assert len(waits) == 1 and "held by pid 4242 on node-b, since then" in waits[0], waits
    finally:
        lease.release()


@pytest.mark.parametrize("size", [0, 1 << 20], ids=["empty", "huge"])
def test_in_a_bucket_a_lease_object_is_read_no_further_than_a_lease_can_be(s3, size):
    bucket = f"bounded-{size}"
    s3.mkdir(bucket)
    s3.pipe(f"{bucket}/run/{LEASE_FILE}", b"x" * size)
    lease = Lease(Storage.from_options(), f"s3://{bucket}/run", seconds=0.5)
    assert len(lease.holder()[2]) == min(size, MAX_LEASE_BYTES + 1)
    assert timed_acquire(lease) >= 0.5  # an unknown writer's: waited out, then taken over
    try:
        assert json.loads(s3.cat(f"{bucket}/run/{LEASE_FILE}"))["holder"] == lease.me["holder"]
    finally:
        lease.release()


DRIVER = """
import itertools, signal, sys
if sys.argv[2] == "flag":  # Ctrl-C only noted, as the handler an earlier Tune run leaves does
    signal.signal(signal.SIGINT, lambda *_: print("interrupt noted", file=sys.stderr))
from cyclegan.core.errors import UserError
from cyclegan.core.lease import Lease
from cyclegan.core.storage import Storage
run = sys.argv[1]
store = Storage.from_options()
try:
    with Lease(store, run, seconds=1):
        for step in itertools.count():  # a run's driver: writing checkpoints until it is stopped
            store.write_text(f"{run}/checkpoint", str(step))
except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def steps(folder) -> int:
    try:
        return int((folder / "checkpoint").read_text())
    except (FileNotFoundError, ValueError):
        return -1


@pytest.mark.parametrize("interrupt", ["plain", "flag"])
def test_a_driver_whose_lease_is_taken_stops_at_once_with_one_error_line_leaving_the_lease_to_the_taker(
        tmp_path, interrupt):
    """With a Ctrl-C handler that only takes note, the interrupt stops nothing: the process ends by itself
    within the rest of the period, the same error its last line."""
    store, run = Storage.from_options(), str(tmp_path / "run")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, run, interrupt], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: steps(tmp_path / "run") > 3, 60, "the driver to write checkpoints")
        # Another driver takes the lease (as one that judged this one gone would), a conditional write.
        tag = store.read_tagged(f"{run}/{LEASE_FILE}")[1]
        store.write_if(f"{run}/{LEASE_FILE}", record(since="2026-12-04 09:00:00"), tag)
        _, err = driver.communicate(timeout=30)  # it ends by itself
    finally:
        stop(driver)
    assert driver.returncode == 2, err
    message = (f"the run {run}: it was taken over by another driver (pid 4242 on node-b, since 2026-12-04 "
               f"09:00:00); this driver stopped before writing more")
    # Interrupted, the driver says it as its error; otherwise the lease logs it as the process ends.
    assert err.strip().splitlines() == ([f"error: {message}"] if interrupt == "plain" else ["interrupt noted", message])
    assert stored(tmp_path / "run")["holder"] == "someone-else"  # neither removed nor overwritten


class Unreachable:
    """A real store that stops answering writes once ``down`` is set."""

    def __init__(self, store: Storage):
        self.store, self.down = store, False

    def read_tagged(self, uri, **limit):
        return self.store.read_tagged(uri, **limit)

    def remove(self, uri):
        self.store.remove(uri)

    def write_if(self, uri, data, tag):
        if self.down:
            raise OSError("connection timed out")
        return self.store.write_if(uri, data, tag)


@pytest.fixture
def plain_interrupts():
    """Ctrl-C as a fresh process has it: an in-process Tune run earlier in the suite leaves its own handler."""
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, earlier)


def test_a_holder_that_cannot_renew_stops_its_driver_before_another_may_take_over(tmp_path, plain_interrupts):
    store = Unreachable(Storage.from_options())
    with pytest.raises(LeaseLost) as lost:
        with Lease(store, str(tmp_path / "run"), seconds=2) as lease:
            store.down = True
            wait_for(lambda: False, 30, "the driver to be stopped")  # the block: interrupted by the lease
    # A reader takes over once it has seen the last renewal unchanged for a period: not before this.
    assert time.monotonic() - lease.confirmed < 2
    assert str(lost.value) == (f"the run {tmp_path / 'run'}: this driver could not renew its lease for 1.6 s (its "
                               f"store out of reach), after which another driver may take it over; this driver "
                               f"stopped before writing more")
    assert (tmp_path / "run" / LEASE_FILE).exists()  # left to lapse: another may hold it by now


@pytest.mark.parametrize("content", [
    b'{"holder": "x", "host": "node-b", "pid": 1, "since": "then", "expires": NaN}',
    b'{"holder": "x", "host": "node-b", "pid": 1, "since": "then", "expires": Infinity}',
    record().replace(b'"seconds": 0.5', b'"seconds": 1e999'), record(renewal=-1), record(host="node\nb"), b'["a list"]', b'{"holder": "x", "pi',
    b'{"holder": "' + b"x" * (10 << 20) + b'"}',
], ids=["nan", "infinity", "overflow", "negative", "newline", "list", "torn", "huge"])
def test_a_lease_file_this_program_did_not_write_is_waited_out_then_taken_over(tmp_path, caplog, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LEASE_FILE).write_bytes(content)
    lease = Lease(Storage.from_options(), str(tmp_path / "run"), seconds=0.5)
    waited = timed_acquire(lease)
    try:
        assert 0.5 <= waited < 10
        assert stored(tmp_path / "run")["holder"] == lease.me["holder"]
        assert "is not a lease this program wrote: waiting 0.5 s" in caplog.text
    finally:
        lease.release()


def test_the_holder_renews_its_lease_within_its_period(tmp_path):
    store, run = Storage.from_options(), str(tmp_path / "run")
    with Lease(store, run, seconds=1) as lease:
        first = stored(tmp_path / "run")["renewal"]
        wait_for(lambda: stored(tmp_path / "run")["renewal"] > first + 4, 10, "renewals past a period")
        with pytest.raises(RunInUse):  # still held after its first period
            Lease(store, run).acquire()
        assert lease.thread.is_alive() and not lease.lost.is_set()


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
    held_by(tmp_path / "run", **here(), pid=gone_pid())
    assert len(race(store, str(tmp_path / "run"))) == 1  # and of those taking over a dead driver's
    held_by(tmp_path / "run", seconds=0.5)
    assert len(race(store, str(tmp_path / "run"))) == 1  # and of those waiting out a vanished host's
