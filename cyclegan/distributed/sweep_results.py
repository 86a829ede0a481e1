"""A sweep's results as Ray Tune and the trials leave them in storage, read back without Ray: per trial
folder Tune's ``params.json`` (the sampled values and the pair) and ``result.json`` (one report a line), its
kept ``checkpoint_*`` folders (Tune's, and those of the trial's Ray Train runs, ``train/`` and
``train-<id>/``) each with ``state.pt`` and the trial's score record, and a population's ``exploits/``.
``cyclegan report`` ranks, exports and shows what ``collect`` returns. Imports no Ray: a report is read
wherever the sweep's storage is, Ray installed or not."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import pyarrow.fs as pafs

from ..core.errors import DataError
from ..core.evaluate import METRICS
from ..core.experiment import EXPLOITS, PAIR_KEY, SCORE_FILE, TRAIN_RUNS, Experiment, resumed_experiment
from ..core.storage import Storage
from ..core.stored import parse_json, read_json

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
