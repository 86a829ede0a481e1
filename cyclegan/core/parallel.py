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


def agree_max(values: list[float], device: torch.device, collective: bool = False) -> list[float]:
    """Each value's maximum over the processes, the same on all: one small all-reduce (MAX), its tensor
    on ``device``, the model's (NCCL takes CUDA tensors only; gloo CPU ones). A single process skips it,
    unless ``collective`` (the device check runs it on a group of one)."""
    if not (dist.is_available() and dist.is_initialized()) or (dist.get_world_size() == 1 and not collective):
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [float(v) for v in tensor.tolist()]


def agree(flags: list[bool], device: torch.device, collective: bool = False) -> list[bool]:
    """Each flag true on any process, the same answer on all (``agree_max`` of 0s and 1s)."""
    return [v > 0 for v in agree_max([float(f) for f in flags], device, collective)]


class GradientSync:
    """Every process steps with the mean gradient over all processes, averaged while backward still
    runs: the parameters are grouped into buckets of about ``bucket_mb`` in reverse order (roughly the
    order in which backward produces their gradients), and a bucket's all-reduce starts, asynchronously,
    as soon as the last of its gradients is accumulated. ``finish()`` after backward waits for them.

    (DDP's wrapper does not fit the CycleGAN step: each generator runs up to three times per iteration
    and the discriminators are frozen for the generators' backward. A parameter's gradient is still
    accumulated once per backward, which is when its hook fires.) ``compress="bf16"`` sends bfloat16
    (half the bytes, for links between nodes); the default sends the gradients as they are."""

    def __init__(self, params: Iterable[torch.nn.Parameter], world_size: int, bucket_mb: float = 25.0,
                 compress: str = "none"):
        self.world_size, self.compress = world_size, compress
        self.buckets: list[list[torch.nn.Parameter]] = []
        self.bucket_of: dict[torch.nn.Parameter, int] = {}
        if world_size == 1:
            return
        limit, size = bucket_mb * 2**20, 0.0
        for param in reversed([p for p in params if p.requires_grad]):
            if not self.buckets or size >= limit:
                self.buckets.append([])
                size = 0.0
            self.bucket_of[param] = len(self.buckets) - 1
            self.buckets[-1].append(param)
            size += param.numel() * param.element_size()
            param.register_post_accumulate_grad_hook(self._accumulated)
        self.ready, self.launched = [0] * len(self.buckets), 0  # gradients in, and buckets sent
        self.inflight: list[tuple[list[torch.Tensor], torch.Tensor, object]] = []

    def _accumulated(self, param: torch.nn.Parameter) -> None:
        self.ready[self.bucket_of[param]] += 1
        # Buckets go in their order, as every process must issue the same collectives in the same order.
        while self.launched < len(self.buckets) and self.ready[self.launched] == len(self.buckets[self.launched]):
            self._launch(self.launched)

    def _launch(self, bucket: int) -> None:
        self.launched = bucket + 1
        grads = [p.grad for p in self.buckets[bucket] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        if self.compress == "bf16":
            flat = flat.to(torch.bfloat16)
        self.inflight.append((grads, flat, self._all_reduce(flat)))

    def _all_reduce(self, flat: torch.Tensor):
        """Starts the sum over processes of ``flat`` (in place); returns what ``wait()`` completes."""
        return dist.all_reduce(flat, async_op=True)

    def finish(self) -> None:
        """After backward: buckets with parameters that got no gradient go now; all are awaited, and
        every gradient is replaced by the mean over the processes."""
        if self.world_size == 1:
            return
        while self.launched < len(self.buckets):
            self._launch(self.launched)
        for grads, flat, handle in self.inflight:
            handle.wait()
            flat = flat.to(grads[0].dtype) if flat.dtype != grads[0].dtype else flat
            flat /= self.world_size
            offset = 0
            for grad in grads:
                n = grad.numel()
                grad.copy_(flat[offset:offset + n].view(grad.shape))
                offset += n
        self.inflight.clear()
        self.ready, self.launched = [0] * len(self.buckets), 0
