"""``cyclegan test``: translate test images and write the reference's results page.

Layout, as the reference writes it:
``<results_dir>/<name>/<phase>_<epoch>/images/<stem>_<visual>.png`` and ``.../index.html``.
"""
from __future__ import annotations

import argparse
import dataclasses
import html
import logging
import warnings
from pathlib import Path

import torch
from PIL import Image

from ..core.config import TEST_DEFAULTS, Config
from ..core.data import resolve_dataroot
from ..core.datasets import SingleDataset, UnalignedDataset
from ..core.inference import load_weights, tensor_to_image, translate_batch
from ..core.model import CycleGAN
from ..core.networks import define_G
from . import COMMANDS
from .options import add_arguments, test_time_config

log = logging.getLogger("cyclegan")


def save_image(t: torch.Tensor, path: Path, aspect_ratio: float = 1.0) -> None:
    img = tensor_to_image(t)
    w, h = img.size
    if aspect_ratio > 1.0:
        img = img.resize((w, int(h * aspect_ratio)), Image.BICUBIC)
    elif aspect_ratio < 1.0:
        img = img.resize((int(w / aspect_ratio), h), Image.BICUBIC)
    img.save(path)


def write_index(web_dir: Path, title: str, rows: list[tuple[str, list[str]]], width: int = 256) -> Path:
    """index.html in the reference's shape: per image a header, then one table row of its visuals."""
    out = [f"<!DOCTYPE html>\n<html>\n<head>\n<title>{html.escape(title)}</title>\n</head>\n<body>"]
    for stem, files in rows:
        out.append(f"<h3>{html.escape(stem)}</h3>")
        out.append('<table border="1" style="table-layout: fixed;">\n<tr>')
        for name in files:
            label = name[len(stem) + 1:-4] if name.startswith(stem + "_") else name
            src = html.escape(f"images/{name}")
            out.append(f'<td halign="center" style="word-wrap: break-word;" valign="top"><p><a href="{src}">'
                       f'<img style="width:{width}px" src="{src}"></a><br><p>{html.escape(label)}</p></p></td>')
        out.append("</tr>\n</table>")
    out.append("</body>\n</html>\n")
    path = web_dir / "index.html"
    path.write_text("\n".join(out))
    return path


def results_folder(cfg: Config) -> str:
    """The reference's ``<phase>_<epoch>``, with ``_iter<N>`` appended under --load_iter N."""
    folder = f"{cfg.phase}_{cfg.epoch}"
    return f"{folder}_iter{cfg.load_iter}" if cfg.load_iter > 0 else folder


def cycle_visuals(model: CycleGAN, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
    """One image of each domain, its translation and its reconstruction, in the reference's order: real_A
    fake_B rec_A real_B fake_A rec_B; with the run's --amp and memory format."""
    def through(net, image):
        out, = translate_batch(net, [image], model.device, amp=model.amp_dtype, channels_last=model.cfg.channels_last)
        return out
    out = {"real_A": real_A, "fake_B": through(model.G_A, real_A)}
    out["rec_A"] = through(model.G_B, out["fake_B"])  # in this order: dropout, where on, draws in it
    out.update(real_B=real_B, fake_A=through(model.G_B, real_B))
    out["rec_B"] = through(model.G_A, out["fake_A"])
    return out


def run_test(cfg: Config) -> Path:
    """Translate up to ``num_test`` images and write the gallery; returns the page's path."""
    from ..core.parallel import resolve_device
    device = resolve_device(cfg.device)
    web_dir = Path(cfg.results_dir) / cfg.name / results_folder(cfg)
    image_dir = web_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)

    if cfg.model == "test":
        # One direction from one folder: --dataroot is the folder itself (as in the reference), or a
        # dataset root whose <phase>A (AtoB) or <phase>B (BtoA) is used.
        root = Path(cfg.dataroot)
        side = "A" if cfg.direction == "AtoB" else "B"
        folder = root / f"{cfg.phase}{side}" if (root / f"{cfg.phase}{side}").is_dir() else root
        G = define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, cfg.norm, not cfg.no_dropout)
        G = load_weights(cfg, G, f"G{cfg.model_suffix}").to(device)
        dataset = SingleDataset(cfg, folder, cfg.input_nc)

        def visuals(batch):
            real, = batch["A"]  # one image a batch
            fake, = translate_batch(G, [real], device)
            return {"real": real, "fake": fake}, batch["A_paths"]
    else:
        model = CycleGAN(cfg, device=device, train=False)
        for name in ("G_A", "G_B"):
            load_weights(cfg, getattr(model, name), name)
        dataset = UnalignedDataset(cfg)

        def visuals(batch):
            return cycle_visuals(model, batch["A"][0], batch["B"][0]), batch["A_paths"]

    total = len(dataset)
    if cfg.num_test < total:
        warnings.warn(f"--num_test {cfg.num_test} translates only {cfg.num_test} of the {total} test images; "
                      f"raise it to translate them all", UserWarning, stacklevel=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=cfg.num_threads)
    rows = []
    for i, batch in enumerate(loader):
        if i >= cfg.num_test:
            break
        images, paths = visuals(batch)
        stem = Path(paths[0]).stem
        files = []
        for label, tensor in images.items():
            name = f"{stem}_{label}.png"
            save_image(tensor, image_dir / name, cfg.aspect_ratio)
            files.append(name)
        rows.append((stem, files))
        if i % 5 == 0:
            log.info("processing (%04d)-th image... %s", i, paths[0])
    return write_index(web_dir, f"Experiment = {cfg.name}, Phase = {cfg.phase}, Epoch = {cfg.epoch}", rows)


def add_parser(sub) -> None:
    p = sub.add_parser("test", help=COMMANDS["test"], description=__doc__)
    add_arguments(p, "test", TEST_DEFAULTS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg, _ = test_time_config(args)
    page = run_test(dataclasses.replace(cfg, dataroot=resolve_dataroot(cfg)))
    print(f"results: {page}")
    return 0
