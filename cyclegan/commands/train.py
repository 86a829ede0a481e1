"""``cyclegan train``: train a CycleGAN with the reference's train.py flags, in this process or, with
--num_workers N (or data and storage in a bucket, --address, --resume), on Ray Train."""
from __future__ import annotations

import argparse
import dataclasses
import json

from . import COMMANDS
from .options import add_arguments, from_args


def add_parser(sub) -> None:
    p = sub.add_parser("train", help=COMMANDS["train"], description=__doc__)
    add_arguments(p, "train")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.config import FIELDS, check_trainable
    cfg = from_args(args)
    check_trainable(cfg)  # before a Ray cluster starts, too
    if cfg.distributed:
        from ..distributed.train import run as run_on_ray
        result = run_on_ray(cfg, given={k for k in vars(args) if k in FIELDS})
    else:
        from ..core.trainer import Trainer
        result = Trainer(rerun_local(cfg)).run()
    print_result(result)
    return 0


def rerun_local(cfg):
    """The rerun rule (core/rerun.py) for a run in this process: a run dir with a checkpoint is continued
    when the options are the same (or --continue_train is given), else refused naming the differences."""
    from ..core import checkpoint as ckpt
    from ..core.config import load_yaml
    from ..core.rerun import rerun_run
    run_dir, saved_file = cfg.run_dir, cfg.run_dir / "train_opt.yaml"
    saved = None
    if (ckpt.state_files(run_dir) or (run_dir / "latest_net_G_A.pth").exists()) and saved_file.exists():
        saved = load_yaml(saved_file)
    if rerun_run(cfg, str(run_dir), saved, explicit=cfg.continue_train):
        return dataclasses.replace(cfg, continue_train=True)
    return cfg


def print_result(result: dict) -> None:
    if result.get("skipped_images"):
        print(f"skipped {result['skipped_images']} unreadable image(s)")
    if "eval" in result:
        e = result["eval"]
        print(f"eval: L1 to the ideal translation {e['l1']:.4f} (identity {e['identity_l1']:.4f}), "
              f"PSNR {e['psnr']:.2f} dB (identity {e['identity_psnr']:.2f} dB); lower L1 is better")
    print(json.dumps(result))
