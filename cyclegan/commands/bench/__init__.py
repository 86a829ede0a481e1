"""``cyclegan bench``: figures, printed as JSON lines, never asserted. One module per mode: ``step`` (seconds
per training iteration on random tensors; the fp32/bf16 x eager/compiled matrix), ``link`` (gradient
averaging over a simulated slow link), ``export`` (exported generators' speed), ``data`` (Ray Data against
a DataLoader), ``ingest`` (a Ray Train run on streamed data against batches in memory), ``restart`` (a
Ray Train run's restart after a killed worker), ``sweep`` (a
sweep's overhead per trial), ``device_check`` (what to run first on a lent GPU). Takes the training options: each mode times what ``cyclegan train`` would do."""
from __future__ import annotations

import argparse

from .. import COMMANDS
from ..options import add_arguments, from_args


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help=COMMANDS["bench"], description=__doc__)
    add_arguments(p, "bench")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: 3)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations; the median is reported (default: 10)")
    p.add_argument("--matrix", action=argparse.BooleanOptionalAction, default=None,
                   help="fp32 and bf16, eager and compiled, one JSON line each with peak GPU memory "
                        "(default: on for CUDA, off on CPU)")
    p.add_argument("--batch_sizes", metavar="N,N,...", help="run the matrix for each of these batch sizes, "
                                                              "e.g. 1,4,8,16")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--data", metavar="URI", help="instead: images/s of read+decode+crop+flip from this folder "
                                                      "or s3:// prefix, Ray Data against a DataLoader with PIL")
    modes.add_argument("--sweep", metavar="EXPERIMENT", help="instead: per-trial overhead of this sweep, run one "
                                                             "trial at a time into a temporary folder")
    modes.add_argument("--population", metavar="EXPERIMENT", help="instead: this sweep with Optuna + ASHA, Optuna "
                                                                  "alone and population-based training (pbt), same "
                                                                  "trials, epochs and seeds, --repeats times: each "
                                                                  "pair's best final score")
    modes.add_argument("--ingest", action="store_true", help="instead: the Ray Train run these options describe "
                                                             "(--num_workers N, --data_ingest ...), on streamed data "
                                                             "and on batches held in memory: images/s and data waits")
    modes.add_argument("--restart", action="store_true", help="instead: the Ray Train run these options describe "
                                                              "(--num_workers N), one worker killed after the third "
                                                              "checkpoint: seconds to the new group's process group, "
                                                              "restore and first checkpoint, and each process's CPU "
                                                              "seconds meanwhile; --repeats times")
    modes.add_argument("--export", action="store_true", help="instead: this generator (initial weights) exported "
                                                             "as ONNX and TorchScript: export seconds, and images/s "
                                                             "of PyTorch, TorchScript, ONNX Runtime at --crop_size, "
                                                             "batch 1 and --batch_size")
    modes.add_argument("--device_check", action="store_true",
                       help="instead: the checks to run first on a lent GPU (no Ray needed), one JSON line each: "
                            "training steps in fp32/bf16/fp16, eager and compiled; the flags and gradient "
                            "collectives on a process group of one; a CPU checkpoint resumed here; ONNX Runtime "
                            "on this device; exits 1 if one fails")
    modes.add_argument("--link_gbps", metavar="G,G,...", help="instead: two processes on this machine averaging "
                                                              "gradients over a simulated link of each bandwidth, "
                                                              "overlapped with backward and after it")
    p.add_argument("--data_batch_size", type=int, default=32, help="batch size for --data (default: 32)")
    p.add_argument("--repeats", type=int, default=3, help="for --population: runs of each (seed + 0, 1, ...); for "
                                                          "--restart: runs")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...core.config import TEST_DEFAULTS, ConfigError
    if args.sweep:
        from ...core.experiment import load_experiment
        from .sweep import bench
        bench(load_experiment(args.sweep))
        return 0
    if args.population:
        from ...core.experiment import load_experiment
        from .population import bench
        bench(load_experiment(args.population), args.repeats)
        return 0
    if args.export:
        from .export import bench
        bench(from_args(args, defaults=TEST_DEFAULTS), args.warmup, args.iters)
        return 0
    cfg = from_args(args)
    if args.device_check:
        from .device_check import run_checks
        return 0 if run_checks(cfg, steps=max(2, args.iters)) else 1
    if args.link_gbps:
        from .link import bench_link
        bench_link(cfg, [float(g) for g in args.link_gbps.split(",")], args.warmup, args.iters)
    elif args.restart:
        from .restart import bench_restart
        bench_restart(cfg, args.repeats)
    elif args.ingest:
        from .ingest import bench_ingest
        bench_ingest(cfg)
    elif args.data:
        from .data import bench_data
        bench_data(cfg, args.data, batch_size=args.data_batch_size)
    else:
        from .step import main
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
        if batch_sizes is not None and min(batch_sizes) < 1:
            raise ConfigError(f"batch_sizes: {args.batch_sizes!r} must be positive integers")
        main(cfg, args.warmup, args.iters, matrix=args.matrix, batch_sizes=batch_sizes)
    return 0
