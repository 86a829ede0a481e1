"""Node scratch folders: one process's working files on its node's own disk, removed when the work ends,
and by the next process on the node (or a sweep's end) when Ray ended their owner without cleanup."""
from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..core.storage import process_alive

log = logging.getLogger("cyclegan")
SCRATCH_KINDS = ("run", "trial", "builtin")  # a scratch folder: <tmp>/cyclegan-<kind>-<owner pid>-<random>


@contextlib.contextmanager
def node_scratch(kind: str) -> Iterator[Path]:
    """A folder on this node's disk for one process's working files, removed when the work ends: what
    must outlive the node is mirrored to storage before then. Ray ends a stopped trial or a failed
    run's actors without finishing this block, so the folder is named after its process, and folders
    of processes that are gone are removed by the next one on the node and at the end of a sweep."""
    remove_stale_scratch()
    folder = Path(tempfile.mkdtemp(prefix=f"cyclegan-{kind}-{os.getpid()}-"))
    remove = functools.partial(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(remove)  # an actor asked to exit runs these, though not its threads' finally blocks
    try:
        yield folder
    finally:
        remove()
        atexit.unregister(remove)


def remove_stale_scratch(wait_s: float = 0.0) -> int:
    """Removes this node's scratch folders whose process has ended (waiting up to ``wait_s`` for those
    still running to end); returns how many went. A folder of a live process is never touched."""
    deadline, removed = time.monotonic() + wait_s, 0
    folders = [f for kind in SCRATCH_KINDS for f in Path(tempfile.gettempdir()).glob(f"cyclegan-{kind}-*-*")]
    for folder in folders:
        pid = folder.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        while process_alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def remove_stale_scratch_everywhere(wait_s: float = 10.0, timeout_s: float = 30.0) -> int:
    """After a sweep: on every live node, the scratch folders of the trials and workers Ray ended; how
    many went. Bounded: a node being drained or gone takes no task (or loses it), so what has not
    answered within ``timeout_s`` is cancelled and left to that node's next run; a failed task is
    skipped. Cleanup never fails a finished sweep."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    task = ray.remote(num_cpus=0, max_retries=0)(remove_stale_scratch)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(wait_s)
            for node in nodes]
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in pending:
        ray.cancel(ref, force=True)
    removed = 0
    for ref in done:
        try:
            removed += ray.get(ref)
        except Exception as e:  # the node went, or its task failed: its folders wait for its next run
            log.info("scratch cleanup on a node failed (%s); skipped", type(e).__name__)
    if pending:
        log.info("scratch cleanup: %d node(s) did not answer within %.0f s (draining or gone); skipped",
                 len(pending), timeout_s)
    return removed
