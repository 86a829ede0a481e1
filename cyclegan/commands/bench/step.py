"""``cyclegan bench``: seconds per training iteration on random tensors (no data loading).

One configuration by default; ``--matrix`` (the default on CUDA) runs fp32 and bf16, eager and
compiled, for each of ``--batch_sizes``, one JSON line per configuration with the peak GPU memory.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import statistics
import time
from typing import Optional

import torch

from ...core.config import Config, validate
from ...core.model import CycleGAN


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_step(cfg: Config, warmup: int = 3, iters: int = 10, verbose: bool = True) -> dict:
    model = CycleGAN(cfg)
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    g = torch.Generator().manual_seed(cfg.seed)
    shape_A = (cfg.batch_size, cfg.input_nc, cfg.crop_size, cfg.crop_size)
    shape_B = (cfg.batch_size, cfg.output_nc, cfg.crop_size, cfg.crop_size)
    real_A = (torch.rand(shape_A, generator=g) * 2 - 1).to(device)
    real_B = (torch.rand(shape_B, generator=g) * 2 - 1).to(device)
    times = []
    first = 0.0
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        losses = model.optimize(real_A, real_B)
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0  # includes compilation when compiling
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            if verbose:
                print(f"iter {i - warmup + 1}/{iters}: {times[-1]:.4f} s", flush=True)
    finite = all(bool(torch.isfinite(v)) for v in losses.values())
    sec = statistics.median(times)
    return {"sec_per_iter": sec, "images_per_sec": cfg.batch_size / sec, "netG": cfg.netG, "netD": cfg.netD,
            "ngf": cfg.ngf, "crop_size": cfg.crop_size, "batch_size": cfg.batch_size, "device": str(device),
            "amp": cfg.amp, "compile": cfg.compile, "channels_last": cfg.channels_last,
            "fused_adam": cfg.fused_adam, "cudnn_benchmark": cfg.cudnn_benchmark,
            "torch_threads": torch.get_num_threads(), "warmup": warmup, "iters": iters,
            "min_sec_per_iter": min(times), "first_iter_sec": first, "losses_finite": finite,
            "peak_gpu_mem_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}


def matrix_configs(cfg: Config, batch_sizes: Optional[list[int]] = None) -> list[Config]:
    """fp32 and bf16, eager and compiled (cfg.compile, or networks when it is none), per batch size."""
    compiled = cfg.compile if cfg.compile != "none" else "networks"
    configs = []
    for batch_size in batch_sizes or [cfg.batch_size]:
        for amp in ("none", "bf16"):
            for compile_mode in ("none", compiled):
                configs.append(validate(dataclasses.replace(cfg, batch_size=batch_size, amp=amp,
                                                            compile=compile_mode)))
    return configs


def run_matrix(cfg: Config, warmup: int, iters: int, batch_sizes: Optional[list[int]] = None) -> list[dict]:
    results = []
    for one in matrix_configs(cfg, batch_sizes):
        try:
            result = bench_step(one, warmup, iters, verbose=False)
        except torch.OutOfMemoryError:
            result = {"batch_size": one.batch_size, "amp": one.amp, "compile": one.compile,
                      "crop_size": one.crop_size, "error": "out of memory"}
        print(json.dumps(result), flush=True)
        results.append(result)
        torch._dynamo.reset()  # each compiled configuration starts from a clean cache
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def main(cfg: Config, warmup: int, iters: int, matrix: Optional[bool] = None,
         batch_sizes: Optional[list[int]] = None) -> dict | list[dict]:
    from ...core.parallel import resolve_device
    if matrix is None:
        matrix = resolve_device(cfg.device).type == "cuda"
    if matrix or batch_sizes:
        return run_matrix(cfg, warmup, iters, batch_sizes)
    result = bench_step(cfg, warmup, iters)
    print(f"median {result['sec_per_iter']:.4f} s/iter, {result['images_per_sec']:.2f} images/s "
          f"({cfg.netG}, {cfg.crop_size}px, batch {cfg.batch_size}, {result['device']}, amp {result['amp']}, "
          f"compile {cfg.compile})")
    print(json.dumps(result), flush=True)
    return result


# ---------------------------------------------------------------- a slow link between two processes


