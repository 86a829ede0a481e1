"""When a run saves: the component the training loop asks once per step and at each epoch's end (as
torchtitan's checkpointer decides for its trainer). It answers with the reference-format labels a save
now writes (empty: no save), from --save_latest_freq, --save_epoch_freq, --save_by_iter, a preemption
notice and --save_latest_secs; with several processes the answer is agreed, so all save at one step."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Optional

import torch

from .config import Config
from .parallel import agree_max

log = logging.getLogger("cyclegan")


def crossed(total: int, step: int, every: int) -> bool:
    """True when the count moved past a multiple of ``every`` in the last ``step``."""
    return total // every > (total - step) // every


class SaveSchedule:
    """``notice()``: whether this process has been told its machine goes (the hooks' notices);
    ``checked``: decide only at checks (several processes, or a notice that costs a call), see ``check``.
    ``device``: where the processes' one small all-reduce runs (the model's)."""

    def __init__(self, cfg: Config, world_size: int = 1, is_main: bool = True,
                 device: Optional[torch.device] = None, notice: Callable[[], bool] = lambda: False,
                 checked: bool = False):
        self.cfg, self.world_size, self.is_main, self.device = cfg, world_size, is_main, device
        self.notice, self.checked = notice, checked or world_size > 1
        self.preemption_saved = False  # a notice's checkpoint is written once
        self.start(0)

    def start(self, total_iters: int) -> None:
        """The run's loop begins (or goes on) at ``total_iters``: nothing requested, the clocks from now."""
        self.requested = False  # a periodic save or a preemption notice not yet written
        # Checks for notices and timed saves: when the next is, and the last one's (clock, images).
        self.next_check: Optional[int] = None
        self.last_check: tuple[float, int] = (time.monotonic(), total_iters)
        self.last_save_at = time.monotonic()

    def saved(self) -> None:
        """A save was written now (the timed saves count from here)."""
        self.last_save_at = time.monotonic()

    def after_step(self, n: int, total_iters: int, epoch_iter: int, epoch_length: int) -> tuple[str, ...]:
        """After every step of ``n`` images (the position after it): the labels to save under now."""
        wanted = self.check(n, total_iters)  # under data parallelism: the same answer on every process
        self.requested = self.requested or wanted or crossed(total_iters, n, self.cfg.save_latest_freq)
        labels = self.labels(total_iters, epoch_iter, epoch_length)
        if labels:
            self.requested = False
        return labels

    def after_epoch(self, finished_epoch: int, total_iters: int) -> tuple[str, ...]:
        """After ``finished_epoch`` (the position: the start of the next): the labels to save under now."""
        labels = self.labels(total_iters, finished_epoch=finished_epoch)
        self.requested = False
        return labels

    def check(self, n: int, total: int) -> bool:
        """True asks for a checkpoint now, for a preemption notice (once) or a due --save_latest_secs save.
        When ``checked``, this is decided at checks: the first after --notice_check_freq images, then
        about every --notice_check_secs. At a check the processes agree (one small all-reduce on the
        model's device, the first process's clock deciding a timed save) on the flags and on the slowest
        seconds per image since the last check, from which each computes the same next check: all save
        at one step, and between checks no step waits for the host."""
        if self.checked:
            if self.next_check is None:
                if not crossed(total, n, self.cfg.notice_check_freq):
                    return False
            elif total < self.next_check:
                return False
        notice = self.notice()
        due = self.is_main and self.time_due()
        now = time.monotonic()
        pace = (now - self.last_check[0]) / max(1, total - self.last_check[1])  # seconds per image here
        if self.world_size > 1:  # one all-reduce: the flags (0/1) and the pace
            agreed = agree_max([float(notice), float(due), pace], self.device)
            notice, due, pace = agreed[0] > 0, agreed[1] > 0, agreed[2]
        self.last_check = (now, total)
        self.next_check = total + max(n, math.ceil(self.cfg.notice_check_secs / max(pace, 1e-9)))
        if notice and not self.preemption_saved:
            self.preemption_saved = True
            log.warning("preemption notice: writing a checkpoint before the node goes")
            return True
        return due

    def time_due(self) -> bool:
        secs = self.cfg.save_latest_secs
        return secs > 0 and time.monotonic() - self.last_save_at >= secs

    def labels(self, total_iters: int, epoch_iter: int = 0, epoch_length: int = 0,
               finished_epoch: Optional[int] = None) -> tuple[str, ...]:
        """Whether a save is due now, as the reference-format labels it writes (empty: no save).

        Mid-epoch (``finished_epoch`` None): a requested save (save_latest_freq crossed or a preemption
        notice) writes ``latest``, or ``iter_<total_iters>`` instead with --save_by_iter, as the reference
        does. On the epoch's last step it is not written yet: the position would be the epoch's end before
        its schedule step, so it waits for the end of the epoch.
        At the end of an epoch (position: the start of the next): ``latest`` and ``<epoch>`` every
        save_epoch_freq epochs, ``latest`` after the last epoch, plus a request that waited, all in one save.
        """
        cfg = self.cfg
        periodic = (f"iter_{total_iters}",) if cfg.save_by_iter else ("latest",)
        if finished_epoch is None:
            return periodic if self.requested and epoch_iter < epoch_length else ()
        labels: tuple[str, ...] = ()
        if finished_epoch % cfg.save_epoch_freq == 0:
            labels = ("latest", str(finished_epoch))
        elif finished_epoch == cfg.total_epochs:
            labels = ("latest",)
        if self.requested:
            labels += tuple(label for label in periodic if label not in labels)
        return labels
