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
import logging
import re
from pathlib import Path
from typing import Optional

from ..core.config import NAME, SCHEDULED_KEYS, from_dict
from ..core.evaluate import METRICS, Scorer, test_images, translate_images
from ..core.experiment import EXPLOITS, OBJECTIVE, PAIR_KEY, SCORE_FILE, TRAIN_RUN, TRAIN_RUNS, trial_values
from ..core.schedules import set_lr
from ..core.storage import FolderMirror, Storage
from ..core.stored import parse_json
from ..core.trainer import Hooks, Trainer
from .runtime import quiet_data
from .scratch import node_scratch
from .train import TrialRun, fit, shared_dataroot
from .worker import Report, restore_from

log = logging.getLogger("cyclegan")
# The training options a population-based sweep may change mid-run, logged with every score.


class SweepHooks(Hooks):
    """What a trial adds to training: its score at every report (for ASHA and Optuna), the best so far,
    the TensorBoard HParams session and fixed-image grids (events that go to the trial's folder), and each
    checkpoint's score."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.store: Storage = spec["store"]
        self.metric, self.mode = spec["metric"], METRICS[spec["metric"]][0]
        self.best: Optional[float] = None
        # A population-based sweep's record of this trial's state: each time it (or a trial it descends from)
        # went on from another trial's checkpoint, from which, when, and what the explore step changed.
        self.lineage: list[dict] = []
        self.exploited: Optional[dict] = None  # this start's exploit, if it is one
        self.scored: tuple[int, dict] = (-1, {})
        self.unscored: Optional[tuple[int, float]] = None  # (images, epochs) of a checkpoint reported unscored
        self.scorer = None

    def start(self, trainer) -> None:
        if not trainer.is_main:
            return
        e = self.exploited
        # The donor's name comes from a stored file: it names a file only as a trial folder's name.
        if e is not None and self.spec.get("trial_uri") and re.fullmatch(NAME, str(e["from"])):
            # The trial's own record of its exploits (its checkpoints from now on carry the donor's history):
            # one file per exploit, never rewritten, read by the report.
            images = e["total_iters"] if isinstance(e.get("total_iters"), int) else 0
            self.store.write_text(f"{self.spec['trial_uri']}/{EXPLOITS}/{images:012d}-{e['from']}.json", json.dumps(e))
        cfg = trainer.cfg
        self.scorer = Scorer(cfg, self.metric, self.spec["feature_extractor"], self.spec["eval_images"], self.store,
                             trainer.model.device, weights_uri=self.spec.get("inception_weights"))
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
        epochs = p.epoch - trainer.cfg.epoch_count + p.epoch_iter / max(1, trainer.epoch_length())
        self.unscored = None
        if trainer.saves.preemption_saved:
            # The node goes within the notice: its checkpoint comes first, and a score (FID: Inception over the
            # test images) would spend the time the upload needs. Reported without the metric (ASHA and Optuna
            # take the next score); ranked below every scored checkpoint (NaN), kept as the latest to resume.
            self.unscored = (p.total_iters, epochs)
            return {OBJECTIVE: float("nan"), "epochs": epochs, "score_skipped": 1}
        if self.scored[0] == p.total_iters:  # the end-of-run report follows the last save at the same step
            return self.scored[1]
        scores = self.scorer(trainer.model.G_A, trainer.model.G_B)
        value = float(scores[self.metric])
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
        # Tune gets the headline numbers; TensorBoard gets every direction and the identity baseline.
        out = {self.metric: value, f"best_{self.metric}": self.best, "epochs": epochs,
               OBJECTIVE: value if self.mode == "min" else -value,
               **{f"score_{k}": float(v) for k, v in scores.items() if k in METRICS}}
        writer = trainer.writer
        if writer is not None:
            step = p.total_iters
            writer.add_scalar(f"hparams/{self.metric}", value, step)
            writer.add_scalar(f"hparams/best_{self.metric}", self.best, step)
            for key in SCHEDULED_KEYS:  # what a population-based sweep changes mid-run: its schedule, as curves
                writer.add_scalar(f"schedule/{key}", getattr(trainer.cfg, key), step)
            for key, v in scores.items():
                writer.add_scalar(f"score/{key}", v, step)
            self._log_grids(trainer, step)
            writer.flush()
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

    def checkpoint_files(self, folder: Path) -> None:
        """The score of the weights in this checkpoint (what the report ranks and exports by), and the best
        so far (what a resumed trial continues from)."""
        whose = {"trial": self.spec.get("trial"), "params": self.spec["hparams"], "lineage": self.lineage}
        if self.unscored is not None:  # a notice's checkpoint: no score of these weights
            step, epochs = self.unscored
            (folder / SCORE_FILE).write_text(json.dumps({"best": self.best, "metric": self.metric, "total_iters": step,
                                                         "score": None, "epochs": epochs, "reported": {}, **whose}))
            return
        step, scored = self.scored
        (folder / SCORE_FILE).write_text(json.dumps(
            {"best": self.best, "metric": self.metric, "total_iters": step, "score": scored.get(self.metric),
             "epochs": scored.get("epochs"), "reported": scored, **whose}))

    def restore_files(self, read) -> None:
        saved = read(SCORE_FILE)
        if saved is not None:
            saved = parse_json(saved, SCORE_FILE)
            self.best = saved.get("best")
            self.lineage = list(saved.get("lineage") or [])
            own = self.spec.get("trial")
            if saved.get("trial") and own and saved["trial"] != own:
                # Another trial's checkpoint: a population-based sweep's exploit. This trial is now that one's
                # clone, with the explored hyperparameters; its history is the donor's and this step.
                donor = {k: v for k, v in (saved.get("params") or {}).items() if k != PAIR_KEY}
                mine = {k: v for k, v in self.spec["hparams"].items() if k != PAIR_KEY}
                self.lineage.append({"trial": own, "from": saved["trial"], "epochs": saved.get("epochs"),
                                     "total_iters": saved.get("total_iters"), "before": donor, "after": mine,
                                     "changed": {k: [donor.get(k), v] for k, v in mine.items() if donor.get(k) != v}})
                log.info("trial %s goes on from %s's checkpoint at %d images with %s", own, saved["trial"],
                         saved.get("total_iters", 0), self.lineage[-1]["changed"] or "its hyperparameters unchanged")
                self.exploited = self.lineage[-1]  # recorded by the first process when it starts
            elif saved.get("reported"):  # a trial restored at its last image reports that score, not a new one
                self.scored = (saved["total_iters"], saved["reported"])

    def restored(self, trainer, state: dict) -> None:
        take_hyperparameters(trainer, state["config"])


def take_hyperparameters(trainer: Trainer, saved: dict) -> None:
    """A population-based sweep's clone goes on from another trial's state (its options ``saved``) with its
    own hyperparameters, from its first step: the pools take its size now, a plateau schedule's rate follows
    its base rate (the stateless policies are computed from it at every epoch); the objective's weights are
    read at every step. A trial restored from its own state changes nothing."""
    model, cfg = trainer.model, trainer.cfg
    for pool in (model.fake_A_pool, model.fake_B_pool):
        pool.resize(cfg.pool_size)
    if model.plateau is not None and saved.get("lr") and saved["lr"] != cfg.lr:
        set_lr((model.optimizer_G, model.optimizer_D), model.optimizer_G.param_groups[0]["lr"] * cfg.lr / saved["lr"])


def trial_folder(trial) -> str:
    """A trial's name and folder in the sweep: ``<pair>_<trial id>``."""
    return f"{trial.config[PAIR_KEY]}_{trial.trial_id}"


def staged_weights(exp) -> Optional[str]:
    """Where a trial reads the FID Inception's weights, pinned (``#sha256=``) to the hash the sweep's driver
    staged them with, from its own copy: a file replaced in the storage since is refused, not scored with.
    Unpinned (no hash from the driver), the file must be the published one."""
    uri, digest = exp.inception_weights_uri, getattr(exp, "inception_sha256", None)
    return f"{uri}#sha256={digest}" if uri and digest else uri


def run_trial(params: dict, setup: dict) -> None:
    """One trial: Tune calls it with the sampled values and the pair (and again, from its checkpoint, after a
    restart). Whatever it writes on its node is scratch; its record is in the sweep's storage."""
    from ray import tune
    exp, store = setup["experiment"], setup["store"]
    pair = next(p for p in exp.pairs if p.name == params[PAIR_KEY])
    sampled = {k: v for k, v in params.items() if k != PAIR_KEY}
    trial_id = tune.get_context().get_trial_id()
    trial_uri = f"{exp.uri}/{params[PAIR_KEY]}_{trial_id}"
    metric = exp.metric(pair)
    spec = {"metric": metric, "feature_extractor": exp.search.feature_extractor,
            "eval_images": exp.search.eval_images, "grid_images": exp.search.grid_images,
            "trial_uri": trial_uri, "trial": f"{params[PAIR_KEY]}_{trial_id}", "store": store,
            "hparams": {PAIR_KEY: pair.name, **sampled},
            "inception_weights": staged_weights(exp)}
    values = trial_values(exp, pair, sampled)
    with node_scratch("trial") as scratch:
        # A built-in pair is written here, on this node, for this trial (it is cheap and deterministic).
        cfg = from_dict({**values, "name": "run", "checkpoints_dir": str(scratch), "storage_options": None})
        if cfg.max_workers > 0:  # the trial drives a Ray Train run; its workers have their own scratch
            # A built-in pair goes where every node reads it, once for the sweep.
            cfg = dataclasses.replace(cfg, dataroot=shared_dataroot(cfg, exp.uri, store))
            run_name, start_from = train_run(store, trial_uri, tune.get_checkpoint())
            # One TensorBoard run per trial, beside Tune's files; a trial's record is its checkpoints and
            # events (the report exports its weights), so the run's own files stay on the node.
            reported_to_tune(lambda callback: fit(cfg, store, progress_bar=False, trial=TrialRun(
                storage_path=trial_uri, run_name=run_name, callbacks=[callback],
                hooks=functools.partial(SweepHooks, spec), events_uri=trial_uri, run_files=False,
                score=(OBJECTIVE, "min"), scans=exp.uri, start_from=start_from)))
            return
        quiet_data()
        import torch
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))  # the CPUs Tune reserved, not the machine's
        events = scratch / "tensorboard"

        def report_fn(metrics, folder):
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)
        hooks = [SweepHooks(spec), Report(report_fn, mirrors=(FolderMirror(store, events, trial_uri),))]
        trainer = Trainer(cfg, progress_bar=False, tensorboard_dir=events, store=store, hooks=hooks)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            restore_from(trainer, checkpoint)
        trainer.run()


POINTER = "train_checkpoint.json"  # what a Train-inside-Tune trial's Tune checkpoint holds


def _forward_reports(queue):
    from ray.train.v2.api.callback import UserCallback

    class ToTrial(UserCallback):
        """In the Train run's controller: each report (the first worker's metrics) and its checkpoint's path,
        to the trial's process, which reports them to Tune."""

        def __init__(self, queue):
            self.queue = queue

        def after_report(self, run_context, metrics, checkpoint) -> None:
            self.queue.put((dict(metrics[0]), checkpoint.path if checkpoint else None))
    return ToTrial(queue)


def reported_to_tune(fit_run) -> None:
    """Run ``fit_run(callback)`` (a Ray Train run) and report its results to Tune, each checkpoint as a Tune
    checkpoint that names it (``POINTER``; the weights stay where Train wrote them). Ray's TuneReportCallback
    gives Tune the reports but no checkpoint, so a population-based scheduler had nothing to clone."""
    import tempfile
    import threading

    from ray import tune
    from ray.util.queue import Empty, Queue
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})  # Train's controller waits for each to be taken
    outcome: dict = {}

    def run() -> None:
        try:
            fit_run(_forward_reports(queue))
        except BaseException as e:  # raised again in the trial's thread
            outcome["error"] = e
        finally:
            outcome["done"] = True

    def report(item) -> None:
        metrics, path = item
        if path is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="cyclegan-pointer-") as folder:
            (Path(folder) / POINTER).write_text(json.dumps({"path": path}))
            tune.report({**metrics, "checkpoint_path": path}, checkpoint=tune.Checkpoint.from_directory(folder))

    thread = threading.Thread(target=run, name="train-run", daemon=True)
    thread.start()
    try:
        while not outcome.get("done"):
            try:
                report(queue.get(timeout=1.0))
            except Empty:
                pass
        while True:  # what the run reported just before it returned
            try:
                report(queue.get_nowait())
            except Empty:
                break
    finally:
        # Also when Tune stops the trial in a report (a population pausing it): without the queue the run's next
        # report fails in its controller, which ends the run.
        queue.shutdown(force=True)
        thread.join(timeout=60)
    if "error" in outcome:
        raise outcome["error"]


def train_run(store: Storage, trial_uri: str, checkpoint) -> tuple[str, Optional[object]]:
    """Which Ray Train run a Train-inside-Tune trial (re)starts, and from which other run's checkpoint: its own
    run (Train resumes it from its own latest checkpoint), or, when Tune hands it another trial's checkpoint
    (a population's exploit), a new run of its own that starts from that checkpoint."""
    import uuid

    import ray.train
    fs, trial_path = store.ray_storage(trial_uri)
    if checkpoint is None:
        return TRAIN_RUN, None
    with checkpoint.as_directory() as folder:
        pointer = Path(folder) / POINTER
        path = parse_json(pointer.read_bytes(), str(pointer)).get("path") if pointer.exists() else None
    sweep_path = trial_path.rstrip("/").rsplit("/", 1)[0]
    if not isinstance(path, str) or not path.startswith(f"{sweep_path}/") or ".." in path.split("/"):
        if path is not None:  # a stored name is data: only a checkpoint of this sweep is read
            log.warning("%s: the Tune checkpoint names %r, not a checkpoint of this sweep; going on with the "
                        "trial's own run", trial_uri, path)
        return TRAIN_RUN, None
    if path.startswith(f"{trial_path.rstrip('/')}/"):
        run = path[len(trial_path.rstrip("/")) + 1:].split("/", 1)[0]
        return (run if re.fullmatch(TRAIN_RUNS, run) else TRAIN_RUN), None
    return f"{TRAIN_RUN}-{uuid.uuid4().hex[:8]}", ray.train.Checkpoint(path, filesystem=fs)
