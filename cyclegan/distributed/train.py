"""``cyclegan train`` on Ray Train: the core trainer on N workers, data from Ray Data streams, full-state
checkpoints reported to the run's storage, restarts from the latest one after failures.

Every artifact of a run lives in ``<storage_path>/<name>/`` (a folder, or an s3://, gs:// prefix on a
cluster): Ray Train's checkpoints, and what the first worker writes (reference weights, TensorBoard
events, ``train_opt.yaml``, ``result.json``), first to a scratch folder on its own node, then mirrored
at every save and at the end. The scratch folder goes when the worker ends; the driver reads the
result back from storage. Credentials never travel: each process finds its node's own.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

import torch
import torch.distributed as dist
import yaml

from .. import checkpoint as ckpt
from ..config import Config, ConfigError, from_dict
from ..data import resolve_dataroot
from ..storage import FolderMirror, Storage, is_remote
from ..train import Trainer, crossed
from .runtime import init_ray, parse_resources, quiet_data
from .streams import LOAD_TASK_CPUS, RemoteDomains, samples_per_worker, scan_domains, worker_batches

log = logging.getLogger("cyclegan")
STATE_FILE = "state.pt"
CONFIG_FILE = "cyclegan_config.yaml"


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


SCRATCH_KINDS = ("run", "trial", "builtin")  # a scratch folder: <tmp>/cyclegan-<kind>-<owner pid>-<random>


@contextlib.contextmanager
def node_scratch(kind: str) -> Iterator[Path]:
    """A folder on this node's disk for one process's working files, removed when the work ends: what
    must outlive the node is mirrored to storage before then. Ray ends a stopped trial or a failed
    run's actors without finishing this block, so the folder is named after its process, and folders
    of processes that are gone are removed by the next one on the node and at the end of a sweep."""
    remove_stale_scratch()
    folder = Path(tempfile.mkdtemp(prefix=f"cyclegan-{kind}-{os.getpid()}-"))
    remove = functools.partial(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(remove)  # an actor asked to exit runs these, though not its threads' finally blocks
    try:
        yield folder
    finally:
        remove()
        atexit.unregister(remove)


def remove_stale_scratch(wait_s: float = 0.0) -> int:
    """Removes this node's scratch folders whose process has ended (waiting up to ``wait_s`` for those
    still running to end); returns how many went. A folder of a live process is never touched."""
    deadline, removed = time.monotonic() + wait_s, 0
    folders = [f for kind in SCRATCH_KINDS for f in Path(tempfile.gettempdir()).glob(f"cyclegan-{kind}-*-*")]
    for folder in folders:
        pid = folder.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        while process_alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    try:  # a killed process its parent has not reaped yet is a zombie: ended
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def remove_stale_scratch_everywhere(wait_s: float = 10.0) -> int:
    """After a sweep: on every live node, the scratch folders of the trials and workers Ray ended."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    task = ray.remote(num_cpus=0, max_retries=0)(remove_stale_scratch)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    return sum(ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                        .remote(wait_s) for node in nodes]))


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


def run_storage(cfg: Config, storage_path: Optional[str] = None) -> str:
    """Where a Ray run keeps everything: ``storage_path``, by default ``checkpoints_dir`` (absolute)."""
    path = storage_path or cfg.storage_path or cfg.checkpoints_dir
    return path.rstrip("/") if is_remote(path) else str(Path(path).resolve())


def run(cfg: Config, given: Optional[set[str]] = None, progress_bar: bool = True) -> dict:
    """``cyclegan train`` on Ray: returns the run's result (result.json, read back from its storage)."""
    store = Storage.from_options(cfg.storage_options)  # resolved once, handed down to every reader
    if cfg.resume:
        cfg = resumed_config(cfg, given or set(), store)
    fit(cfg, store, progress_bar=progress_bar)
    try:
        return json.loads(store.read_text(f"{run_storage(cfg)}/{cfg.name}/result.json"))
    except FileNotFoundError:
        return {}


def check_cluster(cfg: Config, store: Storage, paths: dict[str, Optional[str]]) -> None:
    """Refuse, before anything starts, what would silently go wrong on a cluster: keys that would have to
    travel to other nodes, and local paths (``paths``: option -> path) when the nodes have their own disks."""
    import ray
    if store.secrets:
        raise ConfigError("storage_options: access_key, secret_key and session_token are used by this process "
                          "only and never sent to Ray workers; give every node its own credentials (an instance "
                          "role, IRSA or workload identity, or the AWS_* variables) and keep endpoint_url and "
                          "region in --storage_options")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or cfg.shared_filesystem:
        return
    for key, path in paths.items():
        if path and not is_remote(path):
            hint = (f"upload it (cyclegan data upload {path} s3://<bucket>/<prefix>) and give that URI"
                    if key == "dataroot" else "give an s3:// or gs:// URI")
            raise ConfigError(f"{key}: {path!r} is a local folder, and this Ray cluster has {len(nodes)} nodes, "
                              f"each with its own disk: {hint}, or pass --shared_filesystem if every node "
                              f"mounts {path!r} (NFS, EFS, Filestore)")


def check_data_room(cfg: Config) -> None:
    """Ray Data's tasks read and decode the images on CPUs beside the workers'. Workers that would take
    every CPU of the cluster would start and then wait for data forever: refused before anything starts
    on a Ray instance of this process's own; on a cluster given by address (which an autoscaler may
    grow for the data tasks) a warning says the same."""
    import math

    import ray
    total = ray.cluster_resources().get("CPU", 0.0)
    per_worker = cfg.cpus_per_worker
    fit = cfg.max_workers if per_worker <= 0 else min(cfg.max_workers, math.floor(total / per_worker + 1e-9))
    workers = max(cfg.min_workers, fit)
    taken = workers * per_worker
    if taken > total or total - taken >= LOAD_TASK_CPUS - 1e-9:
        return  # the workers wait for capacity (an autoscaler's), or data tasks have room beside them
    room = math.floor((total - LOAD_TASK_CPUS) / workers * 4) / 4  # in quarter CPUs
    change = (f"give --cpus_per_worker {room:g}" if room > 0 else "give fewer --num_workers") + \
        " (or more CPUs: --address of a larger cluster)"
    message = (f"num_workers {cfg.num_workers}: {workers} workers x cpus_per_worker {per_worker:g} = {taken:g} "
               f"of the cluster's {total:g} CPUs leave {total - taken:g} for the data tasks that read and "
               f"decode the images (each needs {LOAD_TASK_CPUS:g}): the workers would start and wait for "
               f"data forever; {change}")
    if cfg.address or os.environ.get("RAY_ADDRESS"):
        log.warning("%s, unless an autoscaler adds nodes for the data tasks", message)
    else:
        raise ConfigError(message)


def shared_dataroot(cfg: Config, storage_path: str, store: Storage) -> str:
    """The dataset as every node reads it: --dataroot, or the built-in pair, written once below
    ``<storage_path>/_builtin/`` (uploaded there when the storage is a bucket)."""
    if cfg.dataroot:
        return cfg.dataroot if is_remote(cfg.dataroot) else str(Path(cfg.dataroot).resolve())
    if not is_remote(storage_path):
        return resolve_dataroot(dataclasses.replace(cfg, checkpoints_dir=storage_path))
    with node_scratch("builtin") as scratch:
        local = Path(resolve_dataroot(dataclasses.replace(cfg, checkpoints_dir=str(scratch))))
        uri = f"{storage_path}/_builtin/{local.name}"
        if not store.exists(f"{uri}/pair.json"):  # written last: a pair without it is incomplete
            for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != "pair.json"):
                store.upload_file(path, f"{uri}/{path.relative_to(local).as_posix()}")
            store.upload_file(local / "pair.json", f"{uri}/pair.json")
    return uri


def fit(cfg: Config, store: Optional[Storage] = None, storage_path: Optional[str] = None,
        run_name: Optional[str] = None, callbacks: Optional[list] = None,
        hooks: Optional[Callable[[], RunHooks]] = None, score: Optional[tuple[str, str]] = None,
        progress_bar: bool = True, scans: Optional[str] = None, in_memory: bool = False):
    """Run (or, with the same name and storage, resume) a training run on Ray Train, as ``cfg`` says
    (workers, GPUs, resources, failures). ``num_workers`` MIN-MAX is elastic: Ray Train runs on what it
    can get and grows the group back when capacity returns; the epoch's remaining samples are re-split.
    ``store``: the run's storage settings (default: the AWS_* location variables). Inside a sweep trial,
    ``storage_path``/``run_name``/``callbacks``/``hooks`` place the run in the trial's folder, forward its
    reports to Tune and add the trial's score; ``hooks`` is a picklable factory that every worker calls;
    ``score`` (metric, mode) ranks the checkpoints kept (the latest is always kept too); ``scans``: where
    the data's scan manifests are kept (default: ``storage_path``; a sweep's, for all its trials);
    ``in_memory`` (benchmarks): each worker loads all its batches before it trains."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    init_ray(cfg.address)
    quiet_data()
    store = store or Storage.from_options()
    storage_path = run_storage(cfg, storage_path)
    check_cluster(cfg, store, {"dataroot": cfg.dataroot, "storage_path": storage_path})
    check_data_room(cfg)
    cfg = dataclasses.replace(cfg, dataroot=shared_dataroot(cfg, storage_path, store), storage_path=storage_path)
    domains = scan_domains(cfg, store, scans or storage_path)
    run_name = run_name or cfg.name
    run_uri = f"{storage_path}/{run_name}"
    store.write_text(f"{run_uri}/{CONFIG_FILE}", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    fs, path = store.ray_storage(storage_path)
    low, high = max(1, cfg.min_workers), max(1, cfg.max_workers)
    ranked = {"checkpoint_score_attribute": score[0], "checkpoint_score_order": score[1]} if score else {}
    ingest = {}
    if cfg.data_ingest == "train":
        from .ingest import PAIRS, RemainingSamples, run_epochs
        ingest = {"datasets": {PAIRS: run_epochs(cfg)}, "dataset_config": RemainingSamples(cfg, domains, store, run_uri)}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "domains": domains, "store": store, "run_uri": run_uri,
                           "progress_bar": progress_bar, "hooks": hooks, "in_memory": in_memory},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"), **ingest,
        scaling_config=ray.train.ScalingConfig(
            num_workers=high if low == high else (low, high), use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **parse_resources(cfg.worker_resources)}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=path, storage_filesystem=fs, callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints, **ranked),
            # Worker and node failures count against max_failures; preemptions announced by the cloud
            # (a drained node) have their own budget, without limit: a spot run is never given up.
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures, max_preemption_failures=-1)),
    )
    return trainer.fit()
