"""Image listing, decoding and augmentation for unaligned domains A and B.

Decoding and transforms are plain functions over bytes, PIL images and NumPy arrays, so the
local loader here and a streaming loader elsewhere apply exactly the same preprocessing.
Randomness (crop position, flip, B pairing, order) is a pure function of (seed, epoch, index):
an epoch can be replayed from any position, which is what makes resumption exact.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFile

from .config import MAX_IMAGE_SIZE, Config
from .errors import DataError
from .synth import write_pair

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail to decode, not load half grey
# The reference's extensions, then ours: .webp .gif .pgm. Matched in any letter case.
MAX_PIXELS = MAX_IMAGE_SIZE**2  # 67 megapixels; a 9500x9500 image decoded took 1.46 GB
IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm"}


def is_image_name(name: str) -> bool:
    """Whether a file or object name counts as an image: not hidden, with an image extension.
    Other files (README.txt, Thumbs.db, labels.csv) are never listed, so they count neither against
    max_dataset_size nor as unreadable images."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMG_EXTENSIONS


class BadImageWarning(UserWarning):
    """Some files were skipped because they could not be decoded."""


class BadImage(ValueError):
    pass


# ---------------------------------------------------------------- decoding
def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float images scaled to 8-bit grayscale instead of clipped to white."""
    arr = np.asarray(img, dtype=np.float64)
    peak = arr.max() if arr.size else 0
    if img.mode == "F" and peak <= 1.0:
        arr = arr * 255.0
    elif peak > 255:
        arr = arr / 257.0  # 16-bit range onto 8-bit
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, F, ...) to 'L' (1 channel) or 'RGB' (3)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    elif img.mode == "P":
        img = img.convert("RGBA")  # palette transparency is only honoured through RGBA
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def decode_image(data: bytes, channels: int, name: str = "<bytes>") -> Image.Image:
    """Decode fully (so truncation shows now, not mid-epoch) and convert to ``channels``."""
    if not data:
        raise BadImage(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:  # read from the header: refused before it is decoded
                raise BadImage(f"{name}: {img.width}x{img.height} pixels, more than the {MAX_IMAGE_SIZE}x"
                               f"{MAX_IMAGE_SIZE} an image may have")
            img.load()
            return to_channels(img, channels)
    except BadImage:
        raise
    except Exception as e:  # PIL raises many types for bad input: all mean "not a usable image"
        raise BadImage(f"{name}: {type(e).__name__}: {e}") from None


def load_image(path: str | os.PathLike, channels: int) -> Image.Image:
    return decode_image(Path(path).read_bytes(), channels, str(path))


# ---------------------------------------------------------------- transforms
def resized_size(cfg: Config, width: int, height: int) -> tuple[int, int]:
    """Size after the resize stage of ``cfg.preprocess`` (before cropping)."""
    if "resize" in cfg.preprocess:
        return cfg.load_size, cfg.load_size
    if "scale_width" in cfg.preprocess:
        if width == cfg.load_size and height >= cfg.crop_size:
            return width, height
        return cfg.load_size, int(max(cfg.load_size * height / width, cfg.crop_size))
    if cfg.preprocess == "none":  # generators need sizes divisible by 4
        return max(4, int(round(width / 4) * 4)), max(4, int(round(height / 4) * 4))
    return width, height


def check_size(cfg: Config, width: int, height: int, name: str) -> None:
    if "crop" in cfg.preprocess:
        w, h = resized_size(cfg, width, height)
        if w < cfg.crop_size or h < cfg.crop_size:
            raise DataError(f"{name}: image is {width}x{height}, smaller than crop_size {cfg.crop_size} "
                            f"after preprocess {cfg.preprocess}")


@dataclass(frozen=True)
class AugmentParams:
    crop_x: int
    crop_y: int
    flip: bool


def augment_params(cfg: Config, width: int, height: int, rng: np.random.Generator) -> AugmentParams:
    """Random crop corner and flip, drawn from ``rng`` (deterministic per sample)."""
    w, h = resized_size(cfg, width, height)
    x = int(rng.integers(0, max(0, w - cfg.crop_size) + 1))
    y = int(rng.integers(0, max(0, h - cfg.crop_size) + 1))
    flip = bool(rng.random() > 0.5)
    return AugmentParams(x, y, flip and not cfg.no_flip)


def augment(img: Image.Image, cfg: Config, params: AugmentParams) -> Image.Image:
    """Resize, crop and flip."""
    size = resized_size(cfg, *img.size)
    if size != img.size:
        img = img.resize(size, Image.BICUBIC)
    if "crop" in cfg.preprocess:
        c = cfg.crop_size
        img = img.crop((params.crop_x, params.crop_y, params.crop_x + c, params.crop_y + c))
    if params.flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def to_chw_uint8(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


# ---------------------------------------------------------------- pixels: [0, 255] <-> [-1, 1]
def normalize(images):
    """[0, 255] (uint8 or float) to float32 [-1, 1] (the reference's ToTensor + Normalize(0.5, 0.5));
    NumPy or torch."""
    return images.astype(np.float32) / 127.5 - 1.0 if isinstance(images, np.ndarray) else images.float() / 127.5 - 1.0


def to_uint8(images, truncate: bool = False):
    """float [-1, 1] to uint8 [0, 255], clamped first; NumPy or torch, any shape, float32 arithmetic.

    ``truncate=True`` is the reference's ``tensor2im``, ``(x + 1) / 2 * 255`` cut to an integer: for
    saved result images and image logs, so they match the reference's byte for byte. Otherwise
    rounded to the nearest value: for scores, which compare translations with real images."""
    if isinstance(images, np.ndarray):
        x = np.clip(images.astype(np.float32), -1, 1)
        return ((x + 1) / 2.0 * 255.0).astype(np.uint8) if truncate else np.rint((x + 1) * 127.5).astype(np.uint8)
    import torch  # here, not above: Ray Data's tasks import this module and never need torch
    x = images.float().clamp(-1, 1)
    return ((x + 1) / 2.0 * 255.0).to(torch.uint8) if truncate else ((x + 1) * 127.5).round().to(torch.uint8)


def transform(img: Image.Image, cfg: Config, params: AugmentParams) -> np.ndarray:
    """Resize, crop, flip, then float32 CHW in [-1, 1]."""
    return normalize(to_chw_uint8(augment(img, cfg, params)))


def sample_rng(seed: int, epoch: int, index: int, domain: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, domain])


def preprocess(img: Image.Image, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    return transform(img, cfg, augment_params(cfg, *img.size, rng))


def preprocess_uint8(img: Image.Image, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """As ``preprocess`` but still uint8: a quarter of the bytes to move between processes."""
    return to_chw_uint8(augment(img, cfg, augment_params(cfg, *img.size, rng)))


# ---------------------------------------------------------------- listing and validation
def first_images(names: Sequence[str], max_size: float = math.inf) -> list[str]:
    """The image names among ``names``, sorted, then the first ``max_size`` (the reference's order:
    filter by extension, then cut)."""
    images = sorted(n for n in names if is_image_name(n))
    return images[: int(min(len(images), max_size))]


def list_files(folder: str | os.PathLike, max_size: float = math.inf) -> list[str]:
    """The image files below ``folder`` (see ``first_images``); the reference walks the tree the same way."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder does not exist")
    return first_images([str(p) for p in folder.rglob("*") if p.is_file()], max_size)


@dataclass
class Domain:
    folder: str
    paths: list[str]
    sizes: list[tuple[int, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def scan_domain(folder: str | os.PathLike, channels: int, cfg: Config, workers: int = 4) -> Domain:
    """Decode every file once: keep the good ones, record the bad ones, reject images too small to crop."""
    files = list_files(folder, cfg.max_dataset_size)

    def probe(path):
        try:
            img = load_image(path, channels)
            return path, img.size, None
        except BadImage as e:
            return path, None, str(e)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(probe, files))
    return collect_domain(str(folder), results, cfg)


def collect_domain(folder: str, results: Sequence[tuple[str, Optional[tuple[int, int]], Optional[str]]],
                   cfg: Config, noun: str = "files") -> Domain:
    """A Domain from probe results (path, size or None, reason or None), in the order given: the good
    kept (too small to crop: an error naming the file), the bad recorded, none good: an error."""
    domain = Domain(folder, [], [])
    for path, size, reason in results:
        if reason is None:
            check_size(cfg, *size, path)
            domain.paths.append(path)
            domain.sizes.append(size)
        else:
            domain.skipped.append((path, reason))
    if not domain.paths:
        what = f"none of its {len(results)} {noun} could be decoded" if results else "it is empty"
        raise DataError(f"{folder}: no usable image ({what})")
    return domain


def resolve_dataroot(cfg: Config) -> str:
    """The dataset a config trains and tests on: --dataroot, or else the built-in pair, written under
    ``<checkpoints_dir>/_builtin/`` the first time it is asked for."""
    if cfg.dataroot:
        return cfg.dataroot
    root = Path(cfg.checkpoints_dir) / "_builtin" / f"{cfg.builtin}_{cfg.builtin_size}px_{cfg.builtin_count}"
    if not (root / "pair.json").exists():
        n_test = max(8, cfg.builtin_count // 10)
        write_pair(cfg.builtin, root, size=cfg.builtin_size, n_train=cfg.builtin_count, n_test=n_test, seed=0)
    return str(root)


def domain_folders(cfg: Config, phase: Optional[str] = None) -> tuple[str, str]:
    """Folder names of the model's domains A and B: BtoA trains G_A on folder <phase>B."""
    phase = phase or cfg.phase
    return (f"{phase}A", f"{phase}B") if cfg.direction == "AtoB" else (f"{phase}B", f"{phase}A")


def warn_skipped(domains: Sequence[Domain]) -> int:
    skipped = [s for d in domains for s in d.skipped]
    if skipped:
        listing = "\n".join(f"  {reason}" for _, reason in skipped)
        warnings.warn(f"skipped {len(skipped)} unreadable file(s):\n{listing}", BadImageWarning, stacklevel=2)
    return len(skipped)


# ---------------------------------------------------------------- pairing
def epoch_plan(n_A: int, n_B: int, seed: int, epoch: int, serial: bool,
               direction: str = "AtoB") -> tuple[np.ndarray, np.ndarray]:
    """Indices into the model's domains A and B (sizes ``n_A``, ``n_B``) of every sample of an epoch of
    max(n_A, n_B) samples.

    As in the reference: samples in shuffled order (in order with serial_batches); folder <phase>A
    cycles through its images; folder <phase>B is drawn at random (cycles in order with
    serial_batches). With BtoA the model's A is folder <phase>B: the folders are paired first and
    swapped after, as the reference's set_input does, so folder <phase>A is still the cycled one.
    """
    if direction == "BtoA":
        folder_A_idx, folder_B_idx = _folder_plan(n_B, n_A, seed, epoch, serial)  # folder A: the model's B
        return folder_B_idx, folder_A_idx
    return _folder_plan(n_A, n_B, seed, epoch, serial)


def _folder_plan(n_A: int, n_B: int, seed: int, epoch: int, serial: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices into folder <phase>A, into folder <phase>B) for an epoch: A cycles, B is drawn."""
    length = max(n_A, n_B)
    rng = np.random.default_rng([seed, epoch, 7])
    order = np.arange(length) if serial else rng.permutation(length)
    a_idx = order % n_A
    b_idx = order % n_B if serial else rng.integers(0, n_B, size=length)
    return a_idx, b_idx
