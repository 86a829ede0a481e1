"""The schema's options as command-line flags. Each command's parser gets the options that belong to it
(the ``commands`` of each ``Config`` field) and its ``--help`` lists only those; a flag of another command
is refused naming the commands that take it. Flags override a ``--config`` file, which overrides the
command's defaults, which override the schema's."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any, Optional

from ..core.config import FIELDS, HINTS, RUN, SCHEMA, TEST_DEFAULTS, Config, from_dict, load_yaml, with_suffix

log = logging.getLogger("cyclegan")

TENSORBOARD = "TensorBoard replaces it here: tensorboard --logdir <checkpoints_dir>"
# Flags of the reference's train.py/test.py that do nothing here, accepted so that old command lines run,
# each with what to use instead (printed as one warning line when given).
REFERENCE_ONLY_FLAGS = {
    "display_id": TENSORBOARD, "display_freq": TENSORBOARD, "display_ncols": TENSORBOARD,
    "display_server": TENSORBOARD, "display_env": TENSORBOARD, "display_port": TENSORBOARD,
    "display_winsize": TENSORBOARD, "update_html_freq": TENSORBOARD, "no_html": TENSORBOARD,
    "use_wandb": TENSORBOARD, "wandb_project_name": TENSORBOARD,
    "verbose": "the networks' sizes are in the run's log; nothing to turn on",
    "dataset_mode": "the unaligned layout (<dataroot>/trainA, trainB, testA, testB) is read; --model test reads "
                    "one folder",
    "isTrain": "the command says it: cyclegan train or cyclegan test",
    "gpu_ids": None,  # does something: see reference_device
}
SWITCHES = ("no_html", "verbose", "use_wandb")  # reference flags that take no value


def own_fields(command: str) -> dict[str, dataclasses.Field]:
    return {key: f for key, f in FIELDS.items() if command in f.metadata["commands"]}


def add_arguments(parser: argparse.ArgumentParser, command: str, defaults: Optional[dict[str, Any]] = None) -> None:
    """One flag per option of ``command``; flags default to SUPPRESS so that only what the user typed
    overrides the file and the defaults."""
    defaults = defaults or {}
    parser.add_argument("--config", help="YAML file with options (flags override it); it may hold any "
                                         "option, a run's train_opt.yaml for example")
    for key, f in own_fields(command).items():
        default = defaults.get(key, f.default)
        help_text = f"{f.metadata['help']} (default: {default})".replace("%", "%%")  # argparse formats %
        if HINTS[key] in (bool, Optional[bool]):
            parser.add_argument(f"--{key}", action="store_const", const=True, default=argparse.SUPPRESS,
                                help=help_text)
            parser.add_argument(f"--no-{key}", dest=key, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            parser.add_argument(f"--{key}", default=argparse.SUPPRESS, help=help_text, metavar=key.upper())
    if "no_dropout" in own_fields(command):
        parser.add_argument("--dropout", dest="no_dropout", action="store_const", const=False,
                            default=argparse.SUPPRESS, help="use dropout in the generator")
    if command in RUN:
        parser.add_argument("--suffix", default=argparse.SUPPRESS, metavar="SUFFIX",
                            help="appended to --name as name_<suffix>, formatted with the options, e.g. "
                                 "{netG}_size{load_size} (as the reference's --suffix)")
        for key in REFERENCE_ONLY_FLAGS:
            parser.add_argument(f"--{key}", default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                **({"action": "store_true"} if key in SWITCHES else {}))


def add_generator_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--generator, as `translate` and `export` take it (``what``: which generators a folder gives)."""
    parser.add_argument("--generator", required=True,
                        help=f"a run folder or a sweep report's best/ folder ({what}), or a .pth weights file "
                             f"(then --netG etc. say its architecture)")


def foreign_options(command: str, extras: list[str]) -> Optional[str]:
    """The error for the first schema option in ``extras`` (what the command's parser did not take) that
    belongs to other commands; None when there is none."""
    for token in extras:
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0]
        key = key[3:] if key.startswith("no-") and key[3:] in FIELDS else key
        if key in FIELDS:
            takers = ", ".join(f"cyclegan {c}" for c in FIELDS[key].metadata["commands"])
            return f"--{key} is an option of {takers}, not of cyclegan {command}"
    return None


def reference_device(gpu_ids: str) -> str:
    """The reference's --gpu_ids (-1: CPU; a list: the first GPU in this process)."""
    ids = [i.strip() for i in str(gpu_ids).split(",") if i.strip()]
    if not ids or ids[0].startswith("-"):
        log.warning("--gpu_ids %s: use --device cpu (this run does)", gpu_ids)
        return "cpu"
    if len(ids) > 1:
        log.warning("--gpu_ids %s: this process trains on cuda:%s only; for one process per GPU use "
                    "--num_workers %d --use_gpu (Ray Train)", gpu_ids, ids[0], len(ids))
    else:
        log.warning("--gpu_ids %s: use --device cuda:%s (this run does)", gpu_ids, ids[0])
    return f"cuda:{ids[0]}"


def from_args(args: argparse.Namespace, defaults: Optional[dict[str, Any]] = None) -> Config:
    """Schema defaults < command defaults < --config file < flags."""
    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    for key, instead in REFERENCE_ONLY_FLAGS.items():
        if key in vars(args) and instead:
            log.warning("--%s does nothing here: %s", key, instead)
    if "gpu_ids" in vars(args) and "device" not in given:
        given["device"] = reference_device(args.gpu_ids)
    file_values = load_yaml(args.config) if getattr(args, "config", None) else {}
    file_suffix = file_values.pop("suffix", "")  # a file may give it too; the flag wins
    suffix = getattr(args, "suffix", file_suffix)
    base = dict(defaults or {})
    for key in file_values:
        if key not in FIELDS:
            raise SCHEMA.unknown(key, source=f"config file {args.config}")
    base.update(file_values)
    return with_suffix(from_dict(given, base=base, source="command line"), str(suffix or ""),
                       name_from_file="name" not in given and "name" in file_values)


def test_time_config(args: argparse.Namespace) -> tuple[Config, set[str]]:
    """Test-time options (`cyclegan test`, `eval`, `translate`, `export`): the reference's test defaults
    apply over a config file's training values unless given as flags, and load_size follows crop_size
    unless given; also the options given as flags (they win over a run's own)."""
    given = set(vars(args)) & set(FIELDS)
    cfg = from_args(args, defaults=TEST_DEFAULTS)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in TEST_DEFAULTS.items() if k not in given})
    if "load_size" not in given:
        cfg = dataclasses.replace(cfg, load_size=cfg.crop_size)
    return cfg, given

