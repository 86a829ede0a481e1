"""``cyclegan bench --export``: a generator (initial weights) exported as ONNX and TorchScript: export
seconds, and images/s of PyTorch, TorchScript and ONNX Runtime."""
from __future__ import annotations

import json

import numpy as np
import torch

from ...core.config import Config
from ...core.inference import GeneratorSpec, test_time
from ..export import FORMATS, describe, example_input


def bench(cfg: Config, warmup: int, iters: int) -> list[dict]:
    """``cyclegan bench --export``: this architecture (initial weights) exported both ways; seconds to
    export, and images/s of PyTorch, TorchScript and ONNX Runtime at crop_size, batch 1 and
    --batch_size, the median of ``iters`` timed runs; one JSON line each."""
    import time

    from ...core.networks import define_G
    spec = GeneratorSpec("(initial weights)", cfg, "G", cfg.input_nc, cfg.output_nc)
    net = test_time(define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, cfg.norm, not cfg.no_dropout),
                    cfg.eval, dropout=False)
    runners = {"pytorch": (net, f"PyTorch {torch.__version__}", 0.0)}
    for fmt, (suffix, make, load) in FORMATS.items():
        began = time.perf_counter()
        data, _ = make(net, example_input(spec), cfg.netG, describe(spec, fmt, f"G{suffix}"))
        run, runtime = load(data)
        runners[fmt] = (run, runtime, time.perf_counter() - began)
    rows = []
    for batch in sorted({1, cfg.batch_size}):
        x = torch.rand(batch, cfg.input_nc, cfg.crop_size, cfg.crop_size, generator=torch.Generator().manual_seed(0))
        x = x * 2 - 1
        with torch.no_grad():
            expected = net(x)
            for name, (run, runtime, export_seconds) in runners.items():
                times = []
                for i in range(warmup + iters):
                    began = time.perf_counter()
                    out = run(x)
                    if i >= warmup:
                        times.append(time.perf_counter() - began)
                seconds = float(np.median(times))
                row = {"format": name, "runtime": runtime, "netG": cfg.netG, "ngf": cfg.ngf, "norm": cfg.norm,
                       "size": cfg.crop_size, "batch": batch, "threads": torch.get_num_threads(),
                       "seconds_per_batch": round(seconds, 4), "images_per_sec": round(batch / seconds, 2),
                       "max_abs_difference": float((out - expected).abs().max()),
                       "export_seconds": round(export_seconds, 2)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows
