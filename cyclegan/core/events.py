"""A run's TensorBoard events: the writer (and what a resumed run hides of a lost attempt), the loss and
learning-rate curves, and the image rows the loop logs."""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Optional

import torch

from .data import to_uint8

log = logging.getLogger("cyclegan")

EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d{1,12})\.")
EVENTS_WAIT_S = 2.0  # the longest a purging writer waits for its folder's newest second to pass


def purge_step(total_iters: int) -> Optional[int]:
    """Where TensorBoard hides a lost attempt's events from: the step after the checkpoint resumed from
    (what was logged at its step came before it was written, and is not logged again)."""
    return total_iters + 1 if total_iters else None


def events_writer(log_dir: Path, purge: Optional[int]):
    """A TensorBoard writer for ``log_dir``; ``purge``: the step from which earlier files' events are hidden.
    TensorBoard reads a folder's files in name order, and a name is the second it was made in, then host,
    pid and a counter compared as text ('.10' before '.9'): a purging file made in the same second as one
    it must purge could be read first and purge nothing. So it is made in a later second than any there
    (a wait only after an attempt that lasted under a second). A file dated further ahead than that (another
    host's fast clock, a copied folder) cannot be outwaited: the wait is bounded and says why."""
    from torch.utils.tensorboard import SummaryWriter
    if purge is not None and log_dir.is_dir():
        newest = max((int(m.group(1)) for name in os.listdir(log_dir) if (m := EVENT_FILE.match(name))), default=0)
        if newest > time.time() + EVENTS_WAIT_S:
            log.warning("%s holds an events file dated %s, ahead of this clock (another host's, or a copied "
                        "folder): TensorBoard may show its steps past step %d twice", log_dir,
                        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(min(newest, 2**31 - 1))), purge)
        else:
            while int(time.time()) <= newest:
                time.sleep(0.05)
    return SummaryWriter(str(log_dir), purge_step=purge)


def log_scalars(writer, window: dict[str, list[torch.Tensor]], lr: float, step: int) -> None:
    """Each loss's mean over the steps since the last log (``window``), and the learning rate."""
    for name, values in window.items():
        values = torch.stack(values).tolist()  # one read-back of the window per loss
        writer.add_scalar(f"loss/{name}", sum(values) / len(values), step)
    writer.add_scalar("lr", lr, step)


def log_images(writer, visuals: dict[str, Optional[torch.Tensor]], step: int) -> None:
    """The first image of the step's batch through both cycles, a row per domain."""
    import torchvision

    def row(names):  # the bytes a results page would show (tensor2im), one channel tiled to three
        tiles = [to_uint8(visuals[n][0].detach().cpu(), truncate=True) for n in names if visuals.get(n) is not None]
        tiles = [t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in tiles]
        return torchvision.utils.make_grid(tiles, nrow=len(tiles), padding=2)
    writer.add_image("images/A", row(["real_A", "fake_B", "rec_A", "idt_B"]), step)
    writer.add_image("images/B", row(["real_B", "fake_A", "rec_B", "idt_A"]), step)
