"""The ``cyclegan`` command: train, test, eval, bench and data, with the reference's flag names."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from . import config as config_mod
from .checkpoint import CheckpointError
from .config import TEST_DEFAULTS, ConfigError
from .data import DataError


def _train(args) -> int:
    from .train import Trainer
    cfg = config_mod.from_args(args)
    if cfg.distributed:
        from .distributed.train import run
        result = run(cfg, given={k for k in vars(args) if k in config_mod.FIELDS})
    else:
        result = Trainer(cfg).run()
    _print_result(result)
    return 0


def _print_result(result: dict) -> None:
    if result.get("skipped_images"):
        print(f"skipped {result['skipped_images']} unreadable image(s)")
    if "eval" in result:
        e = result["eval"]
        print(f"eval: L1 to the ideal translation {e['l1']:.4f} (identity {e['identity_l1']:.4f}), "
              f"PSNR {e['psnr']:.2f} dB (identity {e['identity_psnr']:.2f} dB); lower L1 is better")
    print(json.dumps(result))


def _test_config(args):
    """Test-time options: the reference's test defaults (over a config file's training values unless given
    as flags); load_size follows crop_size unless given as a flag; without --dataroot, the built-in pair."""
    import dataclasses

    from .data import resolve_dataroot
    cfg = config_mod.from_args(args, defaults=TEST_DEFAULTS)
    # A config file (a run's train_opt.yaml, say) holds training-time values of these: test-time ones
    # apply unless given as flags.
    given = vars(args)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in TEST_DEFAULTS.items() if k not in given})
    if "load_size" not in given:
        cfg = dataclasses.replace(cfg, load_size=cfg.crop_size)
    return dataclasses.replace(cfg, dataroot=resolve_dataroot(cfg))


def _deploy_config(args) -> tuple[config_mod.Config, set[str]]:
    """The test-time options of `cyclegan test` (its preprocessing), without its dataset; and the
    options given as flags (they win over a run's own)."""
    import dataclasses
    given = set(vars(args)) & set(config_mod.FIELDS)
    cfg = config_mod.from_args(args, defaults=TEST_DEFAULTS)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in TEST_DEFAULTS.items() if k not in given})
    if "load_size" not in given:
        cfg = dataclasses.replace(cfg, load_size=cfg.crop_size)
    return cfg, given


def _export(args) -> int:
    from .export import ParityError, export
    cfg, given = _deploy_config(args)
    try:
        written = export(cfg, args.generator, args.out, given=given, input_uri=args.input)
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {', '.join(m['file'] for m in written)} into {args.out} (each with a .json beside it)")
    return 0


def _translate(args) -> int:
    from .deploy import translate
    cfg, given = _deploy_config(args)
    runner = None
    if cfg.max_workers > 0:  # Ray Data: tasks read and write, an actor pool translates
        from .distributed.translate import translate_on_ray as runner
    report = translate(cfg, args.generator, args.input, args.output, given=given, runner=runner)
    print(f"translated {report['translated']} image(s) into {args.output} ({report['already_done']} already there, "
          f"{report['skipped']} undecodable skipped), {report['images_per_sec']:.1f} images/s")
    print(json.dumps(report), flush=True)
    return 0


def _test(args) -> int:
    from .translate import run_test
    cfg = _test_config(args)
    page = run_test(cfg)
    print(f"results: {page}")
    return 0


def _eval(args) -> int:
    from .evaluate import Scorer, has_ideal
    from .model import CycleGAN
    from .translate import load_weights
    cfg = _test_config(args)
    model = CycleGAN(cfg, train=False)
    for name in ("G_A", "G_B"):
        load_weights(cfg, getattr(model, name), name)
    metric = args.metric or ("l1" if has_ideal(cfg.dataroot) else "fid")
    try:
        scorer = Scorer(cfg, metric, args.feature_extractor, args.eval_images, device=model.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    result = scorer(model.G_A, model.G_B)
    if metric in ("l1", "psnr"):
        print(f"L1 to the ideal translation {result['l1']:.4f} (identity {result['identity_l1']:.4f}), "
              f"PSNR {result['psnr']:.2f} dB (identity {result['identity_psnr']:.2f} dB)")
    else:
        print(f"FID {result['fid']:.3f} (AtoB {result['fid_AtoB']:.3f}, BtoA {result['fid_BtoA']:.3f}), "
              f"KID {result['kid']:.5f} ({args.feature_extractor} features, {args.eval_images} images at most)")
    print(json.dumps(result))
    return 0


def _sweep(args) -> int:
    from .distributed.report import table
    from .distributed.sweep import sweep
    from .experiment import load_experiment, resumed_experiment
    if bool(args.experiment) == bool(args.resume):
        raise ConfigError("sweep: give an experiment file, or --resume <storage_path>/<sweep name>")
    exp = resumed_experiment(args.resume) if args.resume else load_experiment(args.experiment)
    sweep(exp, resume=bool(args.resume), address=args.address)
    print(table(exp.uri))
    print(f"sweep: {exp.uri}  (tensorboard --logdir {exp.uri}; cyclegan report {exp.uri})")
    return 0


def _report(args) -> int:
    from .distributed.report import table, write_report
    page = write_report(args.sweep, out=args.out, top=args.top, images=args.images)
    print(table(args.sweep))
    print(f"report: {page}")
    return 0


def _bench(args) -> int:
    if args.sweep:
        from .distributed.sweep import bench
        from .experiment import load_experiment
        bench(load_experiment(args.sweep))
        return 0
    cfg = config_mod.from_args(args)
    if args.link_gbps:
        from .bench import bench_link
        bench_link(cfg, [float(g) for g in args.link_gbps.split(",")], args.warmup, args.iters)
        return 0
    if args.export:
        from .export import bench as bench_export
        bench_export(config_mod.from_args(args, defaults=TEST_DEFAULTS), args.warmup, args.iters)
        return 0
    if args.ingest:
        from .distributed.bench_data import bench_ingest
        bench_ingest(cfg)
        return 0
    if args.data:
        from .distributed.bench_data import bench_data
        bench_data(cfg, args.data, batch_size=args.data_batch_size)
        return 0
    from .bench import main as bench_main
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    if batch_sizes is not None and min(batch_sizes) < 1:
        raise ConfigError(f"batch_sizes: {args.batch_sizes!r} must be positive integers")
    bench_main(cfg, args.warmup, args.iters, matrix=args.matrix, batch_sizes=batch_sizes)
    return 0


def _synth(args) -> int:
    from .synth import write_pair
    out = write_pair(args.pair, args.out, size=args.size, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    print(f"wrote built-in pair {args.pair!r} to {out}")
    return 0


def _download(args) -> int:
    from .datasets import download
    where = download(args.name, args.out, base_url=args.url)
    print(f"dataset {args.name!r} is in {where}")
    return 0


def _upload(args) -> int:
    from .datasets import upload
    count = upload(args.folder, args.uri)
    print(f"copied {count} files to {args.uri}")
    return 0


def _watch_preemption(args) -> int:
    from .distributed.preemption import watch
    notice = watch(args.provider, address=args.address, node_id=args.node_id, metadata_url=args.metadata_url,
                   poll_s=args.poll_s, grace_period_s=args.grace_period_s, hold_s=args.hold_s,
                   drain_on_rebalance=args.drain_on_rebalance)
    print(f"preemption notice: {notice.what}" if notice else "stopped without a notice")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .synth import PAIRS
    parser = argparse.ArgumentParser(prog="cyclegan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a CycleGAN (reference train.py flags)")
    config_mod.add_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("test", help="translate test images into results/<name>/<phase>_<epoch>/ (test.py flags)")
    config_mod.add_arguments(p, TEST_DEFAULTS)
    p.set_defaults(func=_test)

    p = sub.add_parser("translate", help="translate every image of a folder or s3:// prefix with a trained "
                                         "generator (Ray Data with --num_workers N)")
    config_mod.add_arguments(p, TEST_DEFAULTS)
    p.add_argument("--generator", required=True, help="a run folder, a sweep report's best/ folder, or a .pth "
                                                      "weights file (then --netG etc. say its architecture)")
    p.add_argument("--input", required=True, help="folder or s3://, gs:// prefix of images")
    p.add_argument("--output", required=True, help="folder or prefix for the outputs (same relative names)")
    p.set_defaults(func=_translate)

    p = sub.add_parser("export", help="a run's, a sweep report's or a published file's generators as ONNX and "
                                      "TorchScript, each checked against PyTorch (pip install 'cyclegan[export]')")
    config_mod.add_arguments(p, TEST_DEFAULTS)
    p.add_argument("--generator", required=True, help="a run folder or a sweep report's best/ folder (G_A and G_B), "
                                                      "or a .pth weights file (then --netG etc. say its architecture)")
    p.add_argument("--out", required=True, help="folder or s3://, gs:// prefix for the files")
    p.add_argument("--input", help="folder or prefix of images to check the exports on, or a dataset root (G_A "
                                   "checked on its testA, G_B on its testB); default: noise images")
    p.set_defaults(func=_export)

    p = sub.add_parser("eval", help="score a run: L1/PSNR to the ideal translation (built-in pairs) or FID/KID")
    config_mod.add_arguments(p, TEST_DEFAULTS)
    p.set_defaults(func=_eval)

    p.add_argument("--metric", choices=("l1", "psnr", "fid", "kid"),
                   help="l1/psnr to the ideal translation (built-in pairs, the default there) or fid/kid")
    p.add_argument("--feature_extractor", default="inception",
                   help="features for fid/kid: inception (the standard protocol), tiny, or package.module:callable")
    p.add_argument("--eval_images", type=int, default=100, help="test images per direction (default: 100)")

    p = sub.add_parser("sweep", help="hyperparameter search with Ray Tune + Optuna over one or more domain pairs")
    p.add_argument("experiment", nargs="?", help="experiment YAML (see experiments/sweep.yaml)")
    p.add_argument("--resume", metavar="SWEEP", help="continue a sweep after its driver died: "
                                                      "<storage_path>/<sweep name>")
    p.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("report", help="HTML page and table of a sweep's best trials; exports each pair's best")
    p.add_argument("sweep", help="<storage_path>/<sweep name> (folder or s3://)")
    p.add_argument("--out", help="output folder (default: <sweep>/report, or ./reports/<name> for s3://)")
    p.add_argument("--top", type=int, default=3, help="trials shown side by side per pair (default: 3)")
    p.add_argument("--images", type=int, default=4, help="test images per direction (default: 4)")
    p.set_defaults(func=_report)

    p = sub.add_parser("bench", help="seconds per training iteration on random tensors")
    config_mod.add_arguments(p)
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: 3)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations; the median is reported (default: 10)")
    p.add_argument("--data", metavar="URI", help="instead: images/s of read+decode+crop+flip from this folder or "
                                                  "s3:// prefix, Ray Data against a DataLoader with PIL")
    p.add_argument("--sweep", metavar="EXPERIMENT", help="instead: per-trial overhead of this sweep, run one "
                                                         "trial at a time into a temporary folder")
    p.add_argument("--ingest", action="store_true", help="instead: the Ray Train run these options describe "
                                                         "(--num_workers N, --data_ingest ...), on streamed data and "
                                                         "on batches held in memory: images/s and data waits")
    p.add_argument("--export", action="store_true", help="instead: this generator (initial weights) exported "
                                                         "as ONNX and TorchScript: export seconds, and images/s of "
                                                         "PyTorch, TorchScript, ONNX Runtime at --crop_size, batch 1 "
                                                         "and --batch_size")
    p.add_argument("--link_gbps", metavar="G,G,...", help="instead: two processes on this machine averaging "
                                                          "gradients over a simulated link of each bandwidth, "
                                                          "overlapped with backward and after it")
    p.add_argument("--data_batch_size", type=int, default=32, help="batch size for --data (default: 32)")
    p.add_argument("--matrix", action=argparse.BooleanOptionalAction, default=None,
                   help="fp32 and bf16, eager and compiled, one JSON line each with peak GPU memory "
                        "(default: on for CUDA, off on CPU)")
    p.add_argument("--batch_sizes", metavar="N,N,...", help="run the matrix for each of these batch sizes, "
                                                              "e.g. 1,4,8,16")
    p.set_defaults(func=_bench)

    p = sub.add_parser("data", help="datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("synth", help="write a built-in domain pair (offline, deterministic)")
    s.add_argument("pair", choices=sorted(PAIRS), help="; ".join(f"{k}: {v[2]}" for k, v in PAIRS.items()))
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--size", type=int, default=64, help="image size in pixels (default: 64)")
    s.add_argument("--n_train", type=int, default=200, help="training images per domain (default: 200)")
    s.add_argument("--n_test", type=int, default=20, help="test images per domain (default: 20)")
    s.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    s.set_defaults(func=_synth)
    from .datasets import DATASETS
    d = data_sub.add_parser("download", help="fetch a standard CycleGAN dataset by name (the published zip)")
    d.add_argument("name", choices=DATASETS)
    d.add_argument("--out", required=True, help="parent folder or s3:// prefix; the dataset lands in <out>/<name>")
    d.add_argument("--url", help="base URL of the zips (default: $CYCLEGAN_DATASETS_URL or the published site)")
    d.set_defaults(func=_download)
    u = data_sub.add_parser("upload", help="copy a local dataset (trainA, trainB, testA, testB) to s3:// or gs://")
    u.add_argument("folder")
    u.add_argument("uri")
    u.set_defaults(func=_upload)

    p = sub.add_parser("cluster", help="node-side helpers for Ray clusters")
    cluster_sub = p.add_subparsers(dest="cluster_command", required=True)
    w = cluster_sub.add_parser("watch-preemption", help="drain this Ray node (reason: preemption, with the time left) "
                                                        "when the cloud announces that it will be reclaimed")
    w.add_argument("--provider", required=True, choices=("aws", "gcp", "kubernetes"),
                   help="aws/gcp: poll the instance metadata; kubernetes: drain now (the worker pod's preStop hook)")
    w.add_argument("--address", help="the Ray cluster (default: the one this node belongs to)")
    w.add_argument("--node_id", help="the Ray node to drain, in hex (default: the one on this machine)")
    w.add_argument("--metadata_url", help="instance metadata service (default: the cloud's own)")
    w.add_argument("--poll_s", type=float, default=5.0, help="seconds between polls (default: 5)")
    w.add_argument("--grace_period_s", type=float, default=25.0,
                   help="seconds left after a SIGTERM or a pod termination (default: 25)")
    w.add_argument("--hold_s", type=float, default=None,
                   help="after draining, wait this long before returning (kubernetes: Ray stays up meanwhile)")
    w.add_argument("--drain_on_rebalance", action="store_true",
                   help="AWS: drain on a rebalance recommendation too, not only on the interruption notice")
    w.set_defaults(func=_watch_preemption)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"{cat.__name__}: {msg}\n"
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, CheckpointError, DataError) as e:  # the user's input: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
