"""Objective scores for the built-in pairs: distance of a translation to the known ideal one.

A built-in dataset stores, for every test image, its rendering in the other domain
(``ideal/testA/<name>`` for G_A, ``ideal/testB/<name>`` for G_B). The score is the mean
absolute error to that ideal in [0, 1] pixel units (lower is better), with PSNR beside it,
and the same numbers for the identity mapping as the baseline a translator must beat.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .config import Config
from .data import AugmentParams, list_files, load_image, transform


def has_ideal(dataroot: Optional[str]) -> bool:
    return bool(dataroot) and (Path(dataroot) / "ideal" / "testA").is_dir()


def _as_tensor(path: str, channels: int, cfg: Config) -> torch.Tensor:
    return torch.from_numpy(transform(load_image(path, channels), cfg, AugmentParams(0, 0, False)))


@torch.no_grad()
def score_direction(generator: nn.Module, inputs: list[str], ideals: list[str], in_nc: int, out_nc: int,
                    device: torch.device, batch_size: int = 16) -> dict[str, float]:
    cfg = dataclasses.replace(Config(), preprocess="none", no_flip=True)  # whole images, no augmentation
    abs_err = sq_err = id_abs = id_sq = 0.0
    count = 0
    for i in range(0, len(inputs), batch_size):
        real = torch.stack([_as_tensor(p, in_nc, cfg) for p in inputs[i:i + batch_size]]).to(device)
        ideal = torch.stack([_as_tensor(p, out_nc, cfg) for p in ideals[i:i + batch_size]]).to(device)
        fake = generator(real).float().clamp(-1, 1)
        diff = (fake - ideal) / 2  # [-1, 1] images: halve for [0, 1] units
        abs_err += diff.abs().sum().item()
        sq_err += (diff ** 2).sum().item()
        if in_nc == out_nc:
            base = (real - ideal) / 2
            id_abs += base.abs().sum().item()
            id_sq += (base ** 2).sum().item()
        count += ideal.numel()
    psnr = lambda mse: 10 * math.log10(1.0 / max(mse, 1e-12))  # noqa: E731
    return {"l1": abs_err / count, "psnr": psnr(sq_err / count),
            "identity_l1": id_abs / count, "identity_psnr": psnr(id_sq / count)}


def score_translation(G_A: nn.Module, G_B: nn.Module, dataroot: str, input_nc: int = 3, output_nc: int = 3,
                      device: Optional[torch.device] = None) -> dict[str, float]:
    """Scores of G_A on testA and G_B on testB against the ideal translations, and their mean."""
    root = Path(dataroot)
    if not has_ideal(dataroot):
        raise FileNotFoundError(f"{root / 'ideal'}: no ideal translations (only built-in pairs have them; "
                                f"make one with 'cyclegan data synth')")
    device = device or next(G_A.parameters()).device
    result: dict[str, float] = {}
    for name, gen, split, in_nc, out_nc in (("AtoB", G_A, "testA", input_nc, output_nc),
                                            ("BtoA", G_B, "testB", output_nc, input_nc)):
        inputs = list_files(root / split)
        ideals = [str(root / "ideal" / split / Path(p).relative_to(root / split)) for p in inputs]
        was_training = gen.training
        gen.eval()
        try:
            for key, value in score_direction(gen, inputs, ideals, in_nc, out_nc, device).items():
                result[f"{key}_{name}"] = value
        finally:
            gen.train(was_training)
    for key in ("l1", "psnr", "identity_l1", "identity_psnr"):
        result[key] = float(np.mean([result[f"{key}_AtoB"], result[f"{key}_BtoA"]]))
    return result
