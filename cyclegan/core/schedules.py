"""Learning-rate policies: the stateless ones as a factor of the base rate per epoch, and plateau."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .config import Config


def lr_factor(cfg: Config, epoch: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` (1-based), for the stateless policies.

    linear: 1 for the first n_epochs epochs, then down by 1/(n_epochs_decay+1) per epoch, so the
    last decay epoch still trains at 1/(n_epochs_decay+1) and the rate reaches zero only after it.
    """
    if cfg.lr_policy == "linear":
        return 1.0 - max(0, epoch - cfg.n_epochs) / float(cfg.n_epochs_decay + 1)
    if cfg.lr_policy == "step":
        return 0.1 ** ((epoch - 1) // cfg.lr_decay_iters)
    if cfg.lr_policy == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.total_epochs))
    return 1.0  # plateau: adjusted by ReduceLROnPlateau from the epoch's losses


def plateau_scheduler(cfg: Config, optimizer: torch.optim.Optimizer
                      ) -> Optional[torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """For lr_policy plateau: x0.2 after 5 epochs whose mean generator loss improved by less than 1%."""
    if cfg.lr_policy != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01,
                                                      patience=5)


def set_lr(optimizers, lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
