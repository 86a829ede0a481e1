"""The ``cyclegan`` subcommands, one module each (``bench`` a package, one module per mode). Each module
builds its own parser (``add_parser``) and runs (``run``, set as the parser's default)."""

NAMES = ("train", "test", "translate", "export", "eval", "sweep", "report", "bench", "data", "cluster")
