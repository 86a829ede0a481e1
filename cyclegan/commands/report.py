"""``cyclegan report SWEEP``: per domain pair, the trials ranked by the best value of the sweep metric
they reached, side-by-side translations of the same test images by the best trials (each with the
weights of its best checkpoint), and the pair's best generator exported in the reference format
(``latest_net_G_A.pth`` ...), from a sweep folder or s3:// prefix."""
from __future__ import annotations

import argparse
import dataclasses
import html
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow.fs as pafs
import torch
import yaml

from ..core import checkpoint as ckpt
from ..core.config import from_dict
from ..core.data import resolve_dataroot
from ..core.errors import DataError
from ..core.evaluate import METRICS, test_images, translate_images
from ..core.experiment import (
    EXPLOITS,
    PAIR_KEY,
    SCORE_FILE,
    TRAIN_RUNS,
    Experiment,
    pair_config,
    resumed_experiment,
)
from ..core.model import CycleGAN
from ..core.storage import Storage, is_remote
from ..core.stored import parse_json, read_json
from . import COMMANDS

MAX_RESULTS = 64 << 20  # a trial's result.json: a line of a few kilobytes per report


@dataclass
class TrialRecord:
    trial_id: str
    params: dict
    metric: str
    final: Optional[float]
    best: Optional[float]
    epochs: float
    total_iters: int
    uri: str
    checkpoint: Optional[str] = None  # the state.pt of the best checkpoint kept, as the filesystem lists it
    checkpoint_score: Optional[float] = None  # its value of the metric
    checkpoint_epochs: Optional[float] = None  # and when it was taken (epochs trained)
    results: list = field(default_factory=list)
    # Population-based sweeps: each time this trial went on from another trial's checkpoint (what changed), and
    # the lineage of the checkpoint shown (the weights' own history, along the chain of clones).
    exploits: list = field(default_factory=list)
    checkpoint_lineage: list = field(default_factory=list)

    def schedule(self) -> list[tuple[float, float, dict, str]]:
        """The hyperparameters behind the weights shown, as (from epoch, to epoch, values, trained by): one
        segment per trial along the chain of clones that led to them."""
        chain = self.checkpoint_lineage
        end = self.checkpoint_epochs if self.checkpoint_epochs is not None else self.epochs
        if not chain:
            return [(0.0, end, self.params, self.trial_id)]
        cuts = [0.0] + [float(e.get("epochs") or 0.0) for e in chain] + [end]
        values = [chain[0].get("before", {})] + [e.get("after", {}) for e in chain]
        who = [chain[0].get("from", "")] + [e.get("trial", "") for e in chain]
        return [(cuts[i], cuts[i + 1], values[i], who[i]) for i in range(len(values))]


def _best_checkpoint(store: Storage, trial_uri: str, sign: int) -> tuple[Optional[str], dict, dict]:
    """The trial's kept checkpoint with the best score (its state.pt as listed, and its score record);
    without score records, the latest; and the latest checkpoint's record."""
    found = []
    # Tune's checkpoints, and those of the trial's Ray Train runs (train/, and train-<id>/ begun from a clone).
    runs = [f"{trial_uri}/{i.base_name}" for i in store.children(trial_uri)
            if i.type == pafs.FileType.Directory and re.fullmatch(TRAIN_RUNS, i.base_name)]
    for folder in (trial_uri, *runs):
        for info in store.children(folder):
            state = f"{info.path}/state.pt"
            if not (info.base_name.startswith("checkpoint_") and store.is_file(folder, listed=state)):
                continue
            try:
                scored = read_json(store, folder, listed=f"{info.path}/{SCORE_FILE}")
            except (FileNotFoundError, OSError, ValueError):
                scored = {}
            found.append((state, scored))
    if not found:
        return None, {}, {}
    latest = max(found, key=lambda item: (item[1].get("total_iters", -1), item[0]))[1]
    scored = [(state, s) for state, s in found if s.get("score") is not None]
    if not scored:
        return sorted(found)[-1][0], {}, latest
    return (*min(scored, key=lambda item: (sign * item[1]["score"], -item[1].get("total_iters", 0))), latest)


def collect(uri: str, store: Optional[Storage] = None) -> tuple[Experiment, dict[str, list[TrialRecord]]]:
    """The experiment and, per pair, its trials best first (by the best value of the sweep metric each
    reached: the checkpoint at that value is kept, and it is what the report exports)."""
    store = store or Storage.from_options()
    exp = resumed_experiment(uri, store)
    pairs: dict[str, list[TrialRecord]] = {pair.name: [] for pair in exp.pairs}
    for info in store.children(exp.uri):
        if info.type != pafs.FileType.Directory:
            continue
        trial_uri = f"{exp.uri}/{info.base_name}"
        try:
            params = read_json(store, f"{trial_uri}/params.json")
            results = _results(store, f"{trial_uri}/result.json")
        except (FileNotFoundError, OSError, DataError):
            continue  # not a trial folder, a trial that never reported, or files that cannot be read
        pair_name = params.pop(PAIR_KEY, None)
        pair = next((p for p in exp.pairs if p.name == pair_name), None)
        if pair is None:
            continue
        metric = exp.metric(pair)
        sign = 1 if METRICS[metric][0] == "min" else -1
        scored = [r for r in results if r.get(metric) is not None]
        checkpoint, at, latest = _best_checkpoint(store, trial_uri, sign)
        if isinstance(latest.get("params"), dict):  # a population's trial: its hyperparameters now
            params = {k: v for k, v in latest["params"].items() if k != PAIR_KEY}
        pairs[pair.name].append(TrialRecord(
            trial_id=info.base_name, params=params, metric=metric,
            final=scored[-1][metric] if scored else None,
            best=min((r[metric] for r in scored), key=lambda v: sign * v) if scored else None,
            epochs=max((r.get("epochs", 0) for r in results), default=0),
            total_iters=max((r.get("total_iters", 0) for r in results), default=0),
            uri=trial_uri, checkpoint=checkpoint, checkpoint_score=at.get("score"),
            checkpoint_epochs=at.get("epochs"), results=results,
            checkpoint_lineage=_lineage(at), exploits=_exploits(store, trial_uri)))
    for pair in exp.pairs:
        sign = 1 if METRICS[exp.metric(pair)][0] == "min" else -1
        pairs[pair.name].sort(key=lambda r: (r.best is None, sign * (r.best if r.best is not None else 0)))
    return exp, pairs


def _results(store: Storage, uri: str) -> list[dict]:
    """A trial's reports, one JSON object a line (a line being written, or not an object, is left out)."""
    results = []
    for line in store.read_bytes(uri, limit=MAX_RESULTS).splitlines():
        try:
            results.append(parse_json(line, uri))
        except DataError:
            continue
    return results


def _exploits(store: Storage, trial_uri: str) -> list[dict]:
    events = []
    for info in store.children(f"{trial_uri}/{EXPLOITS}"):
        if info.base_name.endswith(".json"):
            try:
                events.append(read_json(store, f"{trial_uri}/{EXPLOITS}", listed=info.path))
            except (FileNotFoundError, OSError, ValueError):
                continue
    return sorted(events, key=lambda e: (float(e.get("epochs") or 0), str(e.get("from", ""))))


def _lineage(record: dict) -> list[dict]:
    events = record.get("lineage")
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def _values(values: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(values.items()))


def _changes(event: dict) -> str:
    changed = event.get("changed") or {}
    return ", ".join(f"{k} {_short(a)} → {_short(b)}" for k, (a, b) in sorted(changed.items())) or "nothing changed"


def _load_model(store: Storage, sweep_uri: str, state_path: str):
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "state.pt"
        local.write_bytes(store.read_bytes(sweep_uri, listed=state_path))
        state = ckpt.load_state(local)  # weights_only
    saved = {k: v for k, v in state["config"].items() if k != "storage_options"}
    cfg = from_dict({**saved, "device": "cpu", "num_workers": "0", "address": None, "resume": None})
    model = CycleGAN(cfg, device=torch.device("cpu"))  # with the discriminators, which are exported too
    for name, net in model.networks().items():
        net.load_state_dict(state["model"]["nets"][name])
    return cfg, model


def _save_png(image, path: Path) -> None:
    from PIL import Image
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(path)


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
        return _write_page(exp, pairs, dataroots, out_dir, top, images, store)


def _write_page(exp: Experiment, pairs: dict[str, list[TrialRecord]], dataroots: dict[str, str], out_dir: Path,
                top: int, images: int, store: Storage) -> Path:
    page = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>sweep {html.escape(exp.name)}</title>"
            "<style>td,th{padding:2px 8px;text-align:left} img{width:128px;image-rendering:pixelated}</style>"
            f"</head><body><h1>Sweep {html.escape(exp.name)}</h1><p>{html.escape(exp.uri)}</p>"]
    for pair, records in pairs.items():
        metric = records[0].metric if records else exp.search.metric
        page.append(f"<h2>{html.escape(pair)}</h2><p>metric: {metric} "
                    f"({'lower' if METRICS.get(metric, ('min',))[0] == 'min' else 'higher'} is better), "
                    f"{len(records)} trials</p>")
        if not records:
            page.append("<p>no trial has reported yet</p>")
            continue
        keys = sorted({k for r in records for k in r.params})
        page.append("<table border='1'><tr><th>rank</th><th>trial</th><th>final</th><th>best</th><th>epochs</th>"
                    "<th>weights shown (score @ epoch)</th>"
                    + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
        for rank, r in enumerate(records, 1):
            page.append(f"<tr><td>{rank}</td><td>{html.escape(r.trial_id)}</td><td>{_fmt(r.final)}</td>"
                        f"<td>{_fmt(r.best)}</td><td>{r.epochs:.2f}</td><td>{_at(r)}</td>"
                        + "".join(f"<td>{html.escape(str(r.params.get(k, '')))}</td>" for k in keys) + "</tr>")
        page.append("</table>")
        page.extend(_lineage_html(records))
        shown = [r for r in records if r.checkpoint][:top]
        if not shown:
            continue
        pair_dir = out_dir / pair
        (pair_dir / "images").mkdir(parents=True, exist_ok=True)
        models = []
        for rank, r in enumerate(shown):
            cfg, model = _load_model(store, exp.uri, r.checkpoint)
            models.append((r, cfg, model))
            if rank == 0:  # the pair's best: reference-format weights, loadable by cyclegan test
                best_dir = pair_dir / "best"
                ckpt.save_reference_weights(best_dir, model.networks(), "latest")
                # The pair's own dataroot (none for a built-in pair: cyclegan test writes it again).
                dataroot = next(p.dataroot for p in exp.pairs if p.name == pair)
                (best_dir / "train_opt.yaml").write_text(
                    yaml.safe_dump({**cfg.to_dict(), "dataroot": dataroot}, sort_keys=False))
                (best_dir / "trial.json").write_text(json.dumps(
                    {"trial": r.trial_id, "metric": r.metric, "final": r.final, "best": r.best, "params": r.params,
                     "checkpoint": r.checkpoint, "checkpoint_score": r.checkpoint_score,
                     "checkpoint_epochs": r.checkpoint_epochs}, indent=2))
        link = html.escape(pair, quote=True)  # checked as a folder name too; escaped all the same
        page.append(f"<p>best weights (reference format): <a href='{link}/best/'>{link}/best/</a></p>")
        first_cfg = models[0][1]
        for name, split, nc in (("AtoB", "testA", first_cfg.input_nc), ("BtoA", "testB", first_cfg.output_nc)):
            inputs = test_images(dataroots[pair], split, nc, first_cfg, images, store)
            page.append(f"<h3>{link} {name}</h3><table border='1'><tr><th>input</th>"
                        + "".join(f"<th>#{i + 1} {html.escape(r.trial_id)}</th>" for i, (r, _, _) in
                                  enumerate(models)) + "</tr>")
            outputs = []
            for r, cfg, model in models:
                outputs.append(translate_images(model.G_A if name == "AtoB" else model.G_B,
                                                [img for _, img in inputs]))
            for i, (stem, image) in enumerate(inputs):
                stem = Path(stem).stem
                cells = [f"{name}_{stem}_input.png"]
                _save_png(image, pair_dir / "images" / cells[0])
                for (r, _, _), translated in zip(models, outputs):
                    cells.append(f"{name}_{stem}_{r.trial_id}.png")
                    _save_png(translated[i], pair_dir / "images" / cells[-1])
                page.append("<tr>" + "".join(f"<td><img src='{link}/images/{html.escape(c, quote=True)}'></td>"
                                             for c in cells) + "</tr>")
            page.append("</table>")
    page.append("</body></html>\n")
    index = out_dir / "index.html"
    index.write_text("\n".join(page))
    return index


def _lineage_html(records: list[TrialRecord]) -> list[str]:
    """A population-based sweep's lineage: each trial's exploits, and the schedule behind the best weights."""
    if not any(r.exploits for r in records):
        return []
    out = ["<h3>Lineage</h3><table border='1'><tr><th>trial</th><th>at epoch</th><th>went on from</th>"
           "<th>changed</th></tr>"]
    for r in records:
        for e in r.exploits:
            out.append(f"<tr><td>{html.escape(r.trial_id)}</td><td>{_fmt(e.get('epochs'))}</td>"
                       f"<td>{html.escape(str(e.get('from', '')))}</td><td>{html.escape(_changes(e))}</td></tr>")
    out.append("</table>")
    best = next((r for r in records if r.checkpoint), None)
    if best is not None:
        out.append(f"<p>schedule of the best weights ({html.escape(best.trial_id)}):</p><table border='1'>"
                   "<tr><th>epochs</th><th>trained by</th><th>hyperparameters</th></tr>")
        for start, end, values, who in best.schedule():
            out.append(f"<tr><td>{_fmt(start)}–{_fmt(end)}</td><td>{html.escape(str(who))}</td>"
                       f"<td>{html.escape(_values(values))}</td></tr>")
        out.append("</table>")
    return out


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4g}"


def _at(r: TrialRecord) -> str:
    if r.checkpoint is None:
        return "–"
    return f"{_fmt(r.checkpoint_score)} @ {r.checkpoint_epochs:.2f}" if r.checkpoint_epochs is not None else "latest"


def table(uri: str, store: Optional[Storage] = None) -> str:
    """The plain-text ranking printed by ``cyclegan report``."""
    _, pairs = collect(uri, store)
    lines = []
    for pair, records in pairs.items():
        lines.append(f"{pair}: {len(records)} trials")
        for rank, r in enumerate(records, 1):
            params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r.params.items()))
            lines.append(f"  {rank:>2}. {r.trial_id}  {r.metric} best {_fmt(r.best)} (final {_fmt(r.final)})  "
                         f"epochs {r.epochs:.2f}  weights {_at(r)}  {params}")
            for e in r.exploits:
                lines.append(f"      at epoch {_fmt(e.get('epochs'))} went on from {e.get('from')}: {_changes(e)}")
        best = next((r for r in records if r.checkpoint), None)
        if best is not None and any(r.exploits for r in records):
            lines.append(f"  schedule of the best weights ({best.trial_id}): " + "; ".join(
                f"epochs {_fmt(a)}-{_fmt(b)} {_values(v)} ({who})" for a, b, v, who in best.schedule()))
    return "\n".join(lines)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def add_parser(sub) -> None:
    p = sub.add_parser("report", help=COMMANDS["report"], description=__doc__)
    p.add_argument("sweep", help="<storage_path>/<sweep name> (folder or s3://)")
    p.add_argument("--out", help="output folder (default: <sweep>/report, or ./reports/<name> for s3://)")
    p.add_argument("--top", type=int, default=3, help="trials shown side by side per pair (default: 3)")
    p.add_argument("--images", type=int, default=4, help="test images per direction (default: 4)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    page = write_report(args.sweep, out=args.out, top=args.top, images=args.images)
    print(table(args.sweep))
    print(f"report: {page}")
    return 0
