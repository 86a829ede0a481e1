"""One writer per run or sweep kept in storage: a lease object ``<folder>/_writer.json``.

A Ray run's or a sweep's files are written from several machines into a bucket, where no lock exists,
so the driver holds a lease: an object naming it (holder id, host, pid) and the time it expires, renewed
well before that by a thread. Another driver reads it first and is refused while it is held; a lease
whose process is gone from the reader's own host is taken over at once (a killed driver's, so
``--resume`` works right after), any other once it has expired (its machine vanished). Every write is
conditional on the version read (``Storage.write_if``: a conditional PUT on S3), so of two drivers that
start or take over in the same instant exactly one holds the lease.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional

from .checkpoint import RunInUse
from .storage import Changed, Storage, process_alive

log = logging.getLogger("cyclegan")
LEASE_FILE = "_writer.json"
LEASE_SECONDS = 120.0  # a driver that misses renewals for this long (its node gone) loses the lease


class Lease:
    """``with Lease(store, folder, what="run", retry="…"):`` holds the folder for this process."""

    def __init__(self, store: Storage, folder: str, what: str = "run", retry: str = "",
                 seconds: float = LEASE_SECONDS):
        self.store, self.uri = store, f"{folder.rstrip('/')}/{LEASE_FILE}"
        self.folder, self.what, self.retry, self.seconds = folder.rstrip("/"), what, retry, seconds
        self.me = {"holder": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.stopped = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.tag: Optional[str] = None

    def holder(self) -> tuple[Optional[dict], Optional[str]]:
        """The lease as stored (None when absent or unreadable) and its version's tag (None when absent)."""
        try:
            data, tag = self.store.read_tagged(self.uri)
        except FileNotFoundError:
            return None, None
        try:
            held = json.loads(data)
        except ValueError:  # a torn or foreign file holds nothing
            return None, tag
        return (held if isinstance(held, dict) else None), tag

    def _lapsed(self, held: dict) -> bool:
        if held.get("host") == self.me["host"] and isinstance(held.get("pid"), int):
            if not process_alive(held["pid"]):
                return True  # a driver killed on this machine: no need to wait out its lease
        expires = held.get("expires")
        return not isinstance(expires, (int, float)) or expires < time.time()

    def _refuse(self, held: dict) -> RunInUse:
        expires = held.get("expires")
        left = max(0, int(expires - time.time())) if isinstance(expires, (int, float)) else 0
        return RunInUse(f"name: the {self.what} {self.folder} is being written by another driver (pid "
                        f"{held.get('pid', '?')} on {held.get('host', '?')}, since {held.get('since', '?')}; "
                        f"its lease ends in {left} s unless renewed); {self.retry or 'wait for it to end'}")

    def _write(self, tag: Optional[str]) -> None:
        record = {**self.me, "since": self.since, "expires": time.time() + self.seconds}
        self.tag = self.store.write_if(self.uri, json.dumps(record).encode(), tag)

    def acquire(self) -> None:
        self.since = time.strftime("%Y-%m-%d %H:%M:%S")
        held, tag = self.holder()
        if held and not self._lapsed(held):
            raise self._refuse(held)
        if held:
            log.warning("taking over %s from pid %s on %s, which is gone or let its lease lapse",
                        self.folder, held.get("pid", "?"), held.get("host", "?"))
        try:
            self._write(tag)
        except Changed:  # another driver wrote it since it was read: that one holds it
            raise self._refuse(self.holder()[0] or {}) from None
        self.thread = threading.Thread(target=self._renew, name="cyclegan-lease", daemon=True)
        self.thread.start()

    def _renew(self) -> None:
        while not self.stopped.wait(self.seconds / 4):
            try:
                self._write(self.tag)
            except Changed:
                held = self.holder()[0] or {}
                log.error("%s was taken over by pid %s on %s while this driver was out of reach; stop one "
                          "of them", self.folder, held.get("pid", "?"), held.get("host", "?"))
                return
            except Exception as e:  # a store out of reach for a moment: the next renewal tries again
                log.warning("could not renew the lease on %s: %s", self.folder, e)

    def release(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
            try:
                held, tag = self.holder()
                if held and held.get("holder") == self.me["holder"] and tag == self.tag:
                    self.store.remove(self.uri)
            except Exception as e:  # the lease lapses by itself
                log.warning("could not remove the lease on %s: %s", self.folder, e)

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
