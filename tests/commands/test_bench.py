"""cyclegan bench: one JSON line with the fast-step options it ran, the matrix of precisions, compilation
and batch sizes it covers, and the simulated slow link that carries each gradient once a step."""
from __future__ import annotations

import json

from cyclegan.cli import main
from cyclegan.commands.bench.link import bench_link, modelled_exposure
from cyclegan.commands.bench.step import matrix_configs
from cyclegan.core.config import from_dict
from cyclegan.core.model import CycleGAN

TINY_NETS = dict(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=24, load_size=24, pool_size=2, device="cpu")


def test_bench_prints_one_json_line_with_the_options(capsys):
    args = ["bench", "--device", "cpu", "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--crop_size", "24",
            "--load_size", "24", "--warmup", "1", "--iters", "2", "--fused_adam"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"sec_per_iter", "images_per_sec", "amp", "compile", "fused_adam", "batch_size", "crop_size",
            "peak_gpu_mem_bytes", "first_iter_sec", "losses_finite"} <= set(result)
    assert result["fused_adam"] is True and result["compile"] == "none" and result["losses_finite"] is True
    assert result["peak_gpu_mem_bytes"] is None and result["device"] == "cpu"


def test_bench_matrix_covers_precisions_compilation_and_batch_sizes(capsys):
    cfg = from_dict(dict(TINY_NETS, device="cuda", crop_size=256, load_size=286))
    rows = [(c.batch_size, c.amp, c.compile) for c in matrix_configs(cfg, [1, 4, 8, 16])]
    assert rows == [(b, amp, comp) for b in (1, 4, 8, 16) for amp in ("none", "bf16") for comp in ("none", "networks")]
    assert main(["bench", "--device", "cpu", "--batch_sizes", "1,0"]) == 2
    assert "batch_sizes: '1,0'" in capsys.readouterr().err


def test_the_slow_link_benchmark_sends_every_gradient_once_per_step(capsys):
    """`cyclegan bench --link_gbps`: the simulated link carries each optimizer's gradients once a step,
    and a step that sends them after backward waits at least their time on the link."""
    cfg = from_dict(dict(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=24, load_size=24, device="cpu"))
    rows = bench_link(cfg, [0.05], warmup=0, iters=1)
    params = sum(p.numel() for p in CycleGAN(cfg).parameters())
    assert [(r["gbps"], r["overlap"]) for r in rows] == [(0.0, True), (0.0, False), (0.05, True), (0.05, False)]
    slow = [r for r in rows if r["gbps"]]
    assert all(r["bytes_per_iter"] == 4 * params for r in slow)  # fp32, all four networks
    assert slow[1]["sec_per_iter"] >= 4 * params * 8 / 0.05e9
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")] == rows


def test_the_link_model_queues_buckets_from_when_they_were_sent():
    mb = 125_000_000  # 0.1 s at 10 Gb/s
    # Sent 0.15 s and 0 s before backward's end: the first is through before the end, the second is not.
    assert abs(modelled_exposure([[(0.15, mb), (0.0, mb)]], 10, passes_per_iter=1) - 0.1) < 1e-9
    # Both sent early but queued: the second waits for the first (0.2 s of transfers from 0.15 s before).
    assert abs(modelled_exposure([[(0.15, mb), (0.14, mb)]], 10, passes_per_iter=1) - 0.05) < 1e-9
    # Two passes an iteration (generators, then discriminators), averaged over the passes recorded.
    assert abs(modelled_exposure([[(0.0, mb)], [(0.0, mb)]], 10) - 0.2) < 1e-9
