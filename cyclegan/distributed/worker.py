"""A Ray Train worker of ``cyclegan train``: the core trainer fed by this worker's Ray Data stream, its saves
reported to Ray Train as checkpoints (each worker its own part, uploaded in the background), the first
worker's files mirrored to the run's storage, and a restart picked up from the latest checkpoint."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from ..core import checkpoint as ckpt
from ..core.config import Config
from ..core.errors import UserError
from ..core.parallel import process_group
from ..core.progress import resumed_position
from ..core.storage import FolderMirror, Storage
from ..core.trainer import Hooks, Trainer
from .runtime import quiet_data
from .scratch import node_scratch
from .streams import RemoteDomains, samples_per_worker, worker_batches

log = logging.getLogger("cyclegan")

STATE_FILE = "state.pt"


class StreamBatches:
    """This worker's batches (the trainer's ``data``): Ray Train's shard of the run's dataset
    (--data_ingest train), or a Ray Data stream of its own in plan order (exact); one stream runs on to
    the end of the run and is opened again only when asked for another position."""

    def __init__(self, cfg: Config, domains: RemoteDomains, store: Storage, run_uri: str):
        self.cfg, self.domains, self.store = cfg, domains, store
        self.run_uri = run_uri  # the run's storage (where --data_ingest train says where a group starts)
        self.rank, self.world_size = process_group()
        self.skipped = domains.skipped
        self.stream: Optional[Iterator[tuple[int, dict]]] = None  # this worker's batches to the run's end
        self.stream_at: tuple[int, int] = (-1, -1)  # the (epoch, sample) the stream is at
        self.ahead: Optional[tuple[int, dict]] = None  # the next epoch's first batch, read ahead
        self.opening: Optional[Future] = None  # the stream opened in the background (start)

    def epoch_length(self) -> int:
        return samples_per_worker(self.domains, self.world_size)

    def open_stream(self, epoch: int, start: int) -> None:
        """This worker's batches from its sample ``start`` of ``epoch`` to the end of the run."""
        if self.cfg.data_ingest == "train":
            if self.stream is not None:  # one shard per worker group: it cannot be repositioned
                raise RuntimeError(f"the data shard is at {self.stream_at}, asked for {(epoch, start)}")
            from .ingest import shard_batches
            self.stream = shard_batches(self.cfg, self.domains, self.store, self.run_uri, epoch, start,
                                        self.rank, self.world_size)
        else:
            self.stream = worker_batches(self.domains, self.cfg, self.store, epoch, start, self.rank,
                                         self.world_size)
        self.stream_at, self.ahead = (epoch, start), None

    def start(self, epoch: int, start: int) -> None:
        """Open the stream at ``epoch``/``start`` and take its first batch in the background, while the
        trainer is built: a group's data start (Train's split, new Ray Data actors and tasks, in other
        processes) and the trainer's build (networks, the optimizers' first import of torch._dynamo)
        overlap instead of following each other, at every start and restart of a group."""
        def first():
            self.open_stream(epoch, start)
            self.ahead = next(self.stream, None)
        pool = ThreadPoolExecutor(1, thread_name_prefix="cyclegan-data-start")
        self.opening = pool.submit(first)
        pool.shutdown(wait=False)

    def hold_in_memory(self, epoch: int, start: int) -> None:
        """For benchmarks: every batch this worker will train on, loaded before training starts (what
        training on streamed data is compared with)."""
        self.open_stream(epoch, start)
        self.stream = iter(list(self.stream))

    def batches(self, epoch: int, start: int):
        """The epoch's batches, from the stream (opened again only when asked for another position)."""
        if self.opening is not None:
            opening, self.opening = self.opening, None
            opening.result()
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


class CheckpointFolders:
    """Saves as Ray Train checkpoints (the trainer's ``checkpoints``): every worker writes its own part
    (image pools, random streams) into a folder of its own, the first also the shared state; Ray Train
    merges the workers' folders into one checkpoint and uploads it while training goes on. The reference
    weights are written and mirrored in the background (``publisher``): the full state is what a restart
    needs, they are copies for people and tools."""

    def __init__(self, publisher: "Publisher"):
        self.publisher = publisher

    def write(self, trainer: Trainer, reference_labels: tuple[str, ...]) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="checkpoint-", dir=trainer.run_dir.parent))
        torch.save(trainer.rank_state(), folder / rank_file(trainer.rank))
        if trainer.is_main:
            torch.save(ckpt.state_payload(trainer.state()), folder / STATE_FILE)
            self.publisher.submit(ckpt.write_reference_weights, trainer.run_dir,
                                  ckpt.reference_weights(trainer.model.networks(), copy=True), reference_labels)
        return folder


class PreemptionNotice(Hooks):
    """Ray's word that a node of this run is about to be reclaimed (a drained node, reason preemption)."""

    checks_notices = True  # a barrier across the workers: asked at the trainer's checks only

    def notice(self, trainer: Trainer) -> bool:
        import ray.train
        return ray.train.get_preemption_info() is not None


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


def read_checkpoint(checkpoint, rank: int) -> tuple[dict, Optional[dict], Callable[[str], Optional[bytes]]]:
    """A Ray checkpoint's shared state and worker ``rank``'s own part (elastic: a new rank takes an old
    rank's part), and the reader of its other files."""
    read = checkpoint_reader(checkpoint)
    state = ckpt.load_state(read(STATE_FILE), f"{checkpoint.path}/{STATE_FILE}")
    own = rank_file(rank % state["progress"].get("world_size", 1))
    data = read(own)
    return state, ckpt.safe_load(data, f"{checkpoint.path}/{own}") if data is not None else None, read


def restore_from(trainer: Trainer, checkpoint, saved: Optional[tuple] = None) -> None:
    """Continue from a Ray checkpoint (``saved``: what ``read_checkpoint`` read of it already): the shared
    state, this worker's own part, and whatever the trainer's hooks added to it; then the hooks hear of
    it (``Hooks.restored``)."""
    state, own, read = saved or read_checkpoint(checkpoint, trainer.rank)
    trainer.restore(state, own)
    for hook in trainer.hooks:
        hook.restore_files(read)
    for hook in trainer.hooks:
        hook.restored(trainer, state)
    log.info("worker %d resumed at epoch %d, image %d", trainer.rank, trainer.progress.epoch,
             trainer.progress.epoch_iter)


class Report(Hooks):
    """Every worker reports at each save and at the end; the first attaches the checkpoint (with the files
    the other hooks add) and the other hooks' metrics. ``report_fn(metrics, folder)`` is Ray Train's
    report by default (Tune's inside an in-process trial). ``mirrors`` carry this node's files to storage:
    a Ray Train worker's in the background after the weights (``publisher``; its checkpoint holds all a
    restart needs, the files follow within the upload's time), an in-process trial's before it reports."""

    def __init__(self, report_fn: Optional[Callable[[dict, Optional[str]], None]] = None,
                 mirrors: tuple[FolderMirror, ...] = (), publisher: Optional[Publisher] = None):
        self.report_fn, self.mirrors, self.publisher = report_fn, mirrors, publisher

    def start(self, trainer: Trainer) -> None:
        for mirror in self.mirrors:  # train_opt.yaml: the run's folder shows at once what is training
            mirror.sync()

    def saved(self, trainer: Trainer, path: Optional[Path]) -> None:
        p = trainer.progress
        metrics = {"reported_at": time.time(),  # to the sub-second (Tune's timestamp is whole seconds)
                   "epoch": p.epoch, "epoch_iter": p.epoch_iter, "total_iters": p.total_iters,
                   "skipped_images": trainer.data.skipped, "lr": trainer.model.optimizer_G.param_groups[0]["lr"],
                   # Which attempt this is (where it picked the run up; -1: from the start), and whether a
                   # preemption notice had arrived: the run's history says what each failure cost.
                   "resumed_from_iters": trainer.resumed_from["total_iters"] if trainer.resumed_from else -1,
                   "preemption_notice": int(trainer.saves.preemption_saved),
                   **{f"loss_{name}": float(value) for name, value in trainer.last_losses.items()},
                   **trainer.hook_metrics()}
        self._sync_mirrors()
        if path is None:
            (self.report_fn or train_report)(metrics, None)
        elif path.is_dir():  # a Ray Train worker's checkpoint folder, uploaded in the background
            if trainer.is_main:
                self._add_files(trainer, path)
            (self.report_fn or train_report_async)(metrics, str(path))
        else:  # a state file of the core trainer (a sweep trial in Tune's process): reported as a copy
            with tempfile.TemporaryDirectory() as folder:
                shutil.copyfile(path, Path(folder) / STATE_FILE)
                self._add_files(trainer, Path(folder))
                (self.report_fn or train_report)(metrics, folder)

    def end(self, trainer: Trainer, result: dict) -> None:
        # The last report is collective too: every worker calls it, only the first has the score.
        final = {"reported_at": time.time(), "total_iters": result["total_iters"], "done": True,
                 **{f"eval_{k}": v for k, v in result.get("eval", {}).items()}, **trainer.hook_metrics()}
        if self.publisher is not None:
            self.publisher.wait()
        for mirror in self.mirrors:  # result.json and the closed event files
            mirror.sync()
        (self.report_fn or train_report)(final, None)

    def _sync_mirrors(self) -> None:
        for mirror in self.mirrors:
            if self.publisher is not None:  # after the weights it just wrote
                self.publisher.submit(mirror.sync)
            else:
                mirror.sync()

    @staticmethod
    def _add_files(trainer: Trainer, folder: Path) -> None:
        for hook in trainer.hooks:
            hook.checkpoint_files(folder)


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


def run_mirrors(store: Storage, run_dir: Path, run_uri: str, tensorboard_dir: Path,
                events_uri: Optional[str] = None, run_files: bool = True) -> tuple[FolderMirror, ...]:
    """The first worker's outputs and where they go: the run's files to ``run_uri`` (full states travel
    as Ray checkpoints instead; a sweep trial's run has none: ``run_files`` False), TensorBoard events to
    ``events_uri`` (default ``<run_uri>/tensorboard``)."""
    events = FolderMirror(store, tensorboard_dir, events_uri or f"{run_uri}/tensorboard")
    if not run_files:
        return (events,)
    return (FolderMirror(store, run_dir, run_uri, skip=(ckpt.STATE_DIR,)), events)


USER_ERROR_FILE = "_user_error.json"  # in the run's storage: an error in what the user gave, found by workers
JOB = "job"  # the one key of Ray Train's train_loop_config: the WorkerJob


@dataclass(frozen=True)
class WorkerJob:
    """What the driver hands each Ray Train worker (pickled by Ray, as ``train_loop_config[JOB]``): the
    run's options, its data (the scanned domains), storage and folder there, and what the caller adds.
    ``hooks``: a picklable factory of a ``Hooks`` that each worker calls and adds to its trainer (a sweep
    trial's score); ``events_uri``: where TensorBoard events go (default ``<run_uri>/tensorboard``);
    ``run_files`` False: the run's own files (weights, result.json) stay on the node; ``in_memory``
    (benchmarks): all of a worker's batches loaded before it trains; ``start_from``: a Ray checkpoint of
    another run that a new run starts from (its own checkpoints win once it has some). What Ray shows of
    it (its run state) leaves out the data, the store and the callables."""
    cfg: Config
    domains: RemoteDomains = field(repr=False)
    store: Storage = field(repr=False)
    run_uri: str
    progress_bar: bool = True
    hooks: Optional[Callable[[], Hooks]] = field(default=None, repr=False)
    events_uri: Optional[str] = None
    run_files: bool = True
    in_memory: bool = False
    start_from: Optional[Any] = field(default=None, repr=False)


def worker_loop(config: dict) -> None:
    """A Ray Train worker: the core trainer with this worker's stream, Ray checkpoints, the preemption
    notice and reports (and the caller's hooks), as the driver's ``WorkerJob`` (``config[JOB]``) says."""
    import ray.train
    import ray.train.torch
    quiet_data()
    job: WorkerJob = config[JOB]
    cfg, store, run_uri = job.cfg, job.store, job.run_uri
    with node_scratch("run") as scratch:
        run_dir, tensorboard_dir = scratch / "run", scratch / "tensorboard"
        publisher = Publisher()
        mirrors = ()
        if process_group()[0] == 0:  # the first worker writes the run's files
            mirrors = run_mirrors(store, run_dir, run_uri, tensorboard_dir, job.events_uri, job.run_files)
        hooks = [job.hooks()] if job.hooks else []
        hooks += [PreemptionNotice(), Report(mirrors=mirrors, publisher=publisher)]
        data = StreamBatches(cfg, job.domains, store, run_uri)
        try:  # every worker checks the same options and checkpoint, so they all end here alike
            checkpoint = ray.train.get_checkpoint() or job.start_from
            saved = read_checkpoint(checkpoint, data.rank) if checkpoint is not None else None
            if not (job.in_memory or cfg.continue_train):  # where the trainer will go on: known now
                data.start(*(resumed_position(saved[0], data.world_size) if saved else (cfg.epoch_count, 0)))
            trainer = Trainer(cfg, device=ray.train.torch.get_device(), progress_bar=job.progress_bar,
                              data=data, checkpoints=CheckpointFolders(publisher), hooks=hooks, run_dir=run_dir,
                              tensorboard_dir=tensorboard_dir)
            if saved is not None:
                restore_from(trainer, checkpoint, saved)
        except UserError as e:
            # A restart cannot fix the user's input: the run ends, and the driver (on another machine, maybe)
            # says it as one error line; raised, it would be retried --max_failures times and reach the user
            # as a Ray traceback.
            store.write_text(f"{run_uri}/{USER_ERROR_FILE}", json.dumps({"kind": type(e).__name__, "message": str(e)}))
            return
        if job.in_memory:
            data.hold_in_memory(trainer.progress.epoch, trainer.progress.epoch_iter)
        trainer.run()
