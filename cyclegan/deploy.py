"""``cyclegan translate``: a trained generator over any number of images, from a folder or an s3://, gs://
prefix to another, with the relative names kept; the same preprocessing and output pixels as
``cyclegan test --model test`` (its ``<stem>_fake.png``).

The generator comes from a run folder or a sweep report's ``best/`` folder (``train_opt.yaml`` says the
architecture; ``<epoch>_net_G_A.pth`` or ``G_B`` by --direction), or from a weights file such as a
published ``<name>_pretrained/latest_net_G.pth`` (the architecture from the flags). In this process with
``--num_workers 0``; on Ray Data otherwise (``distributed/translate.py``). Either way undecodable inputs
are skipped, counted and listed in ``<output>/_translate_report.json``, and outputs that already exist are
not made again, so running the command again after a killed or preempted job finishes the rest.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config, ConfigError
from .data import BadImage, DataError, decode_image, is_image_name, normalize, preprocess_uint8, sample_rng
from .networks import define_G
from .storage import Storage
from .translate import epoch_label, tensor_to_image

log = logging.getLogger("cyclegan")
REPORT_FILE = "_translate_report.json"
SHAPE_KEYS = ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc", "init_type", "init_gain")
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
            saved = yaml.safe_load(store.read_text(f"{source}/train_opt.yaml"))
        except FileNotFoundError:
            raise ConfigError(f"generator: {source!r} has no train_opt.yaml; give a run folder, a report's best/ "
                              f"folder or a .pth weights file") from None
        cfg = dataclasses.replace(cfg, **{k: saved[k] for k in SHAPE_KEYS if k in saved and k not in given})
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


def input_base(input_uri: str, store: Storage) -> str:
    """The input folder or prefix as its filesystem names it: a listed image's path is this, "/", and its
    relative name."""
    return store.resolve(input_uri.rstrip("/"))[1].rstrip("/")


def image_paths(input_uri: str, store: Storage) -> list[str]:
    """The images under ``input_uri`` (subfolders too), as listed, sorted: an image's place in this list
    draws its preprocessing, as ``cyclegan test``'s does."""
    return sorted(i.path for i in store.list_files(input_uri.rstrip("/")) if is_image_name(i.path))


def listing(input_uri: str, output_uri: str, cfg: Config, store: Storage) -> tuple[pa.Table, int]:
    """The images under ``input_uri`` still to translate, sorted: a table of ``index``, the image's place
    in the sorted listing (its preprocessing draws from it, as ``cyclegan test``'s does), and ``relative``,
    its name below the input; and how many already have their output. Arrow columns hold a few tens of
    bytes an image (a list of dicts, 400), so the driver stays small with millions of frames."""
    root = input_uri.rstrip("/")
    fs, base = store.resolve(root)
    out_fs, out_base = store.resolve(output_uri.rstrip("/"))
    if type(out_fs) is type(fs) and (out_base + "/").startswith(base.rstrip("/") + "/"):
        raise ConfigError(f"output: {output_uri!r} is inside the input {input_uri!r}; its outputs would be "
                          f"taken for inputs the next time")
    cut = len(base.rstrip("/")) + 1
    relatives = [path[cut:] for path in image_paths(input_uri, store)]
    if not relatives:
        raise DataError(f"{input_uri}: no images under this folder or prefix")
    done = set()
    if store.exists(output_uri):
        done = {i.path[len(out_base.rstrip("/")) + 1:] for i in store.list_files(output_uri.rstrip("/"))}
    left = [index for index, relative in enumerate(relatives) if output_name(relative, cfg) not in done]
    table = pa.table({"index": pa.array(left, pa.int64()),
                      "relative": pa.array([relatives[i] for i in left], pa.string())})
    return table, len(relatives) - len(left)


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


def translate_batch(net: torch.nn.Module, images: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Outputs of a list of uint8 inputs, those of one size run together (sizes differ with --preprocess
    none), each in [-1, 1] as the generator sees it at training."""
    outputs: list[Optional[torch.Tensor]] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    with torch.no_grad():
        for indices in by_shape.values():
            batch = normalize(torch.from_numpy(np.stack([images[i] for i in indices]))).to(device)
            for i, out in zip(indices, net(batch).cpu()):
                outputs[i] = out
    return outputs


def write_report(output_uri: str, store: Storage, report: dict) -> dict:
    store.write_text(f"{output_uri.rstrip('/')}/{REPORT_FILE}", json.dumps(report, indent=2))
    return report


def translate(cfg: Config, source: str, input_uri: str, output_uri: str, given: set[str] = frozenset(),
              store: Optional[Storage] = None, progress_bar: bool = True, runner=None) -> dict:
    """``cyclegan translate``: returns (and writes beside the outputs) the report. ``runner``: what does
    the work (``translate_here`` by default; the Ray layer passes its own)."""
    if cfg.jpeg_quality > 100:
        raise ConfigError(f"jpeg_quality: {cfg.jpeg_quality} is above 100")
    store = store or Storage.from_options(cfg.storage_options)
    spec = generator_spec(source, cfg, store, given)
    todo, already = listing(input_uri, output_uri, spec.cfg, store)
    began = time.perf_counter()
    counts = (runner or translate_here)(spec, todo, input_uri, output_uri, store, progress_bar)
    seconds = time.perf_counter() - began
    report = {"generator": spec.weights, "input": input_uri, "output": output_uri,
              "already_done": already, "translated": counts["translated"], "skipped": len(counts["bad"]),
              "bad_inputs": counts["bad"], "seconds": seconds,
              "images_per_sec": counts["translated"] / seconds if seconds > 0 else 0.0}
    if report["bad_inputs"]:
        log.warning("skipped %d undecodable input(s), listed in %s/%s", report["skipped"], output_uri, REPORT_FILE)
    return write_report(output_uri, store, report)


def translate_here(spec: GeneratorSpec, todo: pa.Table, input_uri: str, output_uri: str, store: Storage,
                   progress_bar: bool = True) -> dict:
    """In this process: read, translate in batches of --batch_size, write."""
    from .parallel import resolve_device
    device = resolve_device(spec.cfg.device)
    net = spec.build(store, device)
    bad, translated, out_root = [], 0, output_uri.rstrip("/")
    base = input_base(input_uri, store)
    batch_size = max(1, spec.cfg.batch_size)
    with tqdm(total=todo.num_rows, unit="img", disable=not progress_bar) as bar:
        for start in range(0, todo.num_rows, batch_size):
            rows, images = [], []
            chunk = todo.slice(start, batch_size).to_pylist()
            for row in chunk:
                path = f"{base}/{row['relative']}"
                try:
                    images.append(load_input(store.read_bytes(input_uri, listed=path), path, row["index"], spec))
                    rows.append(row)
                except BadImage as e:
                    bad.append({"input": row["relative"], "reason": str(e)})
            for row, out in zip(rows, translate_batch(net, images, device)):
                store.write_bytes(f"{out_root}/{output_name(row['relative'], spec.cfg)}", encode_output(out, spec.cfg))
                translated += 1
            bar.update(len(chunk))
    return {"translated": translated, "bad": bad}
