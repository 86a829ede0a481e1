"""Where a run is (its position, and where a saved one goes on) and where its loop's time goes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import torch


@dataclass
class Progress:
    """Where the run is: ``epoch`` is the epoch in progress, ``epoch_iter`` images done in it."""
    epoch: int
    epoch_iter: int = 0
    total_iters: int = 0
    epoch_loss_G: float | torch.Tensor = 0.0  # sum over the epoch, for the plateau schedule (a tensor while it runs)
    epoch_steps: int = 0
    history: list = field(default_factory=list)  # per-step losses (kept only when asked)


def resumed_position(state: dict, world_size: int) -> tuple[int, int]:
    """Where a full state goes on in a group of ``world_size`` processes: (epoch, images into it per
    process). Positions count a process's images; with another number of processes (elastic training)
    the epoch's remaining samples are split anew."""
    p = state["progress"]
    return p["epoch"], p["epoch_iter"] * p.get("world_size", 1) // world_size


class LoopTimes:
    """Where the loop's time goes (result.json): waiting for data, and in saves."""

    def __init__(self):
        self.started: Optional[tuple[float, int]] = None  # (clock, images done) when the loop began
        self.data_waits: dict[int, list[float]] = {}  # per epoch: seconds the loop waited for each batch
        self.save_waits: list[float] = []  # seconds each save held the loop

    def start(self, total_iters: int) -> None:
        self.started = (time.perf_counter(), total_iters)
        self.data_waits, self.save_waits = {}, []

    def batches(self, epoch: int, batches: Iterable) -> Iterator:
        """The epoch's batches, each one's wait counted."""
        return waited_for(batches, self.data_waits.setdefault(epoch, []))

    def summary(self, total_iters: int, world_size: int) -> dict:
        """Throughput of this process's loop (all processes' images), and where its time went: waiting
        for data, in all and for each epoch's first batch (the stall at an epoch boundary; the first
        epoch's includes the data pipeline's start), and in saves. Empty before the loop started."""
        if self.started is None:
            return {}
        seconds = time.perf_counter() - self.started[0]
        waits = {epoch: w for epoch, w in self.data_waits.items() if w}
        return {"train_seconds": seconds, "images_per_sec": (total_iters - self.started[1]) * world_size / seconds,
                "data_wait_seconds": sum(map(sum, waits.values())),
                "epoch_first_batch_wait": {str(epoch): w[0] for epoch, w in waits.items()},
                "saves": len(self.save_waits), "save_seconds": sum(self.save_waits)}


def waited_for(batches: Iterable, waits: list[float]) -> Iterator:
    """The batches, with the seconds spent waiting for each appended to ``waits``."""
    it = iter(batches)
    while True:
        began = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        waits.append(time.perf_counter() - began)
        yield batch
