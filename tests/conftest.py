"""Shared fixtures: tiny configs and tiny built-in datasets written once per session."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)

from cyclegan.config import from_dict  # noqa: E402
from cyclegan.synth import write_pair  # noqa: E402

# Small enough for CPU tests, large enough for every layer (3 halvings in the PatchGAN, 2 in G).
TINY = dict(netG="resnet_6blocks", ngf=4, ndf=4, load_size=28, crop_size=24, num_threads=0, print_freq=4,
            image_log_freq=8, n_epochs=1, n_epochs_decay=1, lambda_identity=0.5, pool_size=4,
            save_latest_freq=1000, save_epoch_freq=1, seed=3)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A 24 px 'seasons' pair: 10 training and 4 test images per domain."""
    return write_pair("seasons", tmp_path_factory.mktemp("data") / "seasons", size=24, n_train=10, n_test=4)


@pytest.fixture
def tiny_cfg(tiny_pair, tmp_path):
    def make(**overrides):
        values = dict(TINY, dataroot=str(tiny_pair), checkpoints_dir=str(tmp_path / "checkpoints"), name="tiny")
        values.update(overrides)
        return from_dict(values)
    return make


def replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)
