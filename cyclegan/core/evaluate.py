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
from .data import (
    AugmentParams,
    augment,
    decode_image,
    first_images,
    list_files,
    load_image,
    to_chw_uint8,
    to_uint8,
    transform,
)
from .inference import translate_batch
from .storage import Storage, is_remote


def has_ideal(dataroot: Optional[str], store: Optional[Storage] = None) -> bool:
    if not dataroot:
        return False
    if is_remote(dataroot):
        return (store or Storage.from_options()).exists(f"{str(dataroot).rstrip('/')}/ideal/testA")
    return (Path(dataroot) / "ideal" / "testA").is_dir()


class ImageFolder:
    """The images of a folder or s3://, gs:// prefix (sorted, as the local listing), and how to read one."""

    def __init__(self, uri: str, store: Optional[Storage] = None, limit: float = math.inf):
        self.uri = str(uri).rstrip("/")
        self.store = store or Storage.from_options()
        if is_remote(self.uri):
            self.paths = first_images([i.path for i in self.store.list_files(self.uri) if i.is_file], limit)
        else:
            self.paths = list_files(self.uri, limit)

    def read(self, path: str, channels: int):
        if is_remote(self.uri):
            return decode_image(self.store.read_bytes(self.uri, listed=path), channels, path)
        return load_image(path, channels)

    def relative(self, path: str) -> str:
        """``path`` relative to the folder (a listed object path has no scheme: compare from the end)."""
        root = self.uri if not is_remote(self.uri) else self.store.resolve(self.uri)[1]
        return str(Path(path).relative_to(root))


@torch.no_grad()
def score_direction(generator: nn.Module, inputs: ImageFolder, ideals: ImageFolder, in_nc: int, out_nc: int,
                    device: torch.device, batch_size: int = 16) -> dict[str, float]:
    """``inputs`` through ``generator`` against the image of the same relative name in ``ideals``."""
    cfg = dataclasses.replace(Config(), preprocess="none", no_flip=True)  # whole images, no augmentation

    def tensor(folder: ImageFolder, path: str, channels: int) -> torch.Tensor:
        return torch.from_numpy(transform(folder.read(path, channels), cfg, AugmentParams(0, 0, False)))
    pairs = [(p, f"{ideals.uri}/{inputs.relative(p)}") for p in inputs.paths]
    if is_remote(ideals.uri):
        pairs = [(p, ideals.store.resolve(ideal)[1]) for p, ideal in pairs]
    abs_err = sq_err = id_abs = id_sq = 0.0
    count = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        reals = [tensor(inputs, p, in_nc) for p, _ in chunk]
        ideal = torch.stack([tensor(ideals, q, out_nc) for _, q in chunk]).to(device)
        fake = torch.stack(translate_batch(generator, reals, device)).clamp(-1, 1)
        diff = (fake - ideal) / 2  # [-1, 1] images: halve for [0, 1] units
        abs_err += diff.abs().sum().item()
        sq_err += (diff ** 2).sum().item()
        if in_nc == out_nc:
            base = (torch.stack(reals).to(device) - ideal) / 2
            id_abs += base.abs().sum().item()
            id_sq += (base ** 2).sum().item()
        count += ideal.numel()
    psnr = lambda mse: 10 * math.log10(1.0 / max(mse, 1e-12))  # noqa: E731
    return {"l1": abs_err / count, "psnr": psnr(sq_err / count),
            "identity_l1": id_abs / count, "identity_psnr": psnr(id_sq / count)}


def score_translation(G_A: nn.Module, G_B: nn.Module, dataroot: str, input_nc: int = 3, output_nc: int = 3,
                      device: Optional[torch.device] = None, store: Optional[Storage] = None) -> dict[str, float]:
    """Scores of G_A on testA and G_B on testB against the ideal translations, and their mean
    (``dataroot`` a folder or an s3://, gs:// prefix)."""
    root = str(dataroot).rstrip("/")
    if not has_ideal(root, store):
        raise FileNotFoundError(f"{root}/ideal: no ideal translations (only built-in pairs have them; "
                                f"make one with 'cyclegan data synth')")
    device = device or next(G_A.parameters()).device
    result: dict[str, float] = {}
    for name, gen, split, in_nc, out_nc in (("AtoB", G_A, "testA", input_nc, output_nc),
                                            ("BtoA", G_B, "testB", output_nc, input_nc)):
        inputs = ImageFolder(f"{root}/{split}", store)
        ideals = ImageFolder(f"{root}/ideal/{split}", store)
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


# ---------------------------------------------------------------- FID / KID and the sweep metric
# name: (direction of better, needs ideal translations)
METRICS = {"l1": ("min", True), "psnr": ("max", True), "fid": ("min", False), "kid": ("min", False)}


def test_images(dataroot: str, split: str, channels: int, cfg: Config, limit: int,
                store: Optional[Storage] = None) -> list[tuple[str, np.ndarray]]:
    """Up to ``limit`` images of ``<dataroot>/<split>`` (a folder or s3:// prefix, read through ``store``),
    sorted, at the size the generators see at test time, as (name, uint8 HxWxC)."""
    test_cfg = dataclasses.replace(cfg, load_size=cfg.crop_size, no_flip=True)
    folder = ImageFolder(f"{str(dataroot).rstrip('/')}/{split}", store, limit)
    if not folder.paths:
        raise FileNotFoundError(f"{dataroot}/{split}: no test images to score")
    out = []
    for path in folder.paths:
        img = augment(folder.read(path, channels), test_cfg, AugmentParams(0, 0, False))
        out.append((Path(path).name, to_chw_uint8(img).transpose(1, 2, 0)))
    return out


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def translate_images(generator: nn.Module, images: list[np.ndarray]) -> list[np.ndarray]:
    """uint8 HxWxC images through a generator in eval mode, one a forward (the memory of one image however many
    are scored), rounded to uint8 HxWxC: what the scores, the image grids and a sweep's report compare."""
    was_training = generator.training
    generator.eval()  # no dropout draws, no batch-norm statistics updated: training is not disturbed
    try:
        outputs = translate_batch(generator, [image.transpose(2, 0, 1) for image in images], batch_size=1)
        return [to_uint8(y).permute(1, 2, 0).cpu().numpy() for y in outputs]  # rounded: a score, not a saved image
    finally:
        generator.train(was_training)


class Scorer:
    """The score of a pair of generators under one metric, with the real images' features computed once.

    ``l1``/``psnr``: distance to the ideal translations (built-in pairs). ``fid``/``kid``: G_A(testA)
    against testB and G_B(testB) against testA, averaged over the two directions (``*_AtoB``/``*_BtoA``
    are reported too), with an extractor of ``metrics.py`` (``inception`` by default).
    """

    def __init__(self, cfg: Config, metric: str, extractor: str = "inception", max_images: int = 100,
                 store: Optional[Storage] = None, device: Optional[torch.device] = None,
                 weights_uri: Optional[str] = None):
        if metric not in METRICS:
            raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
        if METRICS[metric][1] and not has_ideal(cfg.dataroot, store):
            raise FileNotFoundError(f"metric {metric}: {cfg.dataroot} has no ideal translations (only built-in "
                                    f"pairs do); use fid or kid")
        self.cfg, self.metric, self.store, self.device = cfg, metric, store, device or torch.device("cpu")
        self.images: dict[str, list[tuple[str, np.ndarray]]] = {}
        if not METRICS[metric][1]:
            from .metrics import get_extractor
            stored = (store or Storage.from_options(), weights_uri) if weights_uri else None
            self.extractor, self.size = get_extractor(extractor, self.device, stored)
            for split, nc in (("testA", cfg.input_nc), ("testB", cfg.output_nc)):
                self.images[split] = test_images(cfg.dataroot, split, nc, cfg, max_images, store)
            self.real = {split: self._features([img for _, img in images]) for split, images in self.images.items()}

    def _features(self, images: list[np.ndarray]) -> np.ndarray:
        from .metrics import extract_features
        return extract_features(self.extractor, [_rgb(i) for i in images], size=self.size, device=self.device)

    def __call__(self, G_A: nn.Module, G_B: nn.Module) -> dict[str, float]:
        if METRICS[self.metric][1]:
            return score_translation(G_A, G_B, self.cfg.dataroot, self.cfg.input_nc, self.cfg.output_nc,
                                     self.device, self.store)
        from .metrics import fid_from_features, kid_from_features
        result: dict[str, float] = {}
        for name, gen, source, target in (("AtoB", G_A, "testA", "testB"), ("BtoA", G_B, "testB", "testA")):
            fake = self._features(translate_images(gen, [img for _, img in self.images[source]]))
            result[f"fid_{name}"] = fid_from_features(fake, self.real[target])
            result[f"kid_{name}"] = kid_from_features(fake, self.real[target])[0]
        for key in ("fid", "kid"):
            result[key] = (result[f"{key}_AtoB"] + result[f"{key}_BtoA"]) / 2
        return result
