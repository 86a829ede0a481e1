"""FID and KID between two sets of image features, with one fixed protocol.

The feature extractor is pluggable: any callable mapping a float32 batch (N, 3, H, W) in [-1, 1]
to (N, D) features. Images reach it resized the clean-fid way (``clean_resize``: PIL bicubic on
each channel in floating point, no uint8 rounding in between), so the numbers do not depend on
which library decoded or resized the images.

- FID (Heusel et al. 2017): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with the matrix square
  root's trace taken from the eigenvalues of S1^(1/2) S2 S1^(1/2) (symmetric, so stable).
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / D + 1)^3, averaged over ``subsets`` random subsets of ``subset_size`` (as clean-fid
  and torch-fidelity compute it), reported with its standard deviation.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


def clean_resize(image: np.ndarray, size: int = 299) -> np.ndarray:
    """uint8 HxWx3 to float32 size x size x 3 in [0, 255]: bicubic per channel in PIL's float mode."""
    channels = [np.asarray(Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
                           .resize((size, size), Image.BICUBIC), dtype=np.float32) for c in range(image.shape[2])]
    return np.clip(np.stack(channels, axis=2), 0, 255)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def kid_from_features(features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    n = min(len(f1), len(f2), subset_size)
    if n < 2:
        raise ValueError("KID needs at least 2 images in each set")
    dim = f1.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), n, replace=False)]
        y = f2[rng.choice(len(f2), n, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        values.append((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                      - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: Iterable[np.ndarray], size: int = 299,
                     batch_size: int = 32, device: torch.device | str = "cpu") -> np.ndarray:
    """Features of uint8 HxWx3 images, each resized with ``clean_resize`` and scaled to [-1, 1]."""
    out, batch = [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device) / 127.5 - 1.0
        out.append(extractor(x).reshape(len(batch), -1).double().cpu().numpy())
        batch.clear()
    for image in images:
        batch.append(clean_resize(image, size))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(out)
