"""The tests, in folders that follow the package's layers: core/ (PyTorch in one process), distributed/ (Ray),
commands/ (the `cyclegan` subcommands), project/ (the package's shape and the lock); helpers/ is what they
share, conftest.py the fixtures. Every folder is a package: with pytest's default (prepend) import mode the
repository root goes on sys.path and each file is imported by its dotted name (tests.core.test_training), so
two files with one basename in different folders do not clash, and the helpers are ``tests.helpers``."""
