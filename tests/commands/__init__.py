"""Tests of cyclegan/commands/: the `cyclegan` subcommands end to end, and the cluster/ files they use."""
