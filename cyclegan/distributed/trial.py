"""One trial of a sweep: the function Tune runs, and the hooks that add the trial's score, TensorBoard
HParams and image grids to a training run (in the trial's process, or on every Ray Train worker).

A trial with ``num_workers: 0`` trains inside the Tune trial process (the cheapest for small runs);
with N >= 1 the trial's function is the driver of a Ray Train run of N workers (Train inside Tune, the
Train V2 way) whose reports reach Tune through ``TuneReportCallback``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..config import from_dict
from ..data import resolve_dataroot
from ..evaluate import METRICS, Scorer, test_images, translate_images
from ..experiment import trial_values
from ..storage import Storage, is_remote
from ..train import Trainer
from .runtime import parse_resources, quiet_data
from .train import fit, train_and_report


class SweepHooks:
    """What a trial adds to training (a ``RunHooks``): its score at every report (for ASHA and Optuna), the
    best so far, the TensorBoard HParams session and fixed-image grids, and the events copied to storage."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.store: Storage = spec["store"]
        self.metric, self.mode = spec["metric"], METRICS[spec["metric"]][0]
        self.best: Optional[float] = None
        self.scored: tuple[int, dict] = (-1, {})
        remote = is_remote(spec["trial_uri"])
        # Events go straight to the trial folder when it is local, else to scratch and then uploaded.
        self.tensorboard_dir = Path(tempfile.mkdtemp(prefix="cyclegan-tb-")) if remote else Path(spec["trial_uri"])
        self.upload_to = spec["trial_uri"] if remote else None
        self.scorer = None

    def start(self, trainer) -> None:
        if not trainer.is_main:
            return
        cfg = trainer.cfg
        self.scorer = Scorer(cfg, self.metric, self.spec["feature_extractor"], self.spec["eval_images"], self.store,
                             trainer.model.device)
        n = self.spec["grid_images"]
        self.grid = {split: [img for _, img in test_images(cfg.dataroot, split, nc, cfg, n, self.store)]
                     for split, nc in (("testA", cfg.input_nc), ("testB", cfg.output_nc))}
        if trainer.writer is not None and trainer.resumed_from is None:
            from torch.utils.tensorboard.summary import hparams
            values = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                      for k, v in self.spec["hparams"].items()}
            experiment, start, _ = hparams(values, {f"hparams/{self.metric}": 0.0,
                                                    f"hparams/best_{self.metric}": 0.0})
            # The session goes into the run's own event file (SummaryWriter.add_hparams would open another).
            for summary in (experiment, start):
                trainer.writer.file_writer.add_summary(summary)

    def metrics(self, trainer) -> dict:
        if not trainer.is_main or self.scorer is None:
            return {}
        p = trainer.progress
        if self.scored[0] == p.total_iters:  # the end-of-run report follows the last save at the same step
            return self.scored[1]
        scores = self.scorer(trainer.model.G_A, trainer.model.G_B)
        value = float(scores[self.metric])
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
        epochs = p.epoch - trainer.cfg.epoch_count + p.epoch_iter / max(1, trainer.epoch_length())
        # Tune gets the headline numbers; TensorBoard gets every direction and the identity baseline.
        out = {self.metric: value, f"best_{self.metric}": self.best, "epochs": epochs,
               **{f"score_{k}": float(v) for k, v in scores.items() if k in METRICS}}
        writer = trainer.writer
        if writer is not None:
            step = p.total_iters
            writer.add_scalar(f"hparams/{self.metric}", value, step)
            writer.add_scalar(f"hparams/best_{self.metric}", self.best, step)
            for key, v in scores.items():
                writer.add_scalar(f"score/{key}", v, step)
            self._log_grids(trainer, step)
            writer.flush()
            if self.upload_to is not None:
                self.store.copy_folder(self.tensorboard_dir, self.upload_to)
        self.scored = (p.total_iters, out)
        return out

    def _log_grids(self, trainer, step: int) -> None:
        import torch
        import torchvision
        for name, gen, split in (("AtoB", trainer.model.G_A, "testA"), ("BtoA", trainer.model.G_B, "testB")):
            reals = self.grid[split]
            fakes = translate_images(gen, reals)
            tiles = [torch.from_numpy(i.copy()).permute(2, 0, 1).expand(3, -1, -1) for i in reals + fakes]
            grid = torchvision.utils.make_grid(tiles, nrow=len(reals), padding=2)
            trainer.writer.add_image(f"test/{name}", grid, step)  # top row: inputs, bottom: translations

    def save(self, folder: Path) -> None:
        (folder / "sweep.json").write_text(json.dumps({"best": self.best}))

    def restore(self, folder: Path) -> None:
        saved = folder / "sweep.json"
        if saved.exists():
            self.best = json.loads(saved.read_text()).get("best")


def run_trial(params: dict, setup: dict) -> None:
    """One trial: Tune calls it with the sampled values (and again, from its checkpoint, after a restart)."""
    from ray import tune
    exp, pair = setup["experiment"], setup["pair"]
    ctx = tune.get_context()
    trial_uri = f"{setup['pair_uri']}/{ctx.get_trial_id()}"
    # This node's working files (states, reference weights): the trial's record is its Tune checkpoints.
    scratch = Path(tempfile.gettempdir()) / "cyclegan-trials" / ctx.get_trial_id()
    values = trial_values(exp, pair, params)
    cfg = from_dict({**values, "name": "run", "checkpoints_dir": str(scratch), "storage_options": None})
    # A built-in pair is read from where the driver wrote it (_trainable), not from the trial's scratch.
    cfg = dataclasses.replace(cfg, dataroot=resolve_dataroot(
        dataclasses.replace(cfg, checkpoints_dir=setup["builtin_root"])))
    hparams = {"pair": pair.name, **{k: v for k, v in params.items()}}
    spec = {"metric": setup["metric"], "feature_extractor": exp.search.feature_extractor,
            "eval_images": exp.search.eval_images, "grid_images": exp.search.grid_images,
            "trial_uri": trial_uri, "store": setup["store"], "hparams": hparams}
    if cfg.max_workers == 0:
        quiet_data()
        import torch
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))  # the CPUs Tune reserved, not the machine's
        hooks = SweepHooks(spec)
        trainer = Trainer(cfg, progress_bar=False, tensorboard_dir=hooks.tensorboard_dir)

        def report_fn(metrics, folder):
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)
        try:
            train_and_report(trainer, tune.get_checkpoint(), report_fn, hooks)
        finally:  # the trial's record is in storage; this node's copies go
            shutil.rmtree(scratch, ignore_errors=True)
            if hooks.upload_to is not None:
                shutil.rmtree(hooks.tensorboard_dir, ignore_errors=True)
    else:
        from ray.tune.integration.ray_train import TuneReportCallback
        fit(cfg, num_workers=(max(1, cfg.min_workers), max(1, cfg.max_workers)), use_gpu=cfg.use_gpu,
            cpus_per_worker=cfg.cpus_per_worker, storage_path=trial_uri, store=setup["store"],
            max_failures=cfg.max_failures, progress_bar=False, run_name="train",
            worker_resources=parse_resources(cfg.worker_resources), callbacks=[TuneReportCallback()],
            hooks=functools.partial(SweepHooks, spec))
