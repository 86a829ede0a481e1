"""Tests of cyclegan/core/: networks, losses, data, config, metrics, training and its parity with the reference."""
