"""Devices, the process group and gradient averaging for data parallelism (public torch API only)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed; (0, 1) when not data parallel."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Every process steps with the mean gradient over all processes: one all-reduce of all
    gradients laid end to end. (DDP's wrapper does not fit the CycleGAN step: each generator runs
    up to three times per iteration and the discriminators are frozen for the generators' backward.)
    """
    if world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for grad in grads:
        n = grad.numel()
        grad.copy_(flat[offset:offset + n].view(grad.shape))
        offset += n
