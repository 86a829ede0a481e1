"""``cyclegan bench --device_check``: what to run first when a GPU machine is lent, with no Ray there.

The Ray layer never runs on the lent machine (it has no Ray), so what its GPU paths rest on is checked
here, in the core, one JSON line per check (``"ok"`` true or false, with the error):
- ``train_step``: a few training steps at --crop_size in fp32, bf16 and fp16 (with the gradient scaler;
  CUDA only), eager and compiled (compiled: on CUDA, or with --compile on CPU): finite losses, s/iter;
- ``collectives``: the workers' flags all-reduce (``parallel.agree``) and the bucketed gradient sync over
  a process group of world size 1 (NCCL on CUDA, gloo on CPU; no port: an in-process store);
- ``resume_cpu_checkpoint``: a training state written on the CPU and read back with weights_only, loaded
  on this device, then a step;
- ``onnx``: the generator exported as ``cyclegan export`` does, run by ONNX Runtime with this device's
  execution provider, against PyTorch on this device.
The suite runs it with --device cpu, so it cannot rot before the day a device is lent.
"""
from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from ...core import checkpoint as ckpt
from ...core.config import Config, validate
from ...core.model import CycleGAN
from ...core.parallel import GradientSync, agree, resolve_device


def _images(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch_size, cfg.input_nc, cfg.crop_size, cfg.crop_size)
    return (torch.rand(shape, generator=g) * 2 - 1).to(device), (torch.rand(shape, generator=g) * 2 - 1).to(device)


def _steps(model: CycleGAN, cfg: Config, n: int) -> dict:
    real_A, real_B = _images(cfg, model.device)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        losses = model.optimize(real_A, real_B)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        times.append(time.perf_counter() - t0)
    finite = all(bool(torch.isfinite(v)) for v in losses.values())
    if not finite:
        raise FloatingPointError(f"losses not finite: { {k: float(v) for k, v in losses.items()} }")
    return {"first_iter_sec": round(times[0], 4), "sec_per_iter": round(min(times[1:] or times), 4)}


def train_steps(cfg: Config, steps: int) -> list[tuple[str, dict, Callable[[], dict]]]:
    device = resolve_device(cfg.device)
    compiled = cfg.compile if cfg.compile != "none" else ("networks" if device.type == "cuda" else None)
    checks = []
    for amp in ("none", "bf16", "fp16"):
        for mode in ("none", compiled) if compiled else ("none",):
            one = dataclasses.replace(cfg, amp=amp, compile=mode)
            where = {"amp": amp, "compile": mode}
            if amp == "fp16" and device.type != "cuda":
                checks.append(("train_step", {**where, "skipped": "fp16 needs CUDA"}, None))
                continue
            checks.append(("train_step", where, lambda one=one: _steps(CycleGAN(validate(one)), one, steps)))
    return checks


def collectives(cfg: Config) -> dict:
    import torch.distributed as dist
    device = resolve_device(cfg.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                            device_id=device if device.type == "cuda" else None)
    try:
        flags = agree([True, False], device, collective=True)
        if flags != [True, False]:
            raise AssertionError(f"agree gave {flags}")
        # A gradient sync set up to average over 2 processes, on a group of 1: the all-reduce path runs,
        # and each gradient comes back halved.
        net = torch.nn.Conv2d(3, 4, 3).to(device)
        sync = GradientSync(net.parameters(), world_size=2, bucket_mb=0.0001)
        net(torch.ones(1, 3, 8, 8, device=device)).sum().backward()
        before = [p.grad.clone() for p in net.parameters()]
        sync.finish()
        halved = all(torch.allclose(p.grad, b / 2) for p, b in zip(net.parameters(), before))
        if not halved:
            raise AssertionError("gradients did not come back averaged")
        return {"backend": backend, "buckets": len(sync.buckets)}
    finally:
        dist.destroy_process_group()


def resume_cpu_checkpoint(cfg: Config) -> dict:
    cpu = dataclasses.replace(cfg, device="cpu", amp="none", compile="none")
    written = CycleGAN(validate(cpu))
    _steps(written, cpu, 1)
    buffer = io.BytesIO()
    torch.save(ckpt.state_payload({"model": written.training_state(), "rng": ckpt.rng_state()}), buffer)
    state = ckpt.load_state(buffer.getvalue(), "a CPU-written state")  # weights_only, as every load
    here = CycleGAN(validate(dataclasses.replace(cfg, amp="none", compile="none")))
    here.load_training_state(state["model"])
    ckpt.set_rng_state(state["rng"])
    same = all(torch.equal(a.cpu(), b) for a, b in zip(here.G_A.state_dict().values(),
                                                      written.G_A.state_dict().values()))
    if not same:
        raise AssertionError("weights differ after loading")
    return {"bytes": len(buffer.getvalue()), **_steps(here, cfg, 1)}


def onnx_on_device(cfg: Config) -> dict:
    import onnxruntime as ort

    from ..export import export
    device = resolve_device(cfg.device)
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"ONNX Runtime {ort.__version__} has no {provider} (it has {ort.get_available_providers()})")
    from ...core.networks import define_G
    net = define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, cfg.norm, False).eval()
    with tempfile.TemporaryDirectory(prefix="cyclegan-device-check-") as folder:
        weights = Path(folder) / "latest_net_G.pth"
        torch.save(net.state_dict(), weights)
        exported = dataclasses.replace(cfg, export_format="onnx", device="cpu")
        export(exported, str(weights), f"{folder}/out", given={"netG", "ngf", "norm", "crop_size"})
        data = (Path(folder) / "out" / "G.onnx").read_bytes()
    session = ort.InferenceSession(data, providers=[provider])
    x = _images(cfg, torch.device("cpu"))[0]
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        expected = net.to(device)(x.to(device)).cpu()
    difference = float((got - expected).abs().max())
    if not difference <= 1e-3:
        raise AssertionError(f"ONNX Runtime ({provider}) differs from PyTorch on {device} by {difference:.3g}")
    return {"provider": session.get_providers()[0], "max_abs_difference": difference}


def run_checks(cfg: Config, steps: int = 3) -> bool:
    """Every check, one JSON line each; whether all passed."""
    device = resolve_device(cfg.device)
    checks = train_steps(cfg, steps) + [("collectives", {}, lambda: collectives(cfg)),
                                        ("resume_cpu_checkpoint", {}, lambda: resume_cpu_checkpoint(cfg)),
                                        ("onnx", {}, lambda: onnx_on_device(cfg))]
    passed = True
    for name, where, check in checks:
        line = {"check": name, **where, "device": str(device), "netG": cfg.netG, "crop_size": cfg.crop_size}
        if check is None:
            line["ok"] = None
        else:
            try:
                line.update(check())
                line["ok"] = True
            except Exception as e:  # a failed check is a line that says why; the others still run
                line.update(ok=False, error=f"{type(e).__name__}: {e}",
                            where=traceback.extract_tb(e.__traceback__)[-1].filename.rsplit("/", 2)[-1])
                passed = False
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                torch._dynamo.reset()
        print(json.dumps(line), flush=True)
    return passed
