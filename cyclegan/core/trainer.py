"""The training loop on one process: data, steps, logging, checkpoints, resumption.

Knows nothing of Ray. A ``Trainer`` is made of its config, where its batches come from (``data``: a
folder dataset through a DataLoader by default) and how a save is written (``checkpoints``: full-state
files by default); what a caller adds to the loop (reports, scores, a preemption notice, files mirrored to
storage) comes in through one seam, ``Hooks``. The Ray layer builds the same ``Trainer`` in each worker
with a Ray Data stream, Ray Train checkpoints and its hooks.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import yaml
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config, ConfigError, check_trainable
from .data import resolve_dataroot, to_uint8
from .datasets import UnalignedDataset
from .evaluate import has_ideal, score_translation
from .model import CycleGAN
from .objective import LOSS_NAMES
from .parallel import agree_max, process_group
from .schedules import set_lr
from .storage import Storage

log = logging.getLogger("cyclegan")

# Options that change the shape of the networks: a checkpoint only resumes a run that agrees on them.
ARCHITECTURE_KEYS = ("netG", "netD", "n_layers_D", "ngf", "ndf", "norm", "input_nc", "output_nc", "no_dropout")


def crossed(total: int, step: int, every: int) -> bool:
    """True when the count moved past a multiple of ``every`` in the last ``step``."""
    return total // every > (total - step) // every


class Hooks:
    """The one way into the training loop: what a caller adds to a run. Override what you need; every
    method does nothing by default. ``Trainer(cfg, hooks=[...])`` calls them in the order given.

    A hook may also add files to the checkpoints a run reports (``checkpoint_files``) and read them back
    when a run is restored from one (``restore_files``): the Ray layer's reporting calls these."""

    checks_notices = False  # notice() asks something that costs (a Ray call): ask only at the checks (see after_step)

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


class FolderBatches:
    """A run's batches from its dataset folders, through a DataLoader of this process."""

    def __init__(self, cfg: Config, dataset: Optional[UnalignedDataset] = None, pin_memory: bool = False):
        self.cfg, self.pin_memory = cfg, pin_memory
        self.dataset = dataset if dataset is not None else UnalignedDataset(cfg)
        self.skipped = self.dataset.skipped

    def epoch_length(self) -> int:
        """Images of an epoch that this process trains on."""
        return self.dataset.epoch_length

    def batches(self, epoch: int, start: int):
        """Batches of ``epoch`` from image ``start`` on."""
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


@dataclass
class Progress:
    """Where the run is: ``epoch`` is the epoch in progress, ``epoch_iter`` images done in it."""
    epoch: int
    epoch_iter: int = 0
    total_iters: int = 0
    epoch_loss_G: float | torch.Tensor = 0.0  # sum over the epoch, for the plateau schedule (a tensor while it runs)
    epoch_steps: int = 0
    history: list = field(default_factory=list)  # per-step losses (kept only when asked)


def purge_step(total_iters: int) -> Optional[int]:
    """Where TensorBoard hides a lost attempt's events from: the step after the checkpoint resumed from
    (what was logged at its step came before it was written, and is not logged again)."""
    return total_iters + 1 if total_iters else None


EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d{1,12})\.")
EVENTS_WAIT_S = 2.0  # the longest a purging writer waits for its folder's newest second to pass


def events_writer(log_dir: Path, purge: Optional[int]):
    """A TensorBoard writer for ``log_dir``; ``purge``: the step from which earlier files' events are hidden.
    TensorBoard reads a folder's files in name order, and a name is the second it was made in, then host,
    pid and a counter compared as text ('.10' before '.9'): a purging file made in the same second as one
    it must purge could be read first and purge nothing. So it is made in a later second than any there
    (a wait only after an attempt that lasted under a second). A file dated further ahead than that (another
    host's fast clock, a copied folder) cannot be outwaited: the wait is bounded and says why."""
    from torch.utils.tensorboard import SummaryWriter
    if purge is not None and log_dir.is_dir():
        newest = max((int(m.group(1)) for name in os.listdir(log_dir) if (m := EVENT_FILE.match(name))), default=0)
        if newest > time.time() + EVENTS_WAIT_S:
            log.warning("%s holds an events file dated %s, ahead of this clock (another host's, or a copied "
                        "folder): TensorBoard may show its steps past step %d twice", log_dir,
                        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(min(newest, 2**31 - 1))), purge)
        else:
            while int(time.time()) <= newest:
                time.sleep(0.05)
    return SummaryWriter(str(log_dir), purge_step=purge)


def resumed_position(state: dict, world_size: int) -> tuple[int, int]:
    """Where a full state goes on in a group of ``world_size`` processes: (epoch, images into it per
    process). Positions count a process's images; with another number of processes (elastic training)
    the epoch's remaining samples are split anew."""
    p = state["progress"]
    return p["epoch"], p["epoch_iter"] * p.get("world_size", 1) // world_size


class Trainer:
    def __init__(self, cfg: Config, device: Optional[torch.device] = None, progress_bar: bool = True,
                 keep_history: bool = False, data=None, checkpoints=None, hooks: Sequence[Hooks] = (),
                 tensorboard_dir: Optional[Path] = None, run_dir: Optional[Path] = None,
                 store: Optional[Storage] = None):
        """``data``: where batches come from (``epoch_length()``, ``batches(epoch, start)``, ``skipped``;
        default: the dataset folders); ``checkpoints``: how a save is written (``write(trainer, labels)``;
        default: state files); ``hooks``: what the caller adds to the loop; ``run_dir``: where this
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
        self.data = data if data is not None else FolderBatches(cfg, pin_memory=self.model.device.type == "cuda")
        self.checkpoints = checkpoints if checkpoints is not None else StateFiles()
        self.hooks = list(hooks)
        self.progress = Progress(epoch=cfg.epoch_count)
        self.resumed_from: Optional[dict] = None  # where the last restore picked the run up
        self.last_losses: dict[str, torch.Tensor] = {}  # the last step's, on the device
        self.preemption_saved = False  # a notice's checkpoint is written once
        # Checks for notices and timed saves (after_step): when the next is, and the last one's (clock, images).
        self.next_check: Optional[int] = None
        self.last_check: tuple[float, int] = (time.monotonic(), 0)
        # Where the loop's time goes (result.json): set by run().
        self.started: Optional[tuple[float, int]] = None  # (clock, images done) when the loop began
        self.data_waits: dict[int, list[float]] = {}  # per epoch: seconds the loop waited for each batch
        self.save_waits: list[float] = []  # seconds each save held the loop
        self.last_save_at = time.monotonic()
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
        """Continue from a full state; ``own``: this process's part of a data-parallel state (its image
        pools and random streams, see ``rank_state``), saved beside it by every process."""
        saved = state["config"]
        for key in ARCHITECTURE_KEYS:
            if saved.get(key) != getattr(self.cfg, key):
                raise ConfigError(f"{key}: {getattr(self.cfg, key)!r} differs from the checkpoint's "
                                  f"{saved.get(key)!r}; a run resumes only with the same networks")
        self.model.load_training_state(state["model"])
        ckpt.set_rng_state(state["rng"])
        if own is None and "ranks" in state:  # states written before each process saved its own part
            own = state["ranks"][self.rank % len(state["ranks"])]
        if own is not None:
            self.model.fake_A_pool.load_state_dict(own["pools"]["fake_A"], self.model.device)
            self.model.fake_B_pool.load_state_dict(own["pools"]["fake_B"], self.model.device)
            ckpt.set_generator_state(self.model.gp_rng, own["gp_rng"])
            ckpt.set_rng_state(own["rng"])
        # A population-based sweep's clone goes on from another trial's state with its own hyperparameters:
        # the pools take its size now, a plateau schedule's rate follows its base rate (the stateless
        # policies are computed from it at every epoch); the objective's weights are read at every step.
        for pool in (self.model.fake_A_pool, self.model.fake_B_pool):
            pool.resize(self.cfg.pool_size)
        if self.model.plateau is not None and saved.get("lr") and saved["lr"] != self.cfg.lr:
            set_lr((self.model.optimizer_G, self.model.optimizer_D),
                   self.model.optimizer_G.param_groups[0]["lr"] * self.cfg.lr / saved["lr"])
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
        self.last_save_at = time.monotonic()
        return self.checkpoints.write(self, reference_labels)

    def hook_metrics(self) -> dict:
        """What the hooks add to a report."""
        out: dict = {}
        for hook in self.hooks:
            out.update(hook.metrics(self))
        return out

    # ------------------------------------------------------------------ logging
    def _log_scalars(self, window: dict[str, list[float]], lr: float) -> None:
        step = self.progress.total_iters
        for name, values in window.items():
            values = torch.stack(values).tolist()  # one read-back of the window per loss
            self.writer.add_scalar(f"loss/{name}", sum(values) / len(values), step)
        self.writer.add_scalar("lr", lr, step)

    def _log_images(self) -> None:
        import torchvision
        v = self.model.visuals

        def row(names):  # the bytes a results page would show (tensor2im), one channel tiled to three
            tiles = [to_uint8(v[n][0].detach().cpu(), truncate=True) for n in names if v.get(n) is not None]
            tiles = [t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in tiles]
            return torchvision.utils.make_grid(tiles, nrow=len(tiles), padding=2)
        step = self.progress.total_iters
        self.writer.add_image("images/A", row(["real_A", "fake_B", "rec_A", "idt_B"]), step)
        self.writer.add_image("images/B", row(["real_B", "fake_A", "rec_B", "idt_A"]), step)

    # ------------------------------------------------------------------ loop
    def epoch_length(self) -> int:
        return self.data.epoch_length()

    def after_step(self, n: int) -> bool:
        """After every step of ``n`` images: True asks for a checkpoint now, for a preemption notice (once)
        or a due --save_latest_secs save. With several processes, or hooks whose notice costs a call (a
        barrier), this is decided at checks: the first after --notice_check_freq images, then about every
        --notice_check_secs. At a check the processes agree (one small all-reduce on the model's device,
        the first process's clock deciding a timed save) on the flags and on the slowest seconds per
        image since the last check, from which each computes the same next check: all save at one step,
        and between checks no step waits for the host."""
        total = self.progress.total_iters
        checked = self.world_size > 1 or any(h.checks_notices for h in self.hooks)
        if checked:
            if self.next_check is None:
                if not crossed(total, n, self.cfg.notice_check_freq):
                    return False
            elif total < self.next_check:
                return False
        notice = any(h.notice(self) for h in self.hooks)
        due = self.is_main and self.save_time_due()
        now = time.monotonic()
        pace = (now - self.last_check[0]) / max(1, total - self.last_check[1])  # seconds per image here
        if self.world_size > 1:  # one all-reduce: the flags (0/1) and the pace
            agreed = agree_max([float(notice), float(due), pace], self.model.device)
            notice, due, pace = agreed[0] > 0, agreed[1] > 0, agreed[2]
        self.last_check = (now, total)
        self.next_check = total + max(n, math.ceil(self.cfg.notice_check_secs / max(pace, 1e-9)))
        if notice and not self.preemption_saved:
            self.preemption_saved = True
            log.warning("preemption notice: writing a checkpoint before the node goes")
            return True
        return due

    def save_time_due(self) -> bool:
        secs = self.cfg.save_latest_secs
        return secs > 0 and time.monotonic() - self.last_save_at >= secs

    def save_labels(self, requested: bool, finished_epoch: Optional[int] = None) -> tuple[str, ...]:
        """Whether a save is due now, as the reference-format labels it writes (empty: no save).

        Mid-epoch (``finished_epoch`` None): a ``requested`` save (save_latest_freq crossed or a
        preemption notice) writes ``latest``, or ``iter_<total_iters>`` instead with --save_by_iter, as
        the reference does. On the epoch's last step it is not written yet: the position would be
        the epoch's end before its schedule step, so it waits for the end of the epoch.
        At the end of an epoch (position: the start of the next): ``latest`` and ``<epoch>`` every
        save_epoch_freq epochs, ``latest`` after the last epoch, plus a request that waited, all in
        one save.
        """
        cfg, p = self.cfg, self.progress
        periodic = (f"iter_{p.total_iters}",) if cfg.save_by_iter else ("latest",)
        if finished_epoch is None:
            return periodic if requested and p.epoch_iter < self.epoch_length() else ()
        labels: tuple[str, ...] = ()
        if finished_epoch % cfg.save_epoch_freq == 0:
            labels = ("latest", str(finished_epoch))
        elif finished_epoch == cfg.total_epochs:
            labels = ("latest",)
        if requested:
            labels += tuple(label for label in periodic if label not in labels)
        return labels

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> dict:
        cfg, model, p = self.cfg, self.model, self.progress
        if self.tensorboard_dir is not None:
            # Opened here, where the run goes on from (after any restore): a resumed run's writer hides what
            # a lost attempt logged past the checkpoint (its purge step), so each step shows once.
            self.writer = events_writer(self.tensorboard_dir, purge_step(p.total_iters))
        for hook in self.hooks:
            hook.start(self)
        self.started = (time.perf_counter(), p.total_iters)
        self.next_check, self.last_check = None, (time.monotonic(), p.total_iters)  # from where this run starts
        self.data_waits, self.save_waits, self.last_save_at = {}, [], time.monotonic()
        window: dict[str, list[float]] = {name: [] for name in LOSS_NAMES}
        requested = False  # a periodic save or a preemption notice not yet written
        while p.epoch <= cfg.total_epochs:
            lr = model.set_epoch_lr(p.epoch)
            bar = tqdm(total=self.epoch_length(), initial=p.epoch_iter, unit="img", leave=False,
                       desc=f"epoch {p.epoch}/{cfg.total_epochs}", disable=not self.progress_bar,
                       mininterval=0.1 if sys.stderr.isatty() else 30.0)  # logs get a line per 30 s
            for batch in waited_for(self.data.batches(p.epoch, p.epoch_iter), self.data_waits.setdefault(p.epoch, [])):
                # Losses stay on the device (detached); they are read back only to log (below), for
                # the history when kept, and at checkpoints (last_losses), so steps queue without a sync.
                losses = self.last_losses = model.optimize(batch["A"], batch["B"])
                n = batch["A"].shape[0]
                p.epoch_iter += n
                p.total_iters += n
                p.epoch_loss_G = p.epoch_loss_G + model.loss_G.double()  # the step's total, summed on the device
                p.epoch_steps += 1
                if self.keep_history:
                    p.history.append({name: float(value) for name, value in losses.items()})
                for name, value in losses.items():
                    window[name].append(value)
                bar.update(n)
                if crossed(p.total_iters, n, cfg.print_freq):
                    bar.set_postfix({k: f"{float(losses[k]):.3f}" for k in ("G_A", "D_A", "cycle_A")}, refresh=False)
                    if self.writer is not None:
                        self._log_scalars(window, lr)
                        window = {name: [] for name in LOSS_NAMES}
                if self.writer is not None and crossed(p.total_iters, n, cfg.image_log_freq):
                    self._log_images()
                wanted = self.after_step(n)  # under data parallelism: the same answer on every process
                requested = requested or wanted or crossed(p.total_iters, n, cfg.save_latest_freq)
                labels = self.save_labels(requested)
                if labels:
                    requested = False
                    self._save_and_report(labels)
            bar.close()
            finished = p.epoch
            model.end_epoch(float(p.epoch_loss_G) / max(1, p.epoch_steps))
            p.epoch, p.epoch_iter, p.epoch_loss_G, p.epoch_steps = p.epoch + 1, 0, 0.0, 0
            if self.writer is not None and any(window.values()):
                self._log_scalars({k: v for k, v in window.items() if v}, lr)
                window = {name: [] for name in LOSS_NAMES}
            labels = self.save_labels(requested, finished_epoch=finished)
            requested = False
            if labels:
                self._save_and_report(labels)
            if self.is_main:
                log.info("end of epoch %d / %d: %d images, lr %.7f", finished, cfg.total_epochs, p.total_iters, lr)
        result = self.finish()
        for hook in self.hooks:
            hook.end(self, result)
        return result

    def _save_and_report(self, labels: tuple[str, ...]) -> None:
        began = time.perf_counter()
        path = self.save(labels)
        for hook in self.hooks:
            hook.saved(self, path)
        self.save_waits.append(time.perf_counter() - began)  # the loop's time in saves, uploads apart

    def finish(self) -> dict:
        result: dict = {"epochs": self.cfg.total_epochs, "total_iters": self.progress.total_iters,
                        "skipped_images": self.data.skipped, "resumed_from": self.resumed_from,
                        "world_size": self.world_size}
        if self.started is not None:  # throughput of this process's loop, all processes' images
            seconds = time.perf_counter() - self.started[0]
            result["train_seconds"] = seconds
            result["images_per_sec"] = (self.progress.total_iters - self.started[1]) * self.world_size / seconds
            # Where the loop's time went: waiting for data, in all and for each epoch's first batch
            # (the stall at an epoch boundary; the first epoch's includes the data pipeline's start).
            waits = {epoch: w for epoch, w in self.data_waits.items() if w}
            result["data_wait_seconds"] = sum(map(sum, waits.values()))
            result["epoch_first_batch_wait"] = {str(epoch): w[0] for epoch, w in waits.items()}
            result["saves"], result["save_seconds"] = len(self.save_waits), sum(self.save_waits)
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


def waited_for(batches, waits: list[float]):
    """The batches, with the seconds spent waiting for each appended to ``waits``."""
    it = iter(batches)
    while True:
        began = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        waits.append(time.perf_counter() - began)
        yield batch


def train(cfg: Config, **kwargs) -> dict:
    return Trainer(cfg, **kwargs).run()
