"""The local loader's datasets: domains A and B (training, ``cyclegan test``) and one folder of images,
as torch map-style datasets over ``data``'s listing, decoding and augmentation (kept apart from ``data``,
which Ray Data's tasks import without torch)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .config import Config
from .data import domain_folders, epoch_plan, load_image, preprocess, sample_rng, scan_domain, warn_skipped


class UnalignedDataset(torch.utils.data.Dataset):
    """Domains A and B from ``<dataroot>/<phase>A`` and ``<phase>B``; one epoch is max(|A|, |B|) pairs."""

    def __init__(self, cfg: Config, phase: Optional[str] = None, scan_workers: int = 4):
        self.cfg = cfg
        root = Path(cfg.dataroot)
        # In model terms A has input_nc channels and B output_nc.
        self.channels = {"A": cfg.input_nc, "B": cfg.output_nc}
        folder_A, folder_B = domain_folders(cfg, phase)
        self.A = scan_domain(root / folder_A, cfg.input_nc, cfg, scan_workers)
        self.B = scan_domain(root / folder_B, cfg.output_nc, cfg, scan_workers)
        self.skipped = warn_skipped([self.A, self.B])
        self.set_epoch(cfg.epoch_count)

    @property
    def epoch_length(self) -> int:
        return max(len(self.A.paths), len(self.B.paths))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Serve the samples of ``epoch`` from position ``start`` on."""
        self.epoch, self.start = epoch, start
        self.a_idx, self.b_idx = epoch_plan(len(self.A.paths), len(self.B.paths), self.cfg.seed, epoch,
                                            self.cfg.serial_batches, self.cfg.direction)

    def __len__(self) -> int:
        return self.epoch_length - self.start

    def __getitem__(self, i: int) -> dict:
        i += self.start
        a_path, b_path = self.A.paths[self.a_idx[i]], self.B.paths[self.b_idx[i]]
        a = preprocess(load_image(a_path, self.channels["A"]), self.cfg, sample_rng(self.cfg.seed, self.epoch, i, 0))
        b = preprocess(load_image(b_path, self.channels["B"]), self.cfg, sample_rng(self.cfg.seed, self.epoch, i, 1))
        return {"A": torch.from_numpy(a), "B": torch.from_numpy(b), "A_paths": a_path, "B_paths": b_path}


class SingleDataset(torch.utils.data.Dataset):
    """One folder of images, for ``--model test`` (one direction)."""

    def __init__(self, cfg: Config, folder: str | os.PathLike, channels: int):
        self.cfg = cfg
        self.channels = channels
        self.domain = scan_domain(folder, channels, cfg)
        self.skipped = warn_skipped([self.domain])

    def __len__(self) -> int:
        return len(self.domain.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.domain.paths[i]
        img = preprocess(load_image(path, self.channels), self.cfg, sample_rng(self.cfg.seed, 0, i, 0))
        return {"A": torch.from_numpy(img), "A_paths": path}
