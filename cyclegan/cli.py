"""The ``cyclegan`` command: train, test, translate, export, eval, sweep, report, bench, data and cluster,
with the reference's flag names. Collects each command's parser and runs the one asked for."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from typing import Optional

from .commands import COMMANDS


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, that command's parser in full and the others' names and
    one-line help (their modules, and what they import, are not loaded)."""
    parser = argparse.ArgumentParser(prog="cyclegan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_line in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line)
    for command in sub.choices.values():  # its errors show its own usage
        command.set_defaults(command_parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .commands.options import foreign_options
    from .core.errors import UserError
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"{cat.__name__}: {msg}\n"
    wanted = argv[0] if argv and argv[0] in COMMANDS else ""  # "": only names and help lines are needed
    args, extras = build_parser(wanted).parse_known_args(argv)
    if extras:  # an option of another command names the commands that take it (exit 2, as argparse's errors)
        args.command_parser.error(foreign_options(args.command, extras) or f"unrecognized arguments: {' '.join(extras)}")
    try:
        return args.run(args)
    except (UserError, FileNotFoundError) as e:  # the user's input: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
