"""One writer per run or sweep kept in storage: a lease object ``<folder>/_writer.json``.

A Ray run's or a sweep's files are written from several machines into a bucket, where no lock exists,
so the driver holds a lease: an object naming it (holder id, host, boot, pid namespace, pid) and its
period, rewritten with a new ``renewal`` number by a thread four times a period. No clock of another
machine is trusted: a driver that finds the lease held watches it on its own monotonic clock, and takes
it over only once it has seen the same version (tag and bytes) for a whole period; a version that
changes meanwhile is a live holder's, and the driver is refused. A holder that is provably on this very
machine (same host, boot and pid namespace) is judged by its process instead: gone, its lease is taken
at once (so ``--resume`` works right after a killed driver); alive, the driver is refused at once.
Every write is conditional on the version read (``Storage.write_if``: a conditional PUT on S3), so of
two drivers that start or take over in the same instant exactly one holds the lease.

The holder stops its own driver (``LeaseLost``) when another has taken the lease, and when it could not
renew for most of a period (``FENCE``), so that it has stopped before anyone may take over.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from .checkpoint import RunInUse
from .errors import UserError
from .storage import Changed, Storage, process_alive

log = logging.getLogger("cyclegan")
LEASE_FILE = "_writer.json"
LEASE_SECONDS = 120.0  # a driver that misses renewals for this long (its node gone) loses the lease
RENEWALS = 4  # renewals per period
FENCE = 0.8  # a holder unrenewed for this part of its period stops: a reader waits a whole one
MIN_SECONDS = 0.1  # the shortest period a lease file may claim
MAX_LEASE_BYTES = 4096  # a lease file is a few hundred bytes; a larger one is not this program's
MAX_TEXT = 256  # characters of a name in a lease file


class LeaseLost(UserError):
    """Another driver took this driver's lease, or it could not be renewed in time: the driver stops."""


def _first_line(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def start_time(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks after boot, field 22 of /proc/<pid>/stat): a pid reused
    by a later process has another."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def this_process() -> dict:
    """What tells a reader whether a holder runs on the reader's own machine: the host name (containers
    on the host's network share it), the boot id (one per machine and boot), the pid namespace (one per
    container), and the pid with its start time."""
    try:
        pidns: Optional[str] = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = None
    return {"host": socket.gethostname(), "boot": _first_line("/proc/sys/kernel/random/boot_id"),
            "pidns": pidns, "pid": os.getpid(), "started": start_time(os.getpid())}


def _text(value: object, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT and value.isprintable()


def _count(value: object, optional: bool = False) -> bool:
    if value is None:
        return optional
    return type(value) is int and 0 <= value < 2 ** 63


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {text}")
    return number


def _no_constant(name: str) -> None:
    raise ValueError(f"not a number: {name}")


def parse_record(data: bytes) -> Optional[dict]:
    """A lease file's record, or None when it is not one this program wrote (too large, not JSON, NaN or
    infinite numbers, fields of the wrong type)."""
    if len(data) > MAX_LEASE_BYTES:
        return None
    try:
        held = json.loads(data, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(held, dict):
        return None
    seconds = held.get("seconds")
    fields = (_text(held.get("holder")), _text(held.get("host")), _count(held.get("pid")) and 0 < held["pid"] <= 1 << 22,
              _count(held.get("renewal")), _text(held.get("since"), True), _text(held.get("boot"), True),
              _text(held.get("pidns"), True), _count(held.get("started"), True),
              type(seconds) in (int, float) and seconds > 0)
    return held if all(fields) else None


class Lease:
    """``with Lease(store, folder, what="run", retry="…"):`` holds the folder for this process; when the
    lease is lost, the block is interrupted (if it runs in the main thread) and ends in ``LeaseLost``."""

    def __init__(self, store: Storage, folder: str, what: str = "run", retry: str = "",
                 seconds: float = LEASE_SECONDS):
        self.store, self.uri = store, f"{folder.rstrip('/')}/{LEASE_FILE}"
        self.folder, self.what, self.retry, self.seconds = folder.rstrip("/"), what, retry, seconds
        self.me = {"holder": uuid.uuid4().hex, **this_process()}
        self.stopped, self.lost = threading.Event(), threading.Event()
        self.why = ""  # how the lease was lost
        self.thread: Optional[threading.Thread] = None
        self.tag: Optional[str] = None
        self.renewal, self.attempts, self.confirmed = 0, {}, 0.0  # attempts: renewal -> when its write began
        self.since, self.in_main = "", False

    # ---------------------------------------------------------------- reading
    def holder(self) -> tuple[Optional[dict], Optional[str], bytes]:
        """The lease as stored: its record (None when absent, {} when not a record: an unknown writer's),
        its version's tag and its bytes."""
        try:
            data, tag = self.store.read_tagged(self.uri, limit=MAX_LEASE_BYTES)
        except FileNotFoundError:
            return None, None, b""
        return parse_record(data) or {}, tag, data

    def _here(self, held: dict) -> Optional[bool]:
        """Whether the holder, provably on this machine, is alive; None when it may be on another."""
        if not (self.me["boot"] and self.me["pidns"]) or any(held.get(k) != self.me[k]
                                                             for k in ("host", "boot", "pidns")):
            return None
        started = held.get("started")
        return process_alive(held["pid"]) and started in (None, start_time(held["pid"]))

    def _period(self, held: dict) -> float:
        """How long the holder's version must stay unchanged: its period, bounded; this driver's own for
        an unknown writer's file."""
        if "seconds" not in held:
            return self.seconds
        return min(max(float(held["seconds"]), MIN_SECONDS), max(LEASE_SECONDS, self.seconds))

    @staticmethod
    def _who(held: Optional[dict]) -> str:
        if not held:
            return "a writer this driver cannot name"
        return f"pid {held['pid']} on {held['host']}, since {held.get('since') or '?'}"

    def _refuse(self, held: Optional[dict], why: str) -> RunInUse:
        return RunInUse(f"name: the {self.what} {self.folder} is being written by another driver "
                        f"({self._who(held)}; {why}); {self.retry or 'wait for it to end'}")

    # ---------------------------------------------------------------- taking it
    def acquire(self) -> None:
        """Hold the lease, waiting (at most a period of the holder's) for another host's to lapse; refused
        while its holder is alive: on this machine, or renewing while this driver waits."""
        self.since = time.strftime("%Y-%m-%d %H:%M:%S")
        watched, start = None, 0.0
        while True:
            held, tag, data = self.holder()
            if held is None:
                return self._take(None, None, "")
            here = self._here(held)
            if here:
                raise self._refuse(held, "it runs on this machine")
            if here is False:
                return self._take(held, tag, "it is gone from this machine")
            period = self._period(held)
            if watched is None:
                watched, start = (tag, data), time.monotonic()
                self._say_waiting(held, period)
            elif (tag, data) != watched:
                raise self._refuse(held, "it renewed its lease while this driver waited, so it is alive")
            elif time.monotonic() - start >= period:
                return self._take(held, tag, f"its lease went unrenewed for {period:g} s")
            time.sleep(min(max(period / 8, 0.05), 5.0))  # polling: a store has no change to wait on

    def _say_waiting(self, held: dict, period: float) -> None:
        until = time.strftime("%H:%M:%S", time.localtime(time.time() + period))
        if held:
            log.info("the %s %s is held by %s, which may be on another machine: waiting up to %g s (until %s) "
                     "for it to renew its lease or let it go", self.what, self.folder, self._who(held), period, until)
        else:
            log.warning("%s is not a lease this program wrote: waiting %g s (until %s) to see it unchanged "
                        "before taking it over", self.uri, period, until)

    def _take(self, held: Optional[dict], tag: Optional[str], why: str) -> None:
        try:
            self._write(tag)
        except Changed:  # another driver wrote it since it was read: that one holds it
            raise self._refuse(self.holder()[0], "it took the lease just now") from None
        if held is not None:
            log.warning("took over %s from %s: %s", self.folder, self._who(held), why)
        self.in_main = threading.current_thread() is threading.main_thread()
        self.thread = threading.Thread(target=self._renew, name="cyclegan-lease", daemon=True)
        self.thread.start()

    def _record(self) -> dict:
        return {**self.me, "since": self.since, "seconds": self.seconds, "renewal": self.renewal}

    def _write(self, tag: Optional[str]) -> None:
        self.renewal += 1
        self.attempts[self.renewal] = time.monotonic()
        self.tag = self.store.write_if(self.uri, json.dumps(self._record()).encode(), tag)
        self._confirm(self.renewal)

    def _confirm(self, renewal: int) -> None:
        """The write numbered ``renewal`` is the stored version: the lease holds from when it began."""
        self.confirmed = self.attempts.get(renewal, self.confirmed)
        self.attempts = {n: t for n, t in self.attempts.items() if n > renewal}

    # ---------------------------------------------------------------- keeping it
    def _renew(self) -> None:
        fence = FENCE * self.seconds
        while True:
            deadline = self.confirmed + fence
            if self.stopped.wait(max(0.0, min(self.seconds / RENEWALS, deadline - time.monotonic()))):
                return
            if time.monotonic() < deadline:
                # A write that hangs (a store's timeouts and retries) must not keep the driver past its fence.
                attempt = threading.Thread(target=self._renew_once, name="cyclegan-lease-write", daemon=True)
                attempt.start()
                attempt.join(max(0.0, deadline - time.monotonic()))
            if not self.lost.is_set() and time.monotonic() - self.confirmed >= fence:
                self.why = (f"this driver could not renew its lease for {fence:g} s (its store out of reach), "
                            f"after which another driver may take it over")
                self.lost.set()
            if self.lost.is_set():
                return self._stop_driver()

    def _renew_once(self) -> None:
        try:
            return self._write(self.tag)
        except Changed:  # another driver's write, or this one's landed though its reply was lost
            pass
        except Exception as e:  # out of reach for a moment, or a reply lost: the lease says which
            log.warning("could not renew the lease on %s: %s", self.folder, e)
        try:
            held, tag, _ = self.holder()
        except Exception:  # unreadable too: the next renewal tries again
            return
        if held and held["holder"] == self.me["holder"]:
            self.tag = tag  # still this driver's: a write of its own landed
            self._confirm(held["renewal"])
        elif not self.stopped.is_set():
            self.why = (f"it was taken over by another driver ({self._who(held)})" if held else
                        f"its lease {self.uri} was removed or overwritten by another writer")
            self.lost.set()

    def _stop_driver(self) -> None:
        """The driver's block ends: interrupted in the main thread (Ray Train's handler aborts its run). If
        it has not let go of the lease within the rest of a period (interrupts ignored, or a handler an
        earlier Tune run left that only sets a flag), the process ends: nothing else stops it writing."""
        if not self.in_main or self.stopped.is_set():
            return
        if callable(signal.getsignal(signal.SIGINT)):  # a signal, not a flag: it wakes a sleep or a wait too
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            if self.stopped.wait((1 - FENCE) * self.seconds):  # release(): the block ended
                return
        log.error("%s", self.error())
        os._exit(2)

    def error(self) -> LeaseLost:
        return LeaseLost(f"the {self.what} {self.folder}: {self.why}; this driver stopped before writing more")

    # ---------------------------------------------------------------- letting go
    def release(self) -> None:
        self.stopped.set()
        if self.thread is None:
            return
        try:
            self.thread.join()
        except BaseException:  # the interrupt the lease thread sent the block, arriving only now
            if not self.lost.is_set():
                raise
        self.thread = None
        if self.lost.is_set():
            return  # no longer this driver's to remove
        try:
            held, tag, _ = self.holder()
            if held and held["holder"] == self.me["holder"] and tag == self.tag:
                self.store.remove(self.uri)
        except Exception as e:  # the lease lapses by itself
            log.warning("could not remove the lease on %s: %s", self.folder, e)

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except BaseException:
            if not self.lost.is_set():
                raise
        if self.lost.is_set():  # whatever the interrupt became in the block (Ray Train's abort exits)
            raise self.error() from None
