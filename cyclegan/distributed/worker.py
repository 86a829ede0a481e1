"""A Ray Train worker of ``cyclegan train``: the core trainer fed by this worker's Ray Data stream, its saves
reported to Ray Train as checkpoints (each worker its own part, uploaded in the background), the first
worker's files mirrored to the run's storage, and a restart picked up from the latest checkpoint."""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

import torch
import torch.distributed as dist

from ..core import checkpoint as ckpt
from ..core.config import Config, from_dict
from ..core.storage import FolderMirror, Storage
from ..core.trainer import Trainer, crossed
from .runtime import quiet_data
from .scratch import node_scratch
from .streams import RemoteDomains, samples_per_worker, worker_batches

log = logging.getLogger("cyclegan")

STATE_FILE = "state.pt"


class RunHooks(Protocol):
    """What a caller adds to a run on every worker (a sweep trial: its score, grids and files).
    ``fit`` takes a factory of them (``hooks=functools.partial(SomeHooks, spec)``): the factory travels
    to the workers and each builds its own."""

    tensorboard_uri: Optional[str]  # where the run's TensorBoard events go (None: <run>/tensorboard)
    run_files: bool  # whether the run's own files (reference weights, result.json) go to storage too

    def start(self, trainer: Trainer) -> None:
        """After the trainer is built (and resumed), before the first step."""

    def metrics(self, trainer: Trainer) -> dict:
        """Extra metrics for the report at every save and at the end."""

    def save(self, folder: Path) -> None:
        """Add files to the checkpoint folder about to be reported."""

    def restore(self, read: Callable[[str], Optional[bytes]]) -> None:
        """Read back what ``save`` wrote, from the checkpoint a run resumes from (``read(name)``: a file
        of it, None when absent)."""


class StreamingTrainer(Trainer):
    """The core trainer, fed by this worker's Ray Data stream and reporting checkpoints to Ray Train."""

    def __init__(self, cfg: Config, domains: RemoteDomains, store: Storage, run_uri: str = "", **kwargs):
        self.preemption_saved = False
        self.run_uri = run_uri  # the run's storage (where --data_ingest train says where a group starts)
        self.publisher = Publisher()
        self.stream: Optional[Iterator[tuple[int, dict]]] = None  # this worker's batches to the run's end
        self.stream_at: tuple[int, int] = (-1, -1)  # the (epoch, sample) the stream is at
        self.ahead: Optional[tuple[int, dict]] = None  # the next epoch's first batch, read ahead
        super().__init__(cfg, dataset=domains, store=store, **kwargs)

    def epoch_length(self) -> int:
        return samples_per_worker(self.dataset, self.world_size)

    def open_stream(self, epoch: int, start: int) -> None:
        """This worker's batches from its sample ``start`` of ``epoch`` to the end of the run: Ray Train's
        shard of the run's dataset (--data_ingest train: once per worker group), or a Ray Data stream
        of its own in plan order (exact)."""
        if self.cfg.data_ingest == "train":
            if self.stream is not None:  # one shard per worker group: it cannot be repositioned
                raise RuntimeError(f"the data shard is at {self.stream_at}, asked for {(epoch, start)}")
            from .ingest import shard_batches
            self.stream = shard_batches(self.cfg, self.dataset, self.store, self.run_uri, epoch, start,
                                        self.rank, self.world_size)
        else:
            self.stream = worker_batches(self.dataset, self.cfg, self.store, epoch, start, self.rank,
                                         self.world_size)
        self.stream_at, self.ahead = (epoch, start), None

    def hold_in_memory(self) -> None:
        """For benchmarks: every batch this worker will train on, loaded before training starts (what
        training on streamed data is compared with)."""
        self.open_stream(self.progress.epoch, self.progress.epoch_iter)
        self.stream = iter(list(self.stream))

    def batches(self, epoch: int, start: int):
        """The epoch's batches, from one stream that runs on to the end of the run (opened again only
        when asked for another position)."""
        if self.stream is None or self.stream_at != (epoch, start):
            self.open_stream(epoch, start)
        done = start
        while True:
            item, self.ahead = self.ahead or next(self.stream, None), None
            if item is None or item[0] != epoch:
                self.ahead = item
                self.stream_at = (item[0], 0) if item is not None else (-1, -1)
                return
            done += item[1]["A"].shape[0]
            self.stream_at = (epoch, done)
            yield item[1]

    def after_step(self, n: int) -> bool:
        """Every --notice_check_freq images, the workers agree (one all-reduce of two flags) on whether
        Ray announced that a node of this run is about to be reclaimed, or the first worker's clock says
        a --save_latest_secs save is due: every worker then saves at the same step."""
        import ray.train
        if not crossed(self.progress.total_iters, n, self.cfg.notice_check_freq):
            return False
        flags = torch.tensor([float(ray.train.get_preemption_info() is not None),
                              float(self.is_main and self.save_time_due())])
        if self.world_size > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        notice, due = (bool(f) for f in flags.tolist())
        if notice and not self.preemption_saved:
            self.preemption_saved = True
            log.warning("preemption notice: writing a checkpoint before the node goes")
            return True
        return due

    def save(self, reference_labels: tuple[str, ...] = ("latest",)) -> Path:
        """Every worker writes its own part (image pools, random streams) into a folder of its own, the
        first also the shared state and the reference weights. Ray Train merges the workers' folders
        into one checkpoint and uploads it while training goes on; nothing is gathered."""
        self.last_save_at = time.monotonic()
        folder = Path(tempfile.mkdtemp(prefix="checkpoint-", dir=self.run_dir.parent))
        torch.save(self.rank_state(), folder / rank_file(self.rank))
        if self.is_main:
            torch.save(ckpt.state_payload(self.state()), folder / STATE_FILE)
            # The reference-format weights are written and mirrored in the background: the full state
            # above is what a restart needs, they are copies for people and tools.
            self.publisher.submit(ckpt.write_reference_weights, self.run_dir,
                                  ckpt.reference_weights(self.model.networks(), copy=True), reference_labels)
        return folder


class Publisher:
    """The first worker's files on their way to storage, off the training path: one thread runs the jobs
    in the order given (weights written, then the folder mirrored); a job that failed fails the next
    call, and the worker with it (Ray Train restarts from the last checkpoint)."""

    def __init__(self):
        self.pool: Optional[ThreadPoolExecutor] = None
        self.jobs: list = []

    def submit(self, fn: Callable, *args) -> None:
        self.check()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="cyclegan-publish")
        self.jobs.append(self.pool.submit(fn, *args))

    def check(self) -> None:
        for job in [j for j in self.jobs if j.done()]:
            job.result()
            self.jobs.remove(job)

    def wait(self) -> None:
        while self.jobs:
            self.jobs.pop(0).result()


def rank_file(rank: int) -> str:
    return f"rank_{rank}.pt"


def checkpoint_reader(checkpoint) -> Callable[[str], Optional[bytes]]:
    """Files of a Ray checkpoint read one by one where they are (storage or a local folder): a worker
    reads the shared state and its own part, never the other workers' parts."""
    import pyarrow.fs as pafs
    fs, root = checkpoint.filesystem, checkpoint.path.rstrip("/")

    def read(name: str) -> Optional[bytes]:
        path = f"{root}/{name}"
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()
    return read


def restore_from(trainer: Trainer, checkpoint, hooks: Optional[RunHooks] = None) -> None:
    read = checkpoint_reader(checkpoint)
    state = ckpt.load_state(read(STATE_FILE), f"{checkpoint.path}/{STATE_FILE}")
    saved_world = state["progress"].get("world_size", 1)  # elastic: a new rank takes an old rank's part
    own = rank_file(trainer.rank % saved_world)
    data = read(own)
    trainer.restore(state, ckpt.safe_load(data, f"{checkpoint.path}/{own}") if data is not None else None)
    if hooks is not None:
        hooks.restore(read)


def report(trainer: Trainer, path: Optional[Path], report_fn=None, hooks: Optional[RunHooks] = None,
           mirrors: tuple[FolderMirror, ...] = ()) -> None:
    """Every worker reports at each save; the first attaches the full state as a checkpoint.
    ``report_fn(metrics, folder)`` is Ray Train's report by default (Tune's inside an in-process trial);
    ``hooks`` add (a sweep trial's) score and files to the report; ``mirrors`` carry this node's files to
    storage: a Ray Train worker's in the background (its checkpoint holds all a restart needs; the files
    follow within the upload's time), an in-process trial's before it reports."""
    p = trainer.progress
    metrics = {"reported_at": time.time(),  # to the sub-second (Tune's timestamp is whole seconds)
               "epoch": p.epoch, "epoch_iter": p.epoch_iter, "total_iters": p.total_iters,
               "skipped_images": trainer.dataset.skipped, "lr": trainer.model.optimizer_G.param_groups[0]["lr"],
               # Which attempt this is (where it picked the run up; -1: from the start), and whether a
               # preemption notice had arrived: the run's history says what each failure cost.
               "resumed_from_iters": trainer.resumed_from["total_iters"] if trainer.resumed_from else -1,
               "preemption_notice": int(getattr(trainer, "preemption_saved", False)),
               **{f"loss_{name}": float(value) for name, value in trainer.last_losses.items()}}
    if hooks is not None:
        metrics.update(hooks.metrics(trainer))
    publisher: Optional[Publisher] = getattr(trainer, "publisher", None)
    for mirror in mirrors:
        if publisher is not None:  # after the weights it just wrote
            publisher.submit(mirror.sync)
        else:
            mirror.sync()
    if path is None:
        (report_fn or train_report)(metrics, None)
    elif path.is_dir():  # a Ray Train worker's checkpoint folder, uploaded in the background
        if hooks is not None and trainer.is_main:
            hooks.save(path)
        (report_fn or train_report_async)(metrics, str(path))
    else:  # a state file of the core trainer (a sweep trial in Tune's process): reported as a copy
        with tempfile.TemporaryDirectory() as folder:
            shutil.copyfile(path, Path(folder) / STATE_FILE)
            if hooks is not None:
                hooks.save(Path(folder))
            (report_fn or train_report)(metrics, folder)


def train_report(metrics: dict, folder: Optional[str]) -> None:
    import ray.train
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


def train_report_async(metrics: dict, folder: str) -> None:
    """Ray Train uploads the folder in a thread of its own (removing it after) while training goes on;
    the checkpoint counts (and a restart can use it) once every worker's part is uploaded."""
    import ray.train
    from ray.train import CheckpointUploadMode
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                     checkpoint_upload_mode=CheckpointUploadMode.ASYNC)


def train_and_report(trainer: Trainer, checkpoint, report_fn=None, hooks: Optional[RunHooks] = None,
                     mirrors: tuple[FolderMirror, ...] = ()) -> dict:
    """Resume from ``checkpoint`` (a Ray checkpoint or None), train, report at every save and at the end."""
    if checkpoint is not None:
        restore_from(trainer, checkpoint, hooks)
        log.info("worker %d resumed at epoch %d, image %d", trainer.rank, trainer.progress.epoch,
                 trainer.progress.epoch_iter)
    if hooks is not None:
        hooks.start(trainer)
    for mirror in mirrors:  # train_opt.yaml: the run's folder shows at once what is training
        mirror.sync()
    result = trainer.run(on_save=lambda t, path: report(t, path, report_fn, hooks, mirrors))
    # The last report is collective too: every worker calls it, only the first has the score.
    final = {"reported_at": time.time(), "total_iters": result["total_iters"], "done": True,
             **{f"eval_{k}": v for k, v in result.get("eval", {}).items()}}
    if hooks is not None:
        final.update(hooks.metrics(trainer))
    if isinstance(getattr(trainer, "publisher", None), Publisher):
        trainer.publisher.wait()
    for mirror in mirrors:  # result.json and the closed event files
        mirror.sync()
    (report_fn or train_report)(final, None)
    return result


def run_mirrors(trainer: Trainer, store: Storage, run_dir: Path, run_uri: str, tensorboard_dir: Path,
                hooks: Optional[RunHooks] = None) -> tuple[FolderMirror, ...]:
    """The first worker's outputs and where they go: the run's files to ``run_uri`` (full states travel
    as Ray checkpoints instead), TensorBoard events to ``<run_uri>/tensorboard`` or the hooks' place."""
    if not trainer.is_main:
        return ()
    events = FolderMirror(store, tensorboard_dir, (hooks.tensorboard_uri if hooks else None)
                          or f"{run_uri}/tensorboard")
    if hooks is not None and not hooks.run_files:
        return (events,)
    return (FolderMirror(store, run_dir, run_uri, skip=(ckpt.STATE_DIR,)), events)


def worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    quiet_data()
    cfg, store = from_dict(config["cfg"]), config["store"]
    hooks = config["hooks"]() if config.get("hooks") else None
    with node_scratch("run") as scratch:
        run_dir, tensorboard_dir = scratch / "run", scratch / "tensorboard"
        trainer = StreamingTrainer(cfg, config["domains"], store, config["run_uri"], device=ray.train.torch.get_device(),
                                   progress_bar=config.get("progress_bar", True), run_dir=run_dir,
                                   tensorboard_dir=tensorboard_dir)
        mirrors = run_mirrors(trainer, store, run_dir, config["run_uri"], tensorboard_dir, hooks)
        if config.get("in_memory"):
            trainer.hold_in_memory()
        train_and_report(trainer, ray.train.get_checkpoint(), hooks=hooks, mirrors=mirrors)
