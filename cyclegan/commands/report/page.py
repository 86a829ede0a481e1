"""What ``cyclegan report`` shows: the HTML page (per pair the ranking, a population's lineage, the link to the
exported best and the top trials' translations side by side, saved as PNG files beside it) and the plain-text
ranking it prints. Renders what it is given: it reads no sweep and runs no network."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ...core.evaluate import METRICS
from ...core.experiment import Experiment
from ...distributed.sweep_results import TrialRecord


def write_page(out_dir: Path, exp: Experiment, sections: list[str]) -> Path:
    """``<out_dir>/index.html``: the sweep's title, then the pairs' sections; returns its path."""
    page = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>sweep {html.escape(exp.name)}</title>"
            "<style>td,th{padding:2px 8px;text-align:left} img{width:128px;image-rendering:pixelated}</style>"
            f"</head><body><h1>Sweep {html.escape(exp.name)}</h1><p>{html.escape(exp.uri)}</p>",
            *sections, "</body></html>\n"]
    index = out_dir / "index.html"
    index.write_text("\n".join(page))
    return index


def ranking(exp: Experiment, pair: str, records: list[TrialRecord]) -> list[str]:
    """A pair's heading, its trials best first with their values, and a population's lineage."""
    metric = records[0].metric if records else exp.search.metric
    out = [f"<h2>{html.escape(pair)}</h2><p>metric: {metric} "
           f"({'lower' if METRICS.get(metric, ('min',))[0] == 'min' else 'higher'} is better), "
           f"{len(records)} trials</p>"]
    if not records:
        return out + ["<p>no trial has reported yet</p>"]
    keys = sorted({k for r in records for k in r.params})
    out.append("<table border='1'><tr><th>rank</th><th>trial</th><th>final</th><th>best</th><th>epochs</th>"
               "<th>weights shown (score @ epoch)</th>"
               + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
    for rank, r in enumerate(records, 1):
        out.append(f"<tr><td>{rank}</td><td>{html.escape(r.trial_id)}</td><td>{_fmt(r.final)}</td>"
                   f"<td>{_fmt(r.best)}</td><td>{r.epochs:.2f}</td><td>{_at(r)}</td>"
                   + "".join(f"<td>{html.escape(str(r.params.get(k, '')))}</td>" for k in keys) + "</tr>")
    out.append("</table>")
    return out + _lineage_html(records)


def best_link(pair: str) -> str:
    link = html.escape(pair, quote=True)  # checked as a folder name too; escaped all the same
    return f"<p>best weights (reference format): <a href='{link}/best/'>{link}/best/</a></p>"


def gallery(out_dir: Path, pair: str, direction: str, inputs: list[tuple[str, np.ndarray]], trials: list[str],
            outputs: list[list[np.ndarray]]) -> list[str]:
    """One direction's table: each input image, then each shown trial's translation of it (``outputs``: per
    trial, in ``trials``' order), saved under ``<out_dir>/<pair>/images/``."""
    folder = out_dir / pair / "images"
    folder.mkdir(parents=True, exist_ok=True)
    link = html.escape(pair, quote=True)
    out = [f"<h3>{link} {direction}</h3><table border='1'><tr><th>input</th>"
           + "".join(f"<th>#{i + 1} {html.escape(t)}</th>" for i, t in enumerate(trials)) + "</tr>"]
    for i, (stem, image) in enumerate(inputs):
        stem = Path(stem).stem
        cells = [f"{direction}_{stem}_input.png"]
        _save_png(image, folder / cells[0])
        for trial, translated in zip(trials, outputs):
            cells.append(f"{direction}_{stem}_{trial}.png")
            _save_png(translated[i], folder / cells[-1])
        out.append("<tr>" + "".join(f"<td><img src='{link}/images/{html.escape(c, quote=True)}'></td>"
                                    for c in cells) + "</tr>")
    out.append("</table>")
    return out


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(path)


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


def table(pairs: dict[str, list[TrialRecord]]) -> str:
    """The plain-text ranking printed by ``cyclegan report``."""
    lines = []
    for pair, records in pairs.items():
        lines.append(f"{pair}: {len(records)} trials")
        for rank, r in enumerate(records, 1):
            lines.append(f"  {rank:>2}. {r.trial_id}  {r.metric} best {_fmt(r.best)} (final {_fmt(r.final)})  "
                         f"epochs {r.epochs:.2f}  weights {_at(r)}  {_values(r.params)}")
            for e in r.exploits:
                lines.append(f"      at epoch {_fmt(e.get('epochs'))} went on from {e.get('from')}: {_changes(e)}")
        best = next((r for r in records if r.checkpoint), None)
        if best is not None and any(r.exploits for r in records):
            lines.append(f"  schedule of the best weights ({best.trial_id}): " + "; ".join(
                f"epochs {_fmt(a)}-{_fmt(b)} {_values(v)} ({who})" for a, b, v, who in best.schedule()))
    return "\n".join(lines)


def _values(values: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(values.items()))


def _changes(event: dict) -> str:
    changed = event.get("changed") or {}
    return ", ".join(f"{k} {_short(a)} → {_short(b)}" for k, (a, b) in sorted(changed.items())) or "nothing changed"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4g}"


def _at(r: TrialRecord) -> str:
    if r.checkpoint is None:
        return "–"
    return f"{_fmt(r.checkpoint_score)} @ {r.checkpoint_epochs:.2f}" if r.checkpoint_epochs is not None else "latest"


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
