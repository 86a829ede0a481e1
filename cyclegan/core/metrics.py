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

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from PIL import Image

from .data import normalize
from .errors import UserError

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
        x = normalize(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device))
        out.append(extractor(x).reshape(len(batch), -1).double().cpu().numpy())
        batch.clear()
    for image in images:
        batch.append(clean_resize(image, size))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(out)


# ---------------------------------------------------------------- feature extractors
# The FID Inception-v3 (TensorFlow's 2015-12-05 graph, ported to PyTorch by pytorch-fid): the network
# behind published FID numbers. clean-fid's "clean" mode runs the same graph on the same resizing as
# ``clean_resize``. Weights are a plain state dict, read with weights_only=True.
INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 "pt_inception-2015-12-05-6726825d.pth")
# The published file's SHA-256 (95,628,359 bytes; its first 8 digits are in its name, torch.hub's check,
# which 2^32 tries defeat): what a download, or a sweep's staged copy with no other copy to go by, must be.
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_ENV = "CYCLEGAN_INCEPTION_WEIGHTS"
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
PINNED = re.compile(r"(.+)#sha256=([0-9a-f]{64})")  # a stored file's URI with the hash it must have


def inception_weights_path() -> Path:
    """Where the weights are read from: $CYCLEGAN_INCEPTION_WEIGHTS, else torch's hub cache (where
    pytorch-fid keeps them, so an existing download is reused)."""
    if os.environ.get(INCEPTION_ENV):
        return Path(os.environ[INCEPTION_ENV])
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]


def _download(url: str, path: Path, timeout: float = 20.0) -> None:
    import urllib.request
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        digest = hashlib.sha256()
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != INCEPTION_SHA256:
        tmp.unlink()
        raise OSError(f"the downloaded file's SHA-256 is {digest.hexdigest()}, not {INCEPTION_SHA256}")
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(data: bytes, expected: str, uri: str) -> None:
    """Refuse weights that are not the file expected: FID/KID with others would skew every ranking."""
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise UserError(f"{uri}: its SHA-256 is {got}, not {expected} (the Inception weights the sweep was "
                        f"staged with, or the published file); scoring with other weights would skew every "
                        f"FID/KID: put {INCEPTION_FILE} back there")


def put_inception_weights(store, uri: str) -> str:
    """This machine's Inception weights at ``uri`` (a sweep's storage), unless there already; the SHA-256
    every reader of ``uri`` must find. A file already there must be this machine's copy, or with no copy
    here the published file: the hash comes from here, never from the storage it vouches for."""
    path = inception_weights_path()
    if store.exists(uri):
        expected = file_sha256(path) if path.is_file() else INCEPTION_SHA256
        check_sha256(store.read_bytes(uri), expected, uri)
        return expected
    load_inception_weights()  # this machine's copy, downloaded if allowed; checked to load
    digest = file_sha256(path)
    store.upload_file(path, uri)
    return digest


def load_inception_weights(download: bool = True, stored: Optional[tuple] = None) -> dict:
    """The FID Inception's weights: from ``stored`` (a Storage and a URI: where a sweep put them for every
    node, so no node needs the internet; checked against the hash the URI pins, ``#sha256=<hex>``, or
    else the published file's), else from this machine (downloaded once if allowed)."""
    if stored is not None:
        import io
        store, uri = stored
        pinned = PINNED.fullmatch(uri)
        uri, expected = (pinned.group(1), pinned.group(2)) if pinned else (uri, INCEPTION_SHA256)
        try:
            data = store.read_bytes(uri)
        except FileNotFoundError:
            raise FileNotFoundError(f"FID/KID need the Inception-v3 weights at {uri}; they are gone from the "
                                    f"run's storage: put {INCEPTION_FILE} back there") from None
        check_sha256(data, expected, uri)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    path = inception_weights_path()
    if not path.exists() and download and not _env_flag("CYCLEGAN_OFFLINE"):
        try:
            _download(INCEPTION_URL, path)
        except OSError as e:
            raise FileNotFoundError(
                f"FID/KID need the Inception-v3 weights at {path} and downloading them failed ({e}). "
                f"On a machine with network: download {INCEPTION_URL} and copy it to {path} "
                f"(or point ${INCEPTION_ENV} at the file).") from None
    if not path.exists():
        raise FileNotFoundError(f"FID/KID need the Inception-v3 weights at {path}: download {INCEPTION_URL} "
                                f"and copy it there (or point ${INCEPTION_ENV} at the file)")
    return torch.load(path, map_location="cpu", weights_only=True)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def fid_inception_v3(state_dict: dict | None = None) -> torch.nn.Module:
    """Inception-v3 as in the FID graph: 1008 classes, and pooling inside the mixed blocks that differs
    from torchvision's (average pools without padded zeros; a max pool in the last block)."""
    import torch.nn.functional as F
    from torchvision.models import inception as tv

    def avg_pool(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class MixedA(tv.InceptionA):
        def _forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5, b3, self.branch_pool(avg_pool(x))]

    class MixedC(tv.InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for i in range(1, 6):
                bd = getattr(self, f"branch7x7dbl_{i}")(bd)
            return [self.branch1x1(x), b7, bd, self.branch_pool(avg_pool(x))]

    class MixedE(tv.InceptionE):
        def __init__(self, in_channels, max_pool):
            super().__init__(in_channels)
            self.max_pool = max_pool

        def _forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg_pool(x)
            return [self.branch1x1(x), b3, bd, self.branch_pool(pooled)]

    net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    for name, channels, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        setattr(net, name, MixedA(channels, pool_features=pool))
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(net, name, MixedC(768, channels_7x7=c7))
    net.Mixed_7b, net.Mixed_7c = MixedE(1280, max_pool=False), MixedE(2048, max_pool=True)
    if state_dict is not None:  # files saved before BatchNorm counted batches lack the counters
        counters = {k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")}
        net.load_state_dict({**counters, **state_dict})
    return net.eval()


class InceptionPool3(torch.nn.Module):
    """(N, 3, 299, 299) in [-1, 1] to the 2048 pool3 features FID and KID are defined on."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1, n.Conv2d_3b_1x1,
                      n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b,
                      n.Mixed_6c, n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = layer(x)
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)


class TinyFeatures(torch.nn.Module):
    """A small fixed random convolutional feature map (seeded, so every process builds the same one).
    Not comparable with published numbers: for tests and smoke runs that must not need Inception."""

    size = 64

    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 16, 5, stride=2)
        self.conv2 = torch.nn.Conv2d(16, dim, 5, stride=2)
        for conv in (self.conv1, self.conv2):
            conv.weight.data = torch.randn(conv.weight.shape, generator=gen) / conv.weight[0].numel() ** 0.5
            conv.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


def get_extractor(name: str, device: torch.device | str = "cpu", stored_weights: Optional[tuple] = None
                  ) -> tuple[FeatureExtractor, int]:
    """An extractor and its input size by name: ``inception`` (the protocol; ``stored_weights``: a Storage
    and the URI of its weights), ``tiny`` (tests), or ``package.module:callable`` returning a module."""
    if name == "inception":
        weights = load_inception_weights(stored=stored_weights)
        return InceptionPool3(fid_inception_v3(weights)).to(device), 299
    if name == "tiny":
        return TinyFeatures().to(device).eval(), TinyFeatures.size
    if ":" in name:
        import importlib
        module, attr = name.split(":", 1)
        made = getattr(importlib.import_module(module), attr)()
        return made.to(device).eval(), getattr(made, "size", 299)
    raise ValueError(f"feature_extractor: {name!r} is not inception, tiny or package.module:callable")
