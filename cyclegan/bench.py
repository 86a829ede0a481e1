"""``cyclegan bench``: seconds per training iteration on random tensors (no data loading)."""
from __future__ import annotations

import json
import statistics
import time

import torch

from .config import Config
from .model import CycleGAN


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_step(cfg: Config, warmup: int = 3, iters: int = 10) -> dict:
    model = CycleGAN(cfg)
    device = model.device
    g = torch.Generator().manual_seed(cfg.seed)
    shape_A = (cfg.batch_size, cfg.input_nc, cfg.crop_size, cfg.crop_size)
    shape_B = (cfg.batch_size, cfg.output_nc, cfg.crop_size, cfg.crop_size)
    real_A = (torch.rand(shape_A, generator=g) * 2 - 1).to(device)
    real_B = (torch.rand(shape_B, generator=g) * 2 - 1).to(device)
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        model.optimize(real_A, real_B)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            print(f"iter {i - warmup + 1}/{iters}: {times[-1]:.4f} s", flush=True)
    sec = statistics.median(times)
    return {"sec_per_iter": sec, "images_per_sec": cfg.batch_size / sec, "netG": cfg.netG, "netD": cfg.netD,
            "ngf": cfg.ngf, "crop_size": cfg.crop_size, "batch_size": cfg.batch_size, "device": str(device),
            "amp": cfg.amp if device.type == "cuda" else "none", "channels_last": cfg.channels_last,
            "torch_threads": torch.get_num_threads(), "warmup": warmup, "iters": iters,
            "min_sec_per_iter": min(times)}


def main(cfg: Config, warmup: int, iters: int) -> dict:
    result = bench_step(cfg, warmup, iters)
    print(f"median {result['sec_per_iter']:.4f} s/iter, {result['images_per_sec']:.2f} images/s "
          f"({cfg.netG}, {cfg.crop_size}px, batch {cfg.batch_size}, {result['device']}, amp {result['amp']})")
    print(json.dumps(result), flush=True)
    return result
