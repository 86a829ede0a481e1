"""``cyclegan export``: a trained generator as ONNX and TorchScript, each checked against PyTorch at once.

Source: a run folder or a sweep report's ``best/`` folder (both generators, G_A and G_B) or a weights
file such as a published ``<name>_pretrained/latest_net_G.pth`` (that one generator; its architecture
from the flags), found as ``cyclegan translate`` finds it. Each file is exported in ``cyclegan test``'s
test-time mode (``deploy.test_time``) with dropout off, so a deployed model gives one answer per image,
and has a JSON file beside it saying how to feed it, what it computes and how it was checked (all but
the check is inside the file too: ONNX metadata ``cyclegan``, TorchScript extra file ``cyclegan.json``).

The check runs ONNX Runtime and the TorchScript module on images preprocessed as ``cyclegan test`` does
(``--input``; seeded noise images otherwise), as one batch, and on noise at a second, non-square size,
against the PyTorch generator; the largest absolute difference is printed, and above
``--export_tolerance`` nothing is written and the command fails.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import sys
import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..core.config import TEST_DEFAULTS, Config, ConfigError
from ..core.data import BadImage, normalize
from ..core.inference import GeneratorSpec, generator_spec, image_paths, load_input
from ..core.storage import Storage
from . import COMMANDS
from .options import add_arguments, add_generator_argument, test_time_config

CHECK_IMAGES = 4  # images of --input (or noise images) in the check
INPUT_NAME, OUTPUT_NAME = "image", "translated"


class ParityError(RuntimeError):
    """An exported file's outputs differ from the PyTorch generator's by more than the tolerance."""


def size_rule(netG: str) -> tuple[int, int]:
    """(multiple, minimum) of an input's height and width. ResNet generators downsample twice by 2 and
    upsample back, so any multiple of 4 comes back at its own size (8 at least: the residual blocks
    reflect-pad the 2x2 map); a U-Net halves the image down to 1x1, so 2^7 = 128 (unet_128) or 2^8 = 256
    (unet_256) and their multiples."""
    if netG.startswith("unet"):
        multiple = 256 if netG == "unet_256" else 128
        return multiple, multiple
    return 4, 8


def describe(spec: GeneratorSpec, fmt: str, file: str) -> dict:
    """What the JSON beside an exported file says."""
    cfg = spec.cfg
    multiple, minimum = size_rule(cfg.netG)
    colour = {1: "grey (1 channel)", 3: "RGB"}
    if cfg.norm == "instance":
        norm = "instance norm: each image's own statistics, as at training"
    elif cfg.norm == "batch" and cfg.eval:
        norm = "batch norm: the running statistics of training (--eval)"
    elif cfg.norm == "batch":
        norm = ("batch norm: each image's own statistics, then the layer's scale and shift (cyclegan test "
                "without --eval, one image per batch); images of a batch do not affect each other")
    else:
        norm = "none"
    return {
        "format": fmt, "file": file, "generator": spec.name,
        "translates": {"G_A": "A to B", "G_B": "B to A"}.get(spec.name, "its input domain to the other"),
        "weights": spec.weights,
        "architecture": {"netG": cfg.netG, "ngf": cfg.ngf, "norm": cfg.norm, "dropout_layers": not cfg.no_dropout,
                         "input_nc": spec.in_channels, "output_nc": spec.out_channels},
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "colour": colour[spec.in_channels],
                  "range": [-1.0, 1.0], "from_uint8": "x / 127.5 - 1",
                  "batch": "any", "height_width": f"any multiples of {multiple}, at least {minimum}",
                  "cyclegan_test_preprocessing": {"preprocess": cfg.preprocess, "load_size": cfg.load_size,
                                                  "crop_size": cfg.crop_size}},
        "output": {"name": OUTPUT_NAME, "layout": "NCHW", "dtype": "float32", "colour": colour[spec.out_channels],
                   "range": [-1.0, 1.0], "to_uint8": "clip to [-1, 1], then (y + 1) / 2 * 255 truncated (cyclegan test's saved pixels)",
                   "size": "the input's"},
        "test_time": {"dropout": "off" + (" (the generator was trained with dropout; cyclegan test without --eval "
                                          "keeps it on, so its outputs vary from run to run)"
                                          if not cfg.no_dropout and not cfg.eval else ""),
                      "normalisation": norm, "eval": cfg.eval},
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------- the two formats
@contextlib.contextmanager
def quiet(*loggers: str):
    """The exporter's INFO lines (one per folded initializer) off while it runs."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _onnx_bytes(net: nn.Module, example: torch.Tensor, netG: str, meta: dict) -> tuple[bytes, dict]:
    """ONNX through torch.export (dynamic batch, height and width in the generator's size steps)."""
    try:
        import onnx  # noqa: F401  (the exporter's dependencies; named here so a missing extra says what to do)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"export_format: ONNX needs the export extra ({e.name} is missing): "
                          f"pip install 'cyclegan[export]'") from None
    multiple, minimum = size_rule(netG)
    units = {k: torch.export.Dim(f"{k}_units", min=minimum // multiple) for k in ("height", "width")}
    shapes = {"x": {0: torch.export.Dim("batch"), 2: multiple * units["height"], 3: multiple * units["width"]}}
    with warnings.catch_warnings(), quiet("onnxscript", "onnx_ir"):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(net, (example,), dynamo=True, dynamic_shapes=shapes, verbose=False,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    proto = program.model_proto
    meta = {**meta, "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))}
    entry = proto.metadata_props.add()
    entry.key, entry.value = "cyclegan", json.dumps(meta)
    return proto.SerializeToString(), meta


def _torchscript_bytes(net: nn.Module, example: torch.Tensor, netG: str, meta: dict) -> tuple[bytes, dict]:
    """A traced module: these generators have no data-dependent control flow, and the check runs it at a
    second size and batch to show that nothing of the example's shape was baked in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice: TorchScript is asked for by name
        module = torch.jit.trace(net, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(module, buffer, _extra_files={"cyclegan.json": json.dumps(meta)})
    return buffer.getvalue(), meta


def _onnx_runner(data: bytes):
    import onnxruntime as ort
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0]), f"ONNX Runtime {ort.__version__}"


def _torchscript_runner(data: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return module, "TorchScript"


# format: (file suffix, make the file's bytes, load them into something that runs)
FORMATS = {"onnx": (".onnx", _onnx_bytes, _onnx_runner),
           "torchscript": (".torchscript.pt", _torchscript_bytes, _torchscript_runner)}


# ---------------------------------------------------------------- the check
def check_batches(spec: GeneratorSpec, images: list[np.ndarray], seed: int) -> list[torch.Tensor]:
    """The inputs of the check: the images as one batch (at the size cyclegan test gives them), and two
    noise images at a second, non-square size (the exports take any allowed size)."""
    multiple, _ = size_rule(spec.cfg.netG)
    generator = torch.Generator().manual_seed(seed)
    width = allowed_size(spec.cfg)
    height = width + multiple
    noise = torch.rand(2, spec.in_channels, height, width, generator=generator) * 2 - 1
    return [normalize(torch.from_numpy(np.stack(images))), noise]


def allowed_size(cfg: Config) -> int:
    """crop_size, or the nearest size below it that the generator takes (its minimum at least)."""
    multiple, minimum = size_rule(cfg.netG)
    return max(minimum, cfg.crop_size - cfg.crop_size % multiple)


def example_input(spec: GeneratorSpec) -> torch.Tensor:
    """What the exporters trace: two images of at least two size steps a side, since a side of one step
    (a U-Net's 1x1 centre) or a batch of one would be taken for a constant."""
    multiple, _ = size_rule(spec.cfg.netG)
    side = max(allowed_size(spec.cfg), 2 * multiple)
    return torch.zeros(2, spec.in_channels, side, side)


def max_difference(run, batches: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """The largest absolute difference of ``run``'s outputs from the PyTorch generator's ``expected``."""
    worst = 0.0
    with torch.no_grad():
        for batch, reference in zip(batches, expected):
            worst = max(worst, (run(batch) - reference).abs().max().item())
    return worst


def check_images(spec: GeneratorSpec, input_uri: Optional[str], store: Storage) -> tuple[list[np.ndarray], str]:
    """Up to CHECK_IMAGES images of ``input_uri`` preprocessed as ``cyclegan test`` does (the first ones
    that decode and share the first one's size), or seeded noise images at crop_size."""
    cfg = spec.cfg
    if input_uri:
        images: list[np.ndarray] = []
        for index, path in enumerate(image_paths(input_uri, store)):
            try:
                image = load_input(store.read_bytes(input_uri, listed=path), path, index, spec)
            except BadImage:
                continue
            if not images or image.shape == images[0].shape:
                images.append(image)
            if len(images) == CHECK_IMAGES:
                break
        if not images:
            raise ConfigError(f"input: no decodable images under {input_uri!r} to check the exports on")
        multiple, minimum = size_rule(cfg.netG)
        height, width = images[0].shape[1:]
        if height % multiple or width % multiple or min(height, width) < minimum:
            raise ConfigError(f"crop_size: cyclegan test's preprocessing (--preprocess {cfg.preprocess}, --crop_size "
                              f"{cfg.crop_size}) makes {width}x{height} images of {input_uri!r}; {cfg.netG} takes "
                              f"multiples of {multiple}, at least {minimum}")
        return images, f"{len(images)} image(s) of {input_uri}"
    size = allowed_size(cfg)
    rng = np.random.default_rng(cfg.seed)
    noise = [rng.integers(0, 256, (spec.in_channels, size, size), dtype=np.uint8) for _ in range(CHECK_IMAGES)]
    return noise, f"{CHECK_IMAGES} noise images (seed {cfg.seed}; give --input for real ones)"


def check_folder(spec: GeneratorSpec, input_uri: Optional[str], store: Storage) -> Optional[str]:
    """A dataset root (with <phase>A and <phase>B) gives each generator the images of its own domain:
    G_A the A side, G_B the B side; any other folder is used as it is."""
    if input_uri and spec.name in ("G_A", "G_B"):
        own = f"{input_uri.rstrip('/')}/{spec.cfg.phase}{spec.name[-1]}"
        if store.exists(own):
            return own
    return input_uri


# ---------------------------------------------------------------- the command
def specs_of(source: str, cfg: Config, store: Storage, given: set[str]) -> list[GeneratorSpec]:
    """Both generators of a run or report folder; the one generator of a weights file."""
    if source.rstrip("/").endswith(".pth"):
        return [generator_spec(source, cfg, store, given)]
    return [generator_spec(source, dataclasses.replace(cfg, direction=d), store, given | {"direction"})
            for d in ("AtoB", "BtoA")]


def export(cfg: Config, source: str, out: str, given: set[str] = frozenset(), input_uri: Optional[str] = None,
           store: Optional[Storage] = None) -> list[dict]:
    """Export, check and write every generator of ``source`` into ``out`` (a folder or prefix) in
    ``cfg.export_format``; returns the JSON descriptions written. ParityError, with nothing written,
    when a check fails."""
    store = store or Storage.from_options(cfg.storage_options)
    formats = ["onnx", "torchscript"] if cfg.export_format == "both" else [cfg.export_format]
    root = out.rstrip("/")
    written = []
    for spec in specs_of(source, cfg, store, given):
        net = spec.build(store, torch.device("cpu"), dropout=False)
        images, checked_on = check_images(spec, check_folder(spec, input_uri, store), store)
        batches = check_batches(spec, images, cfg.seed)
        with torch.no_grad():  # the PyTorch generator's outputs, once for both formats
            expected = [net(batch) for batch in batches]
        for fmt in formats:
            suffix, make, load = FORMATS[fmt]
            file = f"{spec.name}{suffix}"
            data, meta = make(net, example_input(spec), spec.cfg.netG, describe(spec, fmt, file))
            run, runtime = load(data)
            difference = max_difference(run, batches, expected)
            meta["check"] = {"runtime": runtime, "on": checked_on, "also": "2 noise images at "
                             f"{tuple(batches[1].shape[2:])}", "max_abs_difference": difference,
                             "tolerance": cfg.export_tolerance}
            print(f"{file}: max |{runtime} - PyTorch| = {difference:.2e} on {checked_on} and 2 noise images at "
                  f"{batches[1].shape[2]}x{batches[1].shape[3]} (tolerance {cfg.export_tolerance:.0e})", flush=True)
            if not difference <= cfg.export_tolerance:  # NaN fails too
                raise ParityError(f"{file}: {runtime}'s output differs from PyTorch's by {difference:.3g}, above "
                                  f"the tolerance {cfg.export_tolerance:g}; nothing written for it")
            store.write_bytes(f"{root}/{file}", data)
            store.write_text(f"{root}/{file}.json", json.dumps(meta, indent=2))
            written.append(meta)
    return written


# ---------------------------------------------------------------- benchmark


def add_parser(sub) -> None:
    p = sub.add_parser("export", help=COMMANDS["export"], description=__doc__)
    add_arguments(p, "export", TEST_DEFAULTS)
    add_generator_argument(p, "G_A and G_B")
    p.add_argument("--out", required=True, help="folder or s3://, gs:// prefix for the files")
    p.add_argument("--input", help="folder or prefix of images to check the exports on, or a dataset root (G_A "
                                   "checked on its testA, G_B on its testB); default: noise images")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg, given = test_time_config(args)
    try:
        written = export(cfg, args.generator, args.out, given=given, input_uri=args.input)
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {', '.join(m['file'] for m in written)} into {args.out} (each with a .json beside it)")
    return 0
