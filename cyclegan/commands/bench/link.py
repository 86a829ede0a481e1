"""``cyclegan bench --link_gbps G,G,...``: two processes averaging gradients over a simulated link of each
bandwidth, overlapped with backward and after it (torch.distributed on this machine, no Ray)."""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Optional

import torch

from ...core.config import Config
from ...core.model import CycleGAN


class SimulatedLink:
    """A link of ``gbps`` gigabits/s between two processes: an all-reduce of B bytes (a ring over two
    processes: each sends B and receives B, both ways at once) holds it for B * 8 / bandwidth seconds,
    and transfers queue behind each other. The real all-reduce runs on the loopback; completion waits
    for the link's time too."""

    def __init__(self, gbps: float):
        self.bits_per_s, self.free_at, self.bytes = gbps * 1e9, 0.0, 0

    def transfer(self, nbytes: int) -> float:
        """Queues a transfer; returns when it is through."""
        start = max(time.perf_counter(), self.free_at)
        self.free_at = start + nbytes * 8 / self.bits_per_s
        self.bytes += nbytes
        return self.free_at


class _Through:
    def __init__(self, work, done_at: float):
        self.work, self.done_at = work, done_at

    def wait(self) -> None:
        self.work.wait()
        time.sleep(max(0.0, self.done_at - time.perf_counter()))


def sync_over(link: Optional[SimulatedLink], overlap: bool) -> type:
    """GradientSync over ``link`` (None: the loopback as it is); without ``overlap`` every bucket is
    sent after backward, as one all-reduce after the whole backward pass would."""
    from ...core.parallel import GradientSync

    class LinkSync(GradientSync):
        sends: list[list[tuple[float, int]]] = []  # per backward: (seconds before its end, bytes) per bucket

        def _accumulated(self, param):
            if overlap:
                super()._accumulated(param)

        def _all_reduce(self, flat):
            nbytes = flat.numel() * flat.element_size()
            self.launched_at = getattr(self, "launched_at", []) + [(time.perf_counter(), nbytes)]
            work = super()._all_reduce(flat)
            return work if link is None else _Through(work, link.transfer(nbytes))

        def finish(self):
            ended = time.perf_counter()
            super().finish()
            LinkSync.sends.append([(ended - t, nbytes) for t, nbytes in getattr(self, "launched_at", [])])
            self.launched_at = []
    return LinkSync


def modelled_exposure(sends: list[list[tuple[float, int]]], gbps: float, passes_per_iter: int = 2) -> float:
    """Seconds per iteration that gradient transfers over a link of ``gbps`` would add after backward,
    with the buckets sent when they were (``sends``: per backward pass, each bucket's lead before its
    end and its bytes), each queued behind the one before: bytes x bandwidth, less what overlaps."""
    exposed = 0.0
    for buckets in sends:
        through = -math.inf
        for lead, nbytes in sorted(buckets, key=lambda b: -b[0]):
            through = max(through, -lead) + nbytes * 8 / (gbps * 1e9)
        exposed += max(0.0, through)
    return exposed * passes_per_iter / max(1, len(sends))


def _link_process(rank: int, cfg_dict: dict, links: list, warmup: int, iters: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from ...core.config import from_dict
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    cfg, rows = from_dict(cfg_dict), []
    g = torch.Generator().manual_seed(rank)
    real_A = torch.rand((cfg.batch_size, cfg.input_nc, cfg.crop_size, cfg.crop_size), generator=g) * 2 - 1
    real_B = torch.rand((cfg.batch_size, cfg.output_nc, cfg.crop_size, cfg.crop_size), generator=g) * 2 - 1
    try:
        for gbps in links:
            for overlap in (True, False):
                link = SimulatedLink(gbps) if gbps else None
                sync = sync_over(link, overlap)
                model = CycleGAN(cfg, device=torch.device("cpu"), gradient_sync=sync)
                times = []
                for i in range(warmup + iters):
                    dist.barrier()
                    began = time.perf_counter()
                    model.optimize(real_A, real_B)
                    if i >= warmup:
                        times.append(time.perf_counter() - began)
                leads = [lead for buckets in sync.sends for lead, _ in buckets]
                rows.append({"gbps": gbps, "overlap": overlap, "sec_per_iter": statistics.median(times),
                             "bytes_per_iter": link.bytes // (warmup + iters) if link else None,
                             # how early the buckets went (the room there was to hide their transfer),
                             # and what that leaves exposed on each link, by the model
                             "median_bucket_sent_before_backward_end_sec": statistics.median(leads),
                             "modelled_exposed_sec": {f"{g:g}": modelled_exposure(sync.sends, g)
                                                      for g in links if g}})
        Path(f"{out}.{rank}").write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def bench_link(cfg: Config, gbps: list[float], warmup: int, iters: int) -> list[dict]:
    """``cyclegan bench --link_gbps 10,1``: two processes training on this machine, their gradients
    averaged over a simulated link of each bandwidth (and the loopback as it is), with the buckets'
    all-reduces overlapped with backward and, for comparison, all sent after it."""
    import tempfile

    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory(prefix="cyclegan-bench-link-") as folder:
        mp.spawn(_link_process, args=(cfg.to_dict(), [0.0, *gbps], warmup, iters, f"{folder}/store",
                                      f"{folder}/out"), nprocs=2)
        rows = json.loads(Path(f"{folder}/out.0").read_text())
    base = {r["overlap"]: r["sec_per_iter"] for r in rows if not r["gbps"]}
    for row in rows:
        row.update(netG=cfg.netG, crop_size=cfg.crop_size, grad_compression=cfg.grad_compression,
                   exposed_sec=row["sec_per_iter"] - base[True])
        link = f"{row['gbps']:g} Gb/s" if row["gbps"] else "loopback"
        model = ", ".join(f"{g} Gb/s {v:.3f} s" for g, v in row["modelled_exposed_sec"].items())
        print(f"{link:>10}, {'overlapped' if row['overlap'] else 'after backward':>14}: "
              f"{row['sec_per_iter']:.3f} s/iter ({row['exposed_sec']:+.3f} s against the loopback, overlapped); "
              f"buckets sent {row['median_bucket_sent_before_backward_end_sec']:.3f} s before backward's end "
              f"(median), transfers left after it by the model: {model}")
        print(json.dumps(row), flush=True)
    return rows
