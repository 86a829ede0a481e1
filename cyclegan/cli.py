"""The ``cyclegan`` command: train, test, translate, export, eval, sweep, report, bench, data and cluster,
with the reference's flag names. Collects each command's parser and runs the one asked for."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from .commands import NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclegan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in NAMES:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    for command in sub.choices.values():  # its errors show its own usage
        command.set_defaults(command_parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .commands.options import foreign_options
    from .core.checkpoint import CheckpointError
    from .core.config import ConfigError
    from .core.data import DataError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"{cat.__name__}: {msg}\n"
    args, extras = build_parser().parse_known_args(argv)
    if extras:  # an option of another command names the commands that take it (exit 2, as argparse's errors)
        args.command_parser.error(foreign_options(args.command, extras) or f"unrecognized arguments: {' '.join(extras)}")
    try:
        return args.run(args)
    except (ConfigError, FileNotFoundError, CheckpointError, DataError) as e:  # the user's input: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
