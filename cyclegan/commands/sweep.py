"""``cyclegan sweep``: a hyperparameter search with Ray Tune and Optuna over one or more domain pairs, as an
experiment file describes it (see experiments/sweep.yaml); --resume continues one whose driver died."""
from __future__ import annotations

import argparse
import dataclasses

from ..core.config import ConfigError
from . import COMMANDS


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help=COMMANDS["sweep"], description=__doc__)
    p.add_argument("experiment", nargs="?", help="experiment YAML (see experiments/sweep.yaml)")
    p.add_argument("--resume", metavar="SWEEP", help="continue a sweep after its driver died: "
                                                      "<storage_path>/<sweep name>")
    p.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--storage_options", metavar="JSON", help="with --resume: where the sweep's store is, "
                   '{"endpoint_url": ..., "region": ...} (default: the AWS_* variables; never what the stored '
                   "experiment says, which anyone who can write the bucket may have written); credentials come "
                   "from this machine")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.experiment import load_experiment, parse_location, resumed_experiment
    from ..core.storage import Storage
    from ..distributed.sweep import sweep
    from .report import table
    if bool(args.experiment) == bool(args.resume):
        raise ConfigError("sweep: give an experiment file, or --resume <storage_path>/<sweep name>")
    if args.storage_options and not args.resume:
        raise ConfigError("storage_options: put it in the experiment file (the flag is for --resume)")
    if args.resume:
        import json
        try:
            given = parse_location(json.loads(args.storage_options or "{}"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"storage_options: not a JSON object ({e.msg})") from None
        exp = dataclasses.replace(resumed_experiment(args.resume, Storage.from_options(given)), storage_options=given)
    else:
        exp = load_experiment(args.experiment)
    sweep(exp, resume=bool(args.resume), address=args.address)
    print(table(exp.uri))
    print(f"sweep: {exp.uri}  (tensorboard --logdir {exp.uri}; cyclegan report {exp.uri})")
    return 0
