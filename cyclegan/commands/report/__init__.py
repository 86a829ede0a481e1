"""``cyclegan report SWEEP``: per domain pair, the trials ranked by the best value of the sweep metric
they reached, side-by-side translations of the same test images by the best trials (each with the
weights of its best checkpoint), and the pair's best generator exported in the reference format
(``latest_net_G_A.pth`` ...), from a sweep folder or s3:// prefix."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Optional

from ...core.data import resolve_dataroot
from ...core.evaluate import test_images, translate_images
from ...core.experiment import Experiment, Pair, pair_config
from ...core.storage import Storage, is_remote
from ...distributed.sweep_results import TrialRecord, collect
from .. import COMMANDS
from . import page
from .best import export_best, load_trial


def write_report(uri: str, out: Optional[str] = None, top: int = 3, images: int = 4,
                 store: Optional[Storage] = None) -> Path:
    """The HTML page (and exported weights) for a sweep; returns the page's path."""
    store = store or Storage.from_options()
    exp, pairs = collect(uri, store)
    out_dir = Path(out) if out else (Path(exp.uri) / "report" if not is_remote(exp.uri)
                                     else Path("reports") / exp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as builtin_root:  # built-in pairs, written here for their test images
        dataroots = {pair.name: pair.dataroot or resolve_dataroot(
                     dataclasses.replace(pair_config(exp, pair), checkpoints_dir=builtin_root))
                     for pair in exp.pairs if pairs.get(pair.name)}
        sections = [line for pair in exp.pairs for line in
                    _pair_section(exp, pair, pairs[pair.name], dataroots.get(pair.name), out_dir, top, images, store)]
    return page.write_page(out_dir, exp, sections)


def _pair_section(exp: Experiment, pair: Pair, records: list[TrialRecord], dataroot: Optional[str], out_dir: Path,
                  top: int, images: int, store: Storage) -> list[str]:
    """A pair's part of the page: its ranking; with trials that kept weights, the best exported and the top
    ``top`` trials' translations of its first ``images`` test images each way."""
    section = page.ranking(exp, pair.name, records)
    shown = [r for r in records if r.checkpoint][:top]
    if not shown:
        return section
    models = [(r, *load_trial(store, exp.uri, r.checkpoint)) for r in shown]
    best, cfg, model = models[0]
    export_best(out_dir / pair.name / "best", best, cfg, model, pair.dataroot)
    section.append(page.best_link(pair.name))
    for direction, split, nc in (("AtoB", "testA", cfg.input_nc), ("BtoA", "testB", cfg.output_nc)):
        inputs = test_images(dataroot, split, nc, cfg, images, store)
        outputs = [translate_images(m.G_A if direction == "AtoB" else m.G_B, [img for _, img in inputs])
                   for _, _, m in models]
        section += page.gallery(out_dir, pair.name, direction, inputs, [r.trial_id for r, _, _ in models], outputs)
    return section


def table(uri: str, store: Optional[Storage] = None) -> str:
    """The plain-text ranking printed by ``cyclegan report``."""
    return page.table(collect(uri, store)[1])


def add_parser(sub) -> None:
    p = sub.add_parser("report", help=COMMANDS["report"], description=__doc__)
    p.add_argument("sweep", help="<storage_path>/<sweep name> (folder or s3://)")
    p.add_argument("--out", help="output folder (default: <sweep>/report, or ./reports/<name> for s3://)")
    p.add_argument("--top", type=int, default=3, help="trials shown side by side per pair (default: 3)")
    p.add_argument("--images", type=int, default=4, help="test images per direction (default: 4)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    page_path = write_report(args.sweep, out=args.out, top=args.top, images=args.images)
    print(table(args.sweep))
    print(f"report: {page_path}")
    return 0
