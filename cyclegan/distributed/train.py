"""``cyclegan train`` on Ray Train: the core trainer on N workers, data from Ray Data streams,
full-state checkpoints reported to shared storage, restarts from the latest one after failures."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import yaml

from .. import checkpoint as ckpt
from ..config import Config, ConfigError, from_dict
from ..train import Trainer, builtin_dataroot
from . import storage
from .streams import RemoteDomains, epoch_batches, samples_per_worker, scan_domains

log = logging.getLogger("cyclegan")
STATE_FILE = "state.pt"


class StreamingTrainer(Trainer):
    """The core trainer, fed by this worker's Ray Data stream and reporting checkpoints to Ray Train."""

    def __init__(self, cfg: Config, domains: RemoteDomains, options: dict, **kwargs):
        self.options = options
        self.preemption_saved = False
        super().__init__(cfg, dataset=domains, **kwargs)

    def epoch_length(self) -> int:
        return samples_per_worker(self.dataset, self.world_size)

    def batches(self, epoch: int, start: int):
        return epoch_batches(self.dataset, self.cfg, self.options, epoch, start, self.rank, self.world_size)

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


def report(trainer: Trainer, path: Optional[Path], report_fn=None, hooks=None) -> None:
    """Every worker reports at each save; the first attaches the full state as a checkpoint.
    ``report_fn(metrics, folder)`` is Ray Train's report by default (Tune's inside an in-process trial);
    ``hooks`` (a sweep's) add the trial's score and files to the report."""
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


def train_and_report(trainer: Trainer, checkpoint, report_fn=None, hooks=None) -> dict:
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
    hooks = None
    if config.get("sweep"):
        from .sweep import SweepHooks
        hooks = SweepHooks(config["sweep"])
    trainer = StreamingTrainer(cfg, config["domains"], config["options"], device=ray.train.torch.get_device(),
                               progress_bar=config.get("progress_bar", True),
                               tensorboard_dir=hooks.tensorboard_dir if hooks else None)
    train_and_report(trainer, ray.train.get_checkpoint(), hooks=hooks)


def quiet_data() -> None:
    """Ray Data's per-dataset progress bars would print one per epoch and worker."""
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def init_ray(address: Optional[str], num_cpus: Optional[int] = None) -> None:
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")  # set for jobs submitted to a cluster
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 configure_logging=False, log_to_driver=True)


CONFIG_FILE = "cyclegan_config.yaml"


def _write_text(uri: str, text: str, options: dict) -> None:
    fs, path = storage.resolve(uri, options)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _read_text(uri: str, options: dict) -> str:
    fs, path = storage.resolve(uri, options)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: not found; --resume takes <storage_path>/<name> of a Ray run") from None


def resumed_config(cfg: Config, given: set[str]) -> Config:
    """--resume RUN: the run's own options, with the flags given now on top (workers, address ...)."""
    options = storage.parse_options(cfg.storage_options)
    run = cfg.resume.rstrip("/")
    saved = yaml.safe_load(_read_text(f"{run}/{CONFIG_FILE}", options))
    now = cfg.to_dict()
    merged = {**saved, **{k: now[k] for k in given}, "storage_options": cfg.storage_options,
              "storage_path": run.rsplit("/", 1)[0], "name": run.rsplit("/", 1)[1], "resume": None}
    return from_dict(merged)


def parse_resources(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        resources = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"worker_resources: {text!r} is not a JSON object ({e.msg})") from None
    if not isinstance(resources, dict) or not all(isinstance(v, (int, float)) and v >= 0
                                                  for v in resources.values()):
        raise ConfigError(f"worker_resources: {text!r} must map resource names to amounts >= 0")
    return resources


def run(cfg: Config, given: Optional[set[str]] = None, progress_bar: bool = True) -> dict:
    """``cyclegan train`` on Ray: returns the run's result (rank 0's result.json) when it is reachable."""
    if cfg.resume:
        cfg = resumed_config(cfg, given or set())
    options = storage.parse_options(cfg.storage_options)
    fit(cfg, num_workers=(max(1, cfg.min_workers), max(1, cfg.max_workers)), use_gpu=cfg.use_gpu, cpus_per_worker=cfg.cpus_per_worker,
        storage_path=cfg.storage_path, storage_options=options, max_failures=cfg.max_failures,
        address=cfg.address, progress_bar=progress_bar, worker_resources=parse_resources(cfg.worker_resources))
    result_file = Path(cfg.checkpoints_dir).resolve() / cfg.name / "result.json"
    return json.loads(result_file.read_text()) if result_file.exists() else {}


def fit(cfg: Config, num_workers: int | tuple[int, int] = 1, use_gpu: Optional[bool] = None, cpus_per_worker: float = 1.0,
        storage_path: Optional[str] = None, storage_options: Optional[dict] = None, max_failures: int = -1,
        address: Optional[str] = None, progress_bar: bool = True, worker_resources: Optional[dict] = None,
        run_name: Optional[str] = None, callbacks: Optional[list] = None, sweep: Optional[dict] = None):
    """Run (or, with the same name and storage_path, resume) a training run on Ray Train.
    ``num_workers`` (min, max) with min < max is elastic: Ray Train runs on what it can get and
    grows the group back when capacity returns; the epoch's remaining samples are re-split.
    Inside a sweep trial, ``run_name``/``callbacks``/``sweep`` place the run in the trial's folder and
    forward its reports to Tune."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    init_ray(address)
    quiet_data()
    options = storage.with_env(storage_options or {})
    if not cfg.dataroot:
        cfg = dataclasses.replace(cfg, dataroot=str(builtin_dataroot(cfg)))
    if not storage.is_remote(cfg.dataroot):
        cfg = dataclasses.replace(cfg, dataroot=str(Path(cfg.dataroot).resolve()))
    # Workers may start in another folder: rank 0's local outputs go where the user asked.
    cfg = dataclasses.replace(cfg, checkpoints_dir=str(Path(cfg.checkpoints_dir).resolve()))
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    low, high = num_workers if isinstance(num_workers, tuple) else (num_workers, num_workers)
    workers = high if low == high else (low, high)
    domains = scan_domains(cfg, options)
    storage_path = storage_path or str(Path(cfg.checkpoints_dir) / "ray")
    if not storage.is_remote(storage_path):
        storage_path = str(Path(storage_path).resolve())
    run_name = run_name or cfg.name
    _write_text(f"{storage_path}/{run_name}/{CONFIG_FILE}",
                yaml.safe_dump(dataclasses.replace(cfg, storage_path=storage_path).to_dict(), sort_keys=False),
                options)
    fs, storage_path = storage.ray_storage(storage_path, options)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "domains": domains, "options": options,
                           "progress_bar": progress_bar, "sweep": sweep},
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
