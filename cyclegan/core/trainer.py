"""The training loop on one process: data, steps, logging, checkpoints, resumption.

Knows nothing of Ray. A ``Trainer`` is made of its config and its parts, each declared here as the
interface the loop relies on: where its batches come from (``Batches``; by default ``FolderBatches``, a
folder dataset through a DataLoader), how a save is written (``Checkpoints``; by default ``StateFiles``,
full-state files) and what a caller adds to the loop (reports, scores, a preemption notice, files
mirrored to storage), through one seam, ``Hooks``. When to save is its ``SaveSchedule``
(core/save_schedule.py). The Ray layer builds the same ``Trainer`` in each worker with a Ray Data stream,
Ray Train checkpoints and its hooks.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence

import torch
import yaml
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import ARCHITECTURE_KEYS, Config, ConfigError, check_trainable
from .data import resolve_dataroot
from .datasets import UnalignedDataset
from .evaluate import has_ideal, score_translation
from .events import events_writer, log_images, log_scalars, purge_step
from .model import CycleGAN
from .objective import LOSS_NAMES
from .parallel import process_group
from .progress import LoopTimes, Progress, resumed_position
from .save_schedule import SaveSchedule, crossed
from .storage import Storage

log = logging.getLogger("cyclegan")

# Options that change the shape of the networks: a checkpoint only resumes a run that agrees on them.


class Batches(Protocol):
    """Where a run's batches come from (the trainer's ``data``)."""

    skipped: int  # unreadable images passed over, for the run's result

    def epoch_length(self) -> int:
        """Images of an epoch that this process trains on."""
        ...

    def batches(self, epoch: int, start: int) -> Iterable[dict[str, Any]]:
        """Batches (``{"A": tensor, "B": tensor}``) of ``epoch`` from this process's image ``start`` on."""
        ...


class Checkpoints(Protocol):
    """How a save is written (the trainer's ``checkpoints``); every process calls it at the same step."""

    def write(self, trainer: "Trainer", reference_labels: tuple[str, ...]) -> Optional[Path]:
        """The trainer's state (and reference-format weights as ``reference_labels``) written: where (a file
        or a folder), or None on a process that writes nothing."""
        ...


class Hooks(Protocol):
    """The one way into the training loop: what a caller adds to a run. Subclass it and override what you
    need; every method does nothing by default. ``Trainer(cfg, hooks=[...])`` calls them in the order given.

    A hook may also add files to the checkpoints a run reports (``checkpoint_files``) and read them back
    when a run is restored from one (``restore_files``, then ``restored``): the Ray layer's reporting and
    restoring call these."""

    checks_notices = False  # notice() asks something that costs (a Ray call): ask only at the schedule's checks

    def start(self, trainer: "Trainer") -> None:
        """After the trainer is built (and restored), before the first step."""

    def notice(self, trainer: "Trainer") -> bool:
        """True once the machine this process runs on is about to be taken away (a spot notice): the
        processes agree, and all write a checkpoint at the same step."""
        return False

    def metrics(self, trainer: "Trainer") -> dict:
        """Extra figures for the reports made at every save and at the end (a sweep trial's score)."""
        return {}

    def saved(self, trainer: "Trainer", path: Optional[Path]) -> None:
        """After every save (``path``: what the checkpoints part wrote; None on the processes that write
        nothing)."""

    def end(self, trainer: "Trainer", result: dict) -> None:
        """After the last epoch, with the run's result (result.json written)."""

    def checkpoint_files(self, folder: Path) -> None:
        """Add files to a checkpoint folder about to be reported."""

    def restore_files(self, read: Callable[[str], Optional[bytes]]) -> None:
        """Read back what ``checkpoint_files`` wrote (``read(name)``: a file of the checkpoint, None when
        absent)."""

    def restored(self, trainer: "Trainer", state: dict) -> None:
        """After the trainer went on from the full state ``state`` (restored as saved) and the hooks read
        their files back: what a caller changes in the restored run (a population-based sweep's clone takes
        its own hyperparameters)."""


class FolderBatches:
    """A run's batches from its dataset folders, through a DataLoader of this process."""

    def __init__(self, cfg: Config, dataset: Optional[UnalignedDataset] = None, pin_memory: bool = False):
        self.cfg, self.pin_memory = cfg, pin_memory
        self.dataset = dataset if dataset is not None else UnalignedDataset(cfg)
        self.skipped = self.dataset.skipped

    def epoch_length(self) -> int:
        return self.dataset.epoch_length

    def batches(self, epoch: int, start: int):
        self.dataset.set_epoch(epoch, start=start)
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.cfg.batch_size, shuffle=False,
                                           num_workers=self.cfg.num_threads, drop_last=False,
                                           pin_memory=self.pin_memory)


class StateFiles:
    """Saves as full-state files (atomic, the newest --keep_checkpoints kept) in ``<run_dir>/state`` and
    reference-format weights beside them, written by the first process; the others write nothing."""

    def write(self, trainer: "Trainer", reference_labels: tuple[str, ...]) -> Optional[Path]:
        if not trainer.is_main:
            return None
        path = ckpt.save_state(trainer.run_dir, trainer.state(), keep=trainer.cfg.keep_checkpoints)
        for label in reference_labels:
            ckpt.save_reference_weights(trainer.run_dir, trainer.model.networks(), label)
        return path


class Trainer:
    def __init__(self, cfg: Config, device: Optional[torch.device] = None, progress_bar: bool = True,
                 keep_history: bool = False, data: Optional[Batches] = None,
                 checkpoints: Optional[Checkpoints] = None, hooks: Sequence[Hooks] = (),
                 tensorboard_dir: Optional[Path] = None, run_dir: Optional[Path] = None,
                 store: Optional[Storage] = None):
        """``data``: where batches come from (default: the dataset folders); ``checkpoints``: how a save
        is written (default: state files); ``hooks``: what the caller adds to the loop; ``run_dir``: where this
        process writes the run's files (default ``<checkpoints_dir>/<name>``); ``store``: how to reach a
        dataroot in object storage (the end-of-run score reads it)."""
        check_trainable(cfg)
        cfg = dataclasses.replace(cfg, dataroot=resolve_dataroot(cfg))
        self.cfg = cfg
        self.store = store or Storage.from_options()
        self.rank, self.world_size = process_group()
        self.is_main = self.rank == 0  # only the first process writes files
        self.progress_bar = progress_bar and self.is_main
        self.keep_history = keep_history
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.model = CycleGAN(cfg, device=device)
        self.data: Batches = data if data is not None else FolderBatches(cfg, pin_memory=self.model.device.type == "cuda")
        self.checkpoints: Checkpoints = checkpoints if checkpoints is not None else StateFiles()
        self.hooks = list(hooks)
        self.progress = Progress(epoch=cfg.epoch_count)
        self.resumed_from: Optional[dict] = None  # where the last restore picked the run up
        self.last_losses: dict[str, torch.Tensor] = {}  # the last step's, on the device
        self.saves = SaveSchedule(cfg, self.world_size, self.is_main, self.model.device,
                                  notice=lambda: any(h.notice(self) for h in self.hooks),
                                  checked=any(h.checks_notices for h in self.hooks))
        self.times = LoopTimes()  # where the loop's time goes (result.json): from when run() starts it
        self.window: dict[str, list[torch.Tensor]] = {}  # each loss's values since it was last logged
        self.writer = None
        self.tensorboard_dir: Optional[Path] = None  # where the first process writes TensorBoard events
        # One writer per run: held from before the run is read until run() ends (or this process does).
        self.lock = ckpt.RunLock(self.run_dir)
        if self.is_main:
            self.lock.acquire()
        try:
            self._start(tensorboard_dir)
        except BaseException:
            self.lock.release()
            raise

    def _start(self, tensorboard_dir: Optional[Path]) -> None:
        cfg = self.cfg
        if cfg.continue_train:
            self._resume()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if ckpt.remove_stale_temporaries(self.run_dir):
                log.info("removed temporary files a killed save left in %s", self.run_dir)
            ckpt.atomic_write_text(self.run_dir / "train_opt.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if cfg.tensorboard:  # the writer opens when the loop starts (_run)
                self.tensorboard_dir = Path(tensorboard_dir or self.run_dir / "tensorboard")

    # ------------------------------------------------------------------ resume
    def _resume(self) -> None:
        cfg = self.cfg
        if cfg.epoch == "latest" and cfg.load_iter == 0:
            found = ckpt.load_latest_state(self.run_dir)
            if found is not None:
                path, state = found
                self.restore(state)
                log.info("resumed from %s (epoch %d, %d images into it)", path, self.progress.epoch,
                         self.progress.epoch_iter)
                return
        # No full state: the reference behaviour, weights only, starting at --epoch_count.
        label = ckpt.weights_label(cfg.epoch, cfg.load_iter)
        for name, net in self.model.networks().items():
            path = self.run_dir / f"{label}_net_{name}.pth"
            if not path.exists():
                raise FileNotFoundError(f"{path}: nothing to continue from (no full-state checkpoint in "
                                        f"{self.run_dir / ckpt.STATE_DIR} either)")
            ckpt.load_reference_weights(net, path)
        warnings.warn(f"continuing from reference-format weights '{label}' only: optimizer, schedule and "
                      f"image pools start fresh at epoch {cfg.epoch_count}", RuntimeWarning, stacklevel=3)

    def restore(self, state: dict, own: Optional[dict] = None) -> None:
        """Continue from a full state, exactly as it was saved (its options are the run's own: a caller
        that changes them does so after, see ``Hooks.restored``); ``own``: this process's part of a
        data-parallel state (its image pools and random streams, see ``rank_state``), saved beside it by
        every process."""
        saved = state["config"]
        for key in ARCHITECTURE_KEYS:
            if saved.get(key) != getattr(self.cfg, key):
                raise ConfigError(f"{key}: {getattr(self.cfg, key)!r} differs from the checkpoint's "
                                  f"{saved.get(key)!r}; a run resumes only with the same networks")
        self.model.load_training_state(state["model"])
        ckpt.set_rng_state(state["rng"])
        if own is not None:
            self.model.fake_A_pool.load_state_dict(own["pools"]["fake_A"], self.model.device)
            self.model.fake_B_pool.load_state_dict(own["pools"]["fake_B"], self.model.device)
            ckpt.set_generator_state(self.model.gp_rng, own["gp_rng"])
            ckpt.set_rng_state(own["rng"])
        p = state["progress"]
        self.resumed_from = {k: p[k] for k in ("epoch", "epoch_iter", "total_iters")}
        epoch, epoch_iter = resumed_position(state, self.world_size)
        self.progress = Progress(epoch=epoch, epoch_iter=epoch_iter, total_iters=p["total_iters"],
                                 epoch_loss_G=p["epoch_loss_G"], epoch_steps=p["epoch_steps"])

    def state(self) -> dict:
        """The full training state: networks, optimizers, schedule, position, and this process's image
        pools and random streams. Under data parallelism the other processes' own parts are their
        ``rank_state``, which each saves itself: nothing is gathered."""
        p = self.progress
        return {"config": self.cfg.to_dict(), "model": self.model.training_state(), "rng": ckpt.rng_state(),
                "progress": {"epoch": p.epoch, "epoch_iter": p.epoch_iter, "total_iters": p.total_iters,
                             "epoch_loss_G": float(p.epoch_loss_G), "epoch_steps": p.epoch_steps,
                             "world_size": self.world_size},
                "total_iters": p.total_iters}

    def rank_state(self) -> dict:
        """What differs between data-parallel processes: image pools, gradient-penalty and global RNGs."""
        pools = {"fake_A": self.model.fake_A_pool.state_dict(), "fake_B": self.model.fake_B_pool.state_dict()}
        return {"pools": pools, "gp_rng": self.model.gp_rng.get_state().cpu(), "rng": ckpt.rng_state()}

    # ------------------------------------------------------------------ saving
    def save(self, reference_labels: tuple[str, ...] = ("latest",)) -> Optional[Path]:
        """A checkpoint, as the checkpoints part writes it. Every process calls it at the same step."""
        self.saves.saved()
        return self.checkpoints.write(self, reference_labels)

    def hook_metrics(self) -> dict:
        """What the hooks add to a report."""
        out: dict = {}
        for hook in self.hooks:
            out.update(hook.metrics(self))
        return out

    # ------------------------------------------------------------------ loop
    def epoch_length(self) -> int:
        return self.data.epoch_length()

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> dict:
        cfg, model, p = self.cfg, self.model, self.progress
        self._begin()
        while p.epoch <= cfg.total_epochs:
            lr = model.set_epoch_lr(p.epoch)
            bar = tqdm(total=self.epoch_length(), initial=p.epoch_iter, unit="img", leave=False,
                       desc=f"epoch {p.epoch}/{cfg.total_epochs}", disable=not self.progress_bar,
                       mininterval=0.1 if sys.stderr.isatty() else 30.0)  # logs get a line per 30 s
            for batch in self.times.batches(p.epoch, self.data.batches(p.epoch, p.epoch_iter)):
                self._step(batch, lr, bar)
            bar.close()
            finished = p.epoch
            model.end_epoch(float(p.epoch_loss_G) / max(1, p.epoch_steps))
            p.epoch, p.epoch_iter, p.epoch_loss_G, p.epoch_steps = p.epoch + 1, 0, 0.0, 0
            if self.writer is not None and any(self.window.values()):
                log_scalars(self.writer, {k: v for k, v in self.window.items() if v}, lr, p.total_iters)
                self.window = {name: [] for name in LOSS_NAMES}
            labels = self.saves.after_epoch(finished, p.total_iters)
            if labels:
                self._save_and_report(labels)
            if self.is_main:
                log.info("end of epoch %d / %d: %d images, lr %.7f", finished, cfg.total_epochs, p.total_iters, lr)
        result = self.finish()
        for hook in self.hooks:
            hook.end(self, result)
        return result

    def _begin(self) -> None:
        """Where the loop starts (after any restore): events, hooks, clocks and the save schedule."""
        p = self.progress
        if self.tensorboard_dir is not None:
            # Opened here, where the run goes on from (after any restore): a resumed run's writer hides what
            # a lost attempt logged past the checkpoint (its purge step), so each step shows once.
            self.writer = events_writer(self.tensorboard_dir, purge_step(p.total_iters))
        for hook in self.hooks:
            hook.start(self)
        self.times.start(p.total_iters)
        self.saves.start(p.total_iters)  # from where this run starts
        self.window = {name: [] for name in LOSS_NAMES}

    def _step(self, batch: dict, lr: float, bar) -> None:
        """One step: the model's, the position, the logs, and a save when the schedule says so."""
        cfg, model, p = self.cfg, self.model, self.progress
        # Losses stay on the device (detached); they are read back only to log (below), for the history
        # when kept, and at checkpoints (last_losses), so steps queue without a sync.
        losses = self.last_losses = model.optimize(batch["A"], batch["B"])
        n = batch["A"].shape[0]
        p.epoch_iter += n
        p.total_iters += n
        p.epoch_loss_G = p.epoch_loss_G + model.loss_G.double()  # the step's total, summed on the device
        p.epoch_steps += 1
        if self.keep_history:
            p.history.append({name: float(value) for name, value in losses.items()})
        for name, value in losses.items():
            self.window[name].append(value)
        bar.update(n)
        if crossed(p.total_iters, n, cfg.print_freq):
            bar.set_postfix({k: f"{float(losses[k]):.3f}" for k in ("G_A", "D_A", "cycle_A")}, refresh=False)
            if self.writer is not None:
                log_scalars(self.writer, self.window, lr, p.total_iters)
                self.window = {name: [] for name in LOSS_NAMES}
        if self.writer is not None and crossed(p.total_iters, n, cfg.image_log_freq):
            log_images(self.writer, model.visuals, p.total_iters)
        labels = self.saves.after_step(n, p.total_iters, p.epoch_iter, self.epoch_length())
        if labels:
            self._save_and_report(labels)

    def _save_and_report(self, labels: tuple[str, ...]) -> None:
        began = time.perf_counter()
        path = self.save(labels)
        for hook in self.hooks:
            hook.saved(self, path)
        self.times.save_waits.append(time.perf_counter() - began)  # the loop's time in saves, uploads apart

    def finish(self) -> dict:
        result: dict = {"epochs": self.cfg.total_epochs, "total_iters": self.progress.total_iters,
                        "skipped_images": self.data.skipped, "resumed_from": self.resumed_from,
                        "world_size": self.world_size, **self.times.summary(self.progress.total_iters,
                                                                            self.world_size)}
        if self.cfg.eval_at_end and self.is_main and has_ideal(self.cfg.dataroot, self.store):
            scores = score_translation(self.model.G_A, self.model.G_B, self.cfg.dataroot, self.cfg.input_nc,
                                       self.cfg.output_nc, self.model.device, self.store)
            result["eval"] = scores
            if self.writer is not None:
                for key in ("l1", "psnr", "identity_l1"):
                    self.writer.add_scalar(f"eval/{key}", scores[key], self.progress.total_iters)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.is_main:
            ckpt.atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=2))
        return result
