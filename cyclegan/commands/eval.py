"""``cyclegan eval``: score a run's generators: L1 and PSNR to the ideal translations of a built-in pair, or
FID/KID against the other domain's test images."""
from __future__ import annotations

import argparse
import dataclasses
import json

from ..core.config import TEST_DEFAULTS, ConfigError
from . import COMMANDS
from .options import add_arguments, test_time_config


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help=COMMANDS["eval"], description=__doc__)
    add_arguments(p, "eval", TEST_DEFAULTS)
    p.add_argument("--metric", choices=("l1", "psnr", "fid", "kid"),
                   help="l1/psnr to the ideal translation (built-in pairs, the default there) or fid/kid")
    p.add_argument("--feature_extractor", default="inception",
                   help="features for fid/kid: inception (the standard protocol), tiny, or package.module:callable")
    p.add_argument("--eval_images", type=int, default=100, help="test images per direction (default: 100)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.data import resolve_dataroot
    from ..core.evaluate import Scorer, has_ideal
    from ..core.inference import load_weights
    from ..core.model import CycleGAN
    cfg, _ = test_time_config(args)
    cfg = dataclasses.replace(cfg, dataroot=resolve_dataroot(cfg))
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
