"""Gradient averaging across processes (two gloo processes on this machine, rendezvous through a file); the
benchmark of it over a slow link: tests/commands/test_bench.py."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cyclegan.core.parallel import GradientSync


def _average_in_two_processes(rank: int, world: int, store: str, out: str, modes: tuple[str, ...]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        for compress in modes:  # one process group for every mode: a spawn is a fresh interpreter importing torch
            torch.manual_seed(0)
            used = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 4))
            unused = nn.Linear(4, 4)  # no gradient in this backward, as a frozen or skipped part
            params = list(used.parameters()) + list(unused.parameters())
            sync = GradientSync(params, world, bucket_mb=0.0005, compress=compress)  # 1 KB: several buckets
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(rank))  # each process its own data
            used(used(x)).square().sum().backward()  # used twice: each gradient accumulated once
            local = [p.grad.clone() for p in used.parameters()]
            sync.finish()
            everyone = []
            for grad in local:
                parts = [torch.zeros_like(grad) for _ in range(world)]
                dist.all_gather(parts, grad)
                everyone.append(torch.stack(parts))
            torch.save({"synced": [p.grad for p in used.parameters()], "everyone": everyone,
                        "unused": [p.grad for p in unused.parameters()], "buckets": len(sync.buckets)},
                       f"{out}-{compress}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gradients_are_averaged_bucket_by_bucket_during_backward(tmp_path):
    modes = ("none", "bf16")
    mp.spawn(_average_in_two_processes, args=(2, str(tmp_path / "store"), str(tmp_path / "out"), modes), nprocs=2)
    for compress in modes:
        results = [torch.load(tmp_path / f"out-{compress}.{rank}", weights_only=True) for rank in range(2)]
        assert results[0]["buckets"] >= 2
        for rank in range(2):
            for synced, everyone in zip(results[rank]["synced"], results[rank]["everyone"]):
                assert not torch.equal(everyone[0], everyone[1])  # the processes' own gradients differ
                mean = everyone.sum(0) / 2
                if compress == "none":
                    assert torch.equal(synced, mean)  # exactly the mean, as one all-reduce gave it
                else:
                    assert torch.allclose(synced, mean, rtol=2e-2, atol=1e-3)
            assert results[rank]["unused"] == [None, None]
        for a, b in zip(results[0]["synced"], results[1]["synced"]):
            assert torch.equal(a, b)  # every process steps with the same gradient
