"""``cyclegan train`` on Ray Train: the core trainer on N workers, data from Ray Data streams,
full-state checkpoints reported to shared storage, restarts from the latest one after failures."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch
import torch.distributed as dist
import yaml

from .. import checkpoint as ckpt
from ..config import Config, from_dict
from ..data import resolve_dataroot
from ..storage import Storage, is_remote
from ..train import Trainer
from .runtime import init_ray, parse_resources, quiet_data
from .streams import RemoteDomains, epoch_batches, samples_per_worker, scan_domains

log = logging.getLogger("cyclegan")
STATE_FILE = "state.pt"
CONFIG_FILE = "cyclegan_config.yaml"


class RunHooks(Protocol):
    """What a caller adds to a run on every worker (a sweep trial: its score, grids and files).
    ``fit`` takes a factory of them (``hooks=functools.partial(SomeHooks, spec)``): the factory travels
    to the workers and each builds its own."""

    tensorboard_dir: Optional[Path]  # where the trainer writes its events (None: the run's default)

    def start(self, trainer: Trainer) -> None:
        """After the trainer is built (and resumed), before the first step."""

    def metrics(self, trainer: Trainer) -> dict:
        """Extra metrics for the report at every save and at the end."""

    def save(self, folder: Path) -> None:
        """Add files to the checkpoint folder about to be reported."""

    def restore(self, folder: Path) -> None:
        """Read back what ``save`` wrote, from the checkpoint a run resumes from."""


class StreamingTrainer(Trainer):
    """The core trainer, fed by this worker's Ray Data stream and reporting checkpoints to Ray Train."""

    def __init__(self, cfg: Config, domains: RemoteDomains, store: Storage, **kwargs):
        self.store = store
        self.preemption_saved = False
        super().__init__(cfg, dataset=domains, **kwargs)

    def epoch_length(self) -> int:
        return samples_per_worker(self.dataset, self.world_size)

    def batches(self, epoch: int, start: int):
        return epoch_batches(self.dataset, self.cfg, self.store, epoch, start, self.rank, self.world_size)

    def after_step(self) -> bool:
        """Save at once when Ray announces that a node of this run is about to be reclaimed."""
        import ray.train
        notice = 1.0 if ray.train.get_preemption_info() is not None else 0.0
        if self.world_size > 1:  # every worker must take the same decision at the same step
            flag = torch.tensor([notice], device=self.model.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            notice = flag.item()
        if notice and not self.preemption_saved:
            self.preemption_saved = True
            log.warning("preemption notice: writing a checkpoint before the node goes")
            return True
        return False


def report(trainer: Trainer, path: Optional[Path], report_fn=None, hooks: Optional[RunHooks] = None) -> None:
    """Every worker reports at each save; the first attaches the full state as a checkpoint.
    ``report_fn(metrics, folder)`` is Ray Train's report by default (Tune's inside an in-process trial);
    ``hooks`` add (a sweep trial's) score and files to the report."""
    p = trainer.progress
    metrics = {"epoch": p.epoch, "epoch_iter": p.epoch_iter, "total_iters": p.total_iters,
               "skipped_images": trainer.dataset.skipped, "lr": trainer.model.optimizer_G.param_groups[0]["lr"],
               **{f"loss_{name}": float(value) for name, value in trainer.last_losses.items()}}
    if hooks is not None:
        metrics.update(hooks.metrics(trainer))
    report_fn = report_fn or train_report
    if path is None:
        report_fn(metrics, None)
        return
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(path, Path(folder) / STATE_FILE)
        if hooks is not None:
            hooks.save(Path(folder))
        report_fn(metrics, folder)


def train_report(metrics: dict, folder: Optional[str]) -> None:
    import ray.train
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


def train_and_report(trainer: Trainer, checkpoint, report_fn=None, hooks: Optional[RunHooks] = None) -> dict:
    """Resume from ``checkpoint`` (a Ray checkpoint or None), train, report at every save and at the end."""
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.restore(ckpt.load_state(Path(folder) / STATE_FILE))
            if hooks is not None:
                hooks.restore(Path(folder))
        log.info("worker %d resumed at epoch %d, image %d", trainer.rank, trainer.progress.epoch,
                 trainer.progress.epoch_iter)
    if hooks is not None:
        hooks.start(trainer)
    result = trainer.run(on_save=lambda t, path: report(t, path, report_fn, hooks))
    # The last report is collective too: every worker calls it, only the first has the score.
    final = {"total_iters": result["total_iters"], "done": True,
             **{f"eval_{k}": v for k, v in result.get("eval", {}).items()}}
    if hooks is not None:
        final.update(hooks.metrics(trainer))
    (report_fn or train_report)(final, None)
    return result


def worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    quiet_data()
    cfg = from_dict(config["cfg"])
    hooks = config["hooks"]() if config.get("hooks") else None
    trainer = StreamingTrainer(cfg, config["domains"], config["store"], device=ray.train.torch.get_device(),
                               progress_bar=config.get("progress_bar", True),
                               tensorboard_dir=hooks.tensorboard_dir if hooks else None)
    train_and_report(trainer, ray.train.get_checkpoint(), hooks=hooks)


def resumed_config(cfg: Config, given: set[str], store: Storage) -> Config:
    """--resume RUN: the run's own options, with the flags given now on top (workers, address ...)."""
    run = cfg.resume.rstrip("/")
    try:
        saved = yaml.safe_load(store.read_text(f"{run}/{CONFIG_FILE}"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{run}/{CONFIG_FILE}: not found; --resume takes <storage_path>/<name> "
                                f"of a Ray run") from None
    now = cfg.to_dict()
    merged = {**saved, **{k: now[k] for k in given}, "storage_options": cfg.storage_options,
              "storage_path": run.rsplit("/", 1)[0], "name": run.rsplit("/", 1)[1], "resume": None}
    return from_dict(merged)


def run(cfg: Config, given: Optional[set[str]] = None, progress_bar: bool = True) -> dict:
    """``cyclegan train`` on Ray: returns the run's result (rank 0's result.json) when it is reachable."""
    store = Storage.from_options(cfg.storage_options)  # resolved once, handed down to every reader
    if cfg.resume:
        cfg = resumed_config(cfg, given or set(), store)
    fit(cfg, num_workers=(max(1, cfg.min_workers), max(1, cfg.max_workers)), use_gpu=cfg.use_gpu,
        cpus_per_worker=cfg.cpus_per_worker, storage_path=cfg.storage_path, store=store,
        max_failures=cfg.max_failures, address=cfg.address, progress_bar=progress_bar,
        worker_resources=parse_resources(cfg.worker_resources))
    result_file = Path(cfg.checkpoints_dir).resolve() / cfg.name / "result.json"
    return json.loads(result_file.read_text()) if result_file.exists() else {}


def fit(cfg: Config, num_workers: int | tuple[int, int] = 1, use_gpu: Optional[bool] = None,
        cpus_per_worker: float = 1.0, storage_path: Optional[str] = None, store: Optional[Storage] = None,
        max_failures: int = -1, address: Optional[str] = None, progress_bar: bool = True,
        worker_resources: Optional[dict] = None, run_name: Optional[str] = None, callbacks: Optional[list] = None,
        hooks: Optional[Callable[[], RunHooks]] = None):
    """Run (or, with the same name and storage_path, resume) a training run on Ray Train.
    ``num_workers`` (min, max) with min < max is elastic: Ray Train runs on what it can get and
    grows the group back when capacity returns; the epoch's remaining samples are re-split.
    ``store``: the run's storage settings (default: the AWS_* variables alone). Inside a sweep trial,
    ``run_name``/``callbacks``/``hooks`` place the run in the trial's folder, forward its reports to Tune
    and add the trial's score; ``hooks`` is a picklable factory that every worker calls."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    init_ray(address)
    quiet_data()
    store = store or Storage.from_options()
    cfg = dataclasses.replace(cfg, dataroot=resolve_dataroot(cfg))
    if not is_remote(cfg.dataroot):
        cfg = dataclasses.replace(cfg, dataroot=str(Path(cfg.dataroot).resolve()))
    # Workers may start in another folder: rank 0's local outputs go where the user asked.
    cfg = dataclasses.replace(cfg, checkpoints_dir=str(Path(cfg.checkpoints_dir).resolve()))
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    low, high = num_workers if isinstance(num_workers, tuple) else (num_workers, num_workers)
    workers = high if low == high else (low, high)
    domains = scan_domains(cfg, store)
    storage_path = storage_path or str(Path(cfg.checkpoints_dir) / "ray")
    if not is_remote(storage_path):
        storage_path = str(Path(storage_path).resolve())
    run_name = run_name or cfg.name
    store.write_text(f"{storage_path}/{run_name}/{CONFIG_FILE}",
                     yaml.safe_dump(dataclasses.replace(cfg, storage_path=storage_path).to_dict(), sort_keys=False))
    fs, storage_path = store.ray_storage(storage_path)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "domains": domains, "store": store,
                           "progress_bar": progress_bar, "hooks": hooks},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker,
                                                                     **(worker_resources or {})}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, storage_filesystem=fs, callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=max_failures)),
    )
    return trainer.fit()
