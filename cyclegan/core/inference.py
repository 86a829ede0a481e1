"""A trained generator applied to images outside training, as ``cyclegan test``, ``translate`` and ``export``
use it: found in a run folder, a sweep report's ``best/`` folder (``train_opt.yaml`` says the architecture;
``<epoch>_net_G_A.pth`` or ``G_B`` by --direction) or a weights file such as a published
``<name>_pretrained/latest_net_G.pth`` (the architecture from the flags); set up in test-time mode; its
inputs preprocessed and its outputs encoded and named as ``cyclegan test`` does. ``translate_batch`` is the
one way images go through a trained generator, for every command and a sweep's scores.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional, Sequence

import numpy as np
import pyarrow.fs as pafs
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import checkpoint as ckpt
from .config import GENERATOR_SHAPE_KEYS, Config, ConfigError, from_dict, parse_yaml
from .data import decode_image, is_image_name, normalize, preprocess_uint8, sample_rng, to_uint8
from .networks import define_G
from .storage import Storage

log = logging.getLogger("cyclegan")
FORMATS = {"png": ".png", "jpeg": ".jpg"}


@dataclass(frozen=True)
class GeneratorSpec:
    """Where a generator's weights are and what shapes it: enough for any process to build it."""
    weights: str  # a file, local or in object storage
    cfg: Config  # architecture (from the run when it says), preprocessing and output options (the flags)
    name: str  # G_A, G_B or G
    in_channels: int
    out_channels: int

    def build(self, store: Storage, device: torch.device, dropout: Optional[bool] = None) -> nn.Module:
        """The generator with its weights, on ``device``, as ``test_time`` sets it up."""
        cfg = self.cfg
        net = define_G(self.in_channels, self.out_channels, cfg.ngf, cfg.netG, cfg.norm, not cfg.no_dropout)
        ckpt.load_reference_weights(net, store.read_bytes(self.weights), self.weights)
        return test_time(net, cfg.eval, dropout).to(device)


class PerImageBatchNorm(nn.Module):
    """A batch-norm layer as ``cyclegan test`` runs it without --eval (training mode, one image per
    batch): each image normalised with its own mean and variance, then the layer's scale and shift.
    Unlike training mode, an image's output does not depend on the other images of its batch."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def test_time(net: nn.Module, eval_mode: bool, dropout: Optional[bool] = None) -> nn.Module:
    """``net`` (changed in place) in the mode ``cyclegan test`` runs generators in. With --eval: eval mode,
    batch norm from its running statistics, no dropout. Without (the reference default): batch norm from
    each image's own statistics, and dropout on where the generator has it, unless ``dropout`` is False.
    Instance norm always uses the image's own statistics, as at training."""
    net.eval()
    if eval_mode:
        return net
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, PerImageBatchNorm(child))
            elif isinstance(child, nn.Dropout) and dropout is not False:
                child.train()
    return net


def generator_spec(source: str, cfg: Config, store: Storage, given: set[str]) -> GeneratorSpec:
    """``source``: a run or report ``best/`` folder, or a weights file (.pth). A folder's own options
    shape the generator (flags given now apply on top); a file's architecture is the flags'."""
    source = source.rstrip("/")
    AtoB = cfg.direction == "AtoB"
    if source.endswith(".pth"):
        name = PurePosixPath(source).stem.rsplit("_net_", 1)[-1]
        weights = source
    else:
        try:
            saved = parse_yaml(store.read_text(f"{source}/train_opt.yaml"), f"{source}/train_opt.yaml")
        except FileNotFoundError:
            raise ConfigError(f"generator: {source!r} has no train_opt.yaml; give a run folder, a report's best/ "
                              f"folder or a .pth weights file") from None
        if not isinstance(saved, dict):
            raise ConfigError(f"generator: {source}/train_opt.yaml must hold a mapping of option: value")
        # The folder's options are data: validated as flags are, errors naming the file and the key.
        shape = {k: saved[k] for k in GENERATOR_SHAPE_KEYS if k in saved and k not in given}
        try:
            checked = from_dict(shape, base={**cfg.to_dict(), "storage_options": None})
        except ConfigError as e:
            raise ConfigError(f"{source}/train_opt.yaml: {e}") from None
        cfg = dataclasses.replace(cfg, **{k: getattr(checked, k) for k in shape})
        name = "G_A" if AtoB else "G_B"
        weights = f"{source}/{epoch_label(cfg)}_net_{name}.pth"
        if not store.exists(weights):
            raise ConfigError(f"generator: {weights} not found (check --epoch and --direction)")
    # G_A (and a single G) maps A (input_nc channels) to B (output_nc); G_B the other way.
    backward = name == "G_B"
    ins, outs = (cfg.output_nc, cfg.input_nc) if backward else (cfg.input_nc, cfg.output_nc)
    return GeneratorSpec(weights, cfg, name, ins, outs)


def output_name(relative: str, cfg: Config) -> str:
    return str(PurePosixPath(relative).with_suffix(FORMATS[cfg.translate_format]))


def unsafe_name(relative: str) -> Optional[str]:
    """Why a listed name (an object key or a file's path below the input) cannot name an output: one that
    climbs out (``..``), is absolute, has empty or ``.`` parts, backslashes or control characters would
    put the output elsewhere than below --output, over an input for one. None when it is a plain name."""
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return "its name has '..', '.', empty or absolute parts: its output would be outside --output"
    if "\\" in relative or any(ord(c) < 32 or ord(c) == 127 for c in relative):
        return "its name has backslashes or control characters"
    return None


def output_location(output_root: str, relative: str, cfg: Config) -> str:
    """Where the output of the input ``relative`` goes: below ``output_root``, always. Every writer of
    translations asks here; a name that would leave the folder is refused (the listing skips those)."""
    reason = unsafe_name(relative)
    if reason:
        raise ValueError(f"{relative!r}: {reason}")
    return f"{output_root.rstrip('/')}/{output_name(relative, cfg)}"


def input_base(input_uri: str, store: Storage) -> str:
    """The input folder or prefix as its filesystem names it: a listed image's path is this, "/", and its
    relative name."""
    return store.resolve(input_uri.rstrip("/"))[1].rstrip("/")


def image_paths(input_uri: str, store: Storage) -> list[str]:
    """The images under ``input_uri`` (subfolders too), as listed, sorted: an image's place in this list
    draws its preprocessing, as ``cyclegan test``'s does."""
    # Regular files only: a folder, a FIFO or a link to a device named like an image is no image.
    return sorted(i.path for i in store.list_files(input_uri.rstrip("/"))
                  if i.type == pafs.FileType.File and is_image_name(i.path))


def load_input(data: bytes, path: str, index: int, spec: GeneratorSpec) -> np.ndarray:
    """An input image resized and cropped as ``cyclegan test`` does, uint8 CHW (a quarter of float's bytes
    between processes); BadImage when undecodable."""
    img = decode_image(data, spec.in_channels, path)
    return preprocess_uint8(img, spec.cfg, sample_rng(spec.cfg.seed, 0, index, 0))


def encode_output(image: torch.Tensor, cfg: Config) -> bytes:
    """A generator output (CHW in [-1, 1]) as ``cyclegan test`` saves it, in --translate_format."""
    img = tensor_to_image(image)
    w, h = img.size
    if cfg.aspect_ratio > 1.0:
        img = img.resize((w, int(h * cfg.aspect_ratio)), Image.BICUBIC)
    elif cfg.aspect_ratio < 1.0:
        img = img.resize((int(w / cfg.aspect_ratio), h), Image.BICUBIC)
    out = io.BytesIO()
    if cfg.translate_format == "jpeg":
        img.save(out, format="JPEG", quality=cfg.jpeg_quality)
    else:
        img.save(out, format="PNG")
    return out.getvalue()


@torch.no_grad()
def translate_batch(net: nn.Module, images: Sequence[np.ndarray | torch.Tensor], device: Optional[torch.device] = None,
                    batch_size: Optional[int] = None, amp: Optional[torch.dtype] = None,
                    channels_last: bool = False) -> list[torch.Tensor]:
    """The one way images go through a trained generator (``cyclegan test``, ``eval``, ``translate``, a sweep's
    scores and its report): ``images`` CHW, each uint8 in [0, 255] (as ``load_input`` makes them) or a float
    tensor in [-1, 1] (as the datasets do). Those of one size run together (sizes differ with --preprocess
    none), at most ``batch_size`` a forward (all of them by default); no gradients; under autocast to ``amp``
    and in channels-last memory when the run trained so. ``net`` runs in the mode it is in (``test_time`` sets
    up ``cyclegan test``'s). Returns each output, float32 CHW in [-1, 1] as at training, on ``device`` (the
    generator's by default), in the order of ``images``."""
    device = device or next(net.parameters()).device
    memory = torch.channels_last if channels_last else torch.contiguous_format
    outputs: list[Optional[torch.Tensor]] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape), []).append(i)
    for indices in by_shape.values():
        step = batch_size or len(indices)
        for start in range(0, len(indices), step):
            chunk = indices[start:start + step]
            batch = _stacked([images[i] for i in chunk]).to(device, memory_format=memory)
            with torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext():
                result = net(batch)
            for i, out in zip(chunk, result.float()):
                outputs[i] = out
    return outputs


def _stacked(images: list) -> torch.Tensor:
    """Images of one size as one batch in [-1, 1]."""
    batch = torch.from_numpy(np.stack(images)) if isinstance(images[0], np.ndarray) else torch.stack(images)
    return normalize(batch) if batch.dtype == torch.uint8 else batch


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """[-1, 1] CHW tensor to an RGB PIL image with the reference's tensor2im: truncated to 8 bits, one
    channel tiled to three, so a results folder compares byte for byte with the reference's."""
    arr = to_uint8(t.detach().float().cpu().numpy(), truncate=True)
    if arr.shape[0] == 1:
        arr = np.tile(arr, (3, 1, 1))
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)))


def epoch_label(cfg: Config) -> str:
    return ckpt.weights_label(cfg.epoch, cfg.load_iter)


def load_weights(cfg: Config, net: torch.nn.Module, name: str) -> torch.nn.Module:
    """Load ``<checkpoints_dir>/<name>/<epoch>_net_<name>.pth`` into ``net``; eval mode with --eval."""
    path = cfg.run_dir / f"{epoch_label(cfg)}_net_{name}.pth"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint (check --name, --checkpoints_dir, --epoch)")
    ckpt.load_reference_weights(net, path)
    return net.eval() if cfg.eval else net
