"""``cyclegan train`` on Ray Train: the core trainer on N workers, data from Ray Data streams, full-state
checkpoints reported to the run's storage, restarts from the latest one after failures.

Every artifact of a run lives in ``<storage_path>/<name>/`` (a folder, or an s3://, gs:// prefix on a
cluster): Ray Train's checkpoints, and what the first worker writes (reference weights, TensorBoard
events, ``train_opt.yaml``, ``result.json``), first to a scratch folder on its own node, then mirrored
at every save and at the end. The scratch folder goes when the worker ends; the driver reads the
result back from storage. Credentials never travel: each process finds its node's own.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from ..core.config import MAX_YAML_BYTES, Config, ConfigError, check_device_options, from_dict, parse_yaml
from ..core.data import resolve_dataroot
from ..core.errors import DataError
from ..core.lease import Lease
from ..core.rerun import rerun_run
from ..core.storage import Storage, is_remote
from ..core.stored import read_json, run_options
from ..core.trainer import Hooks
from .ray_internals import TRAIN_HEALTH_CHECK_VARIABLE as POLL_VARIABLE
from .runtime import check_cluster, check_data_room, check_no_secrets, init_ray, parse_resources, quiet_data
from .scratch import node_scratch
from .streams import scan_domains
from .worker import JOB, USER_ERROR_FILE, WorkerJob, worker_loop

log = logging.getLogger("cyclegan")
CONFIG_FILE = "cyclegan_config.yaml"
MAX_MESSAGE = 2000  # characters of a worker's error shown


@dataclass(frozen=True)
class OptionsFile:
    """A run's options file (``CONFIG_FILE``) as the driver read it, once a run: ``data`` None when the
    run has none yet."""
    uri: str
    data: Optional[bytes]

    @classmethod
    def read(cls, store: Storage, run_uri: str) -> "OptionsFile":
        uri = f"{run_uri}/{CONFIG_FILE}"
        try:
            return cls(uri, store.read_bytes(uri, limit=MAX_YAML_BYTES))
        except FileNotFoundError:
            return cls(uri, None)

    def parsed(self) -> Any:
        """What it holds (bounded, alias-free YAML); None without a file."""
        return None if self.data is None else parse_yaml(self.data.decode("utf-8", errors="replace"), self.uri)


@dataclass(frozen=True)
class TrialRun:
    """Where a sweep trial's Ray Train run goes and what the trial adds to it (without one, ``fit`` runs
    a run of its own). ``storage_path``/``run_name`` place it in the trial's folder; ``callbacks`` forward
    its reports to Tune; ``hooks``: a picklable factory of a ``Hooks`` that every worker calls and adds to
    its trainer (the trial's score); ``events_uri``: where TensorBoard events go (default
    ``<run>/tensorboard``); ``run_files`` False: the run's own files (weights, result.json) stay on the
    node; ``score`` (metric, mode) ranks the checkpoints kept (the latest is always kept too); ``scans``:
    where the data's scan manifests are kept (default: ``storage_path``; a sweep's, for all its trials);
    ``start_from``: a Ray checkpoint (of another run: a population-based sweep's donor) a new run starts
    from, Train V2's way (its own checkpoints win once it has some)."""
    storage_path: str
    run_name: str
    callbacks: list = field(default_factory=list)
    hooks: Optional[Callable[[], Hooks]] = None
    events_uri: Optional[str] = None
    run_files: bool = True
    score: Optional[tuple[str, str]] = None
    scans: Optional[str] = None
    start_from: Optional[Any] = None


def resumed_config(cfg: Config, given: set[str], options: OptionsFile) -> Config:
    """--resume RUN: what the run trains and how, from its stored options (``options``, read from RUN),
    with the flags given now on top. Where to connect, local folders and the store (``address``,
    ``checkpoints_dir`` ...) are this process's: whoever can write the bucket must not choose the Ray
    cluster the driver joins."""
    run = cfg.resume.rstrip("/")
    if options.data is None:
        raise FileNotFoundError(f"{run}/{CONFIG_FILE}: not found; --resume takes <storage_path>/<name> "
                                f"of a Ray run")
    stored = options.parsed()
    if not isinstance(stored, dict):
        raise ConfigError(f"{options.uri}: holds a {type(stored).__name__}, not a dict")
    saved = run_options(stored)
    now = cfg.to_dict()
    merged = {**now, **saved, **{k: now[k] for k in given}, "storage_options": cfg.storage_options,
              "storage_path": run.rsplit("/", 1)[0], "name": run.rsplit("/", 1)[1], "resume": None}
    try:
        return from_dict(merged)
    except ConfigError as e:
        raise ConfigError(f"{run}/{CONFIG_FILE}: {e}") from None


ELASTIC_SAVE_SECS = 120.0  # an elastic run saves at least this often (see elastic_saves)


def elastic_saves(cfg: Config) -> Config:
    """An elastic run (--num_workers MIN-MAX) without --save_latest_secs saves every ELASTIC_SAVE_SECS:
    Ray Train grows the group back by restarting it (checked every 60 s), without a word to the workers,
    so each upsize loses what was trained since the last save; with image-count saves alone that could be
    a whole --save_latest_freq."""
    if cfg.min_workers < cfg.max_workers and cfg.save_latest_secs == 0:
        log.info("elastic workers: saving every %.0f s as well (each time the group grows, Ray Train restarts "
                 "it from the last save); set --save_latest_secs to change this", ELASTIC_SAVE_SECS)
        return dataclasses.replace(cfg, save_latest_secs=ELASTIC_SAVE_SECS)
    return cfg


@contextlib.contextmanager
def controller_poll(cfg: Config) -> Iterator[None]:
    """--poll_secs for the controllers Ray Train starts meanwhile: a variable it carries from the driver to
    the controller and the workers (its ENV_VARS_TO_PROPAGATE); one the user set wins. Set for the run
    only: gone again when it ends."""
    if POLL_VARIABLE in os.environ:
        yield
        return
    os.environ[POLL_VARIABLE] = str(cfg.poll_secs)
    try:
        yield
    finally:
        os.environ.pop(POLL_VARIABLE, None)


def worker_bundle(cfg: Config) -> dict:
    """What one Ray Train worker asks of a node (the autoscaler starts nodes for it)."""
    return {"CPU": cfg.cpus_per_worker, **parse_resources(cfg.worker_resources), **({"GPU": 1} if cfg.use_gpu else {})}


def run_storage(cfg: Config, storage_path: Optional[str] = None) -> str:
    """Where a Ray run keeps everything: ``storage_path``, by default ``checkpoints_dir`` (absolute)."""
    path = storage_path or cfg.storage_path or cfg.checkpoints_dir
    return path.rstrip("/") if is_remote(path) else str(Path(path).resolve())


def run(cfg: Config, given: Optional[set[str]] = None, progress_bar: bool = True) -> dict:
    """``cyclegan train`` on Ray: returns the run's result (result.json, read back from its storage)."""
    store = Storage.from_options(cfg.storage_options)  # resolved once, handed down to every reader
    options: Optional[OptionsFile] = None  # the run's options file, read once and handed down
    if cfg.resume:
        options = OptionsFile.read(store, cfg.resume.rstrip("/"))
        cfg = resumed_config(cfg, given or set(), options)
    check_before_ray(cfg, store)  # before anything is written
    run_uri = f"{run_storage(cfg)}/{cfg.name}"
    options = options or OptionsFile.read(store, run_uri)
    rerun_on_ray(cfg, run_uri, options)
    # One driver per run: its workers on other machines write into storage, where nothing else locks.
    with Lease(store, run_uri, "run", retry="wait for it to end, or give another --name or --storage_path"):
        fit(cfg, store, progress_bar=progress_bar, options=options)
    try:
        return read_json(store, f"{run_uri}/result.json")
    except FileNotFoundError:
        return {}


def rerun_on_ray(cfg: Config, run_uri: str, options: OptionsFile) -> None:
    """The rerun rule (core/rerun.py) for a Ray run: Ray Train continues a run whose name and storage it
    finds (``options``: its options file); that is said, and refused when the options differ (--resume and
    --continue_train take the options given now)."""
    saved = options.parsed()
    saved = None if saved is None else saved if isinstance(saved, dict) else {}
    rerun_run(cfg, run_uri, saved, explicit=bool(cfg.resume or cfg.continue_train))


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


def fit(cfg: Config, store: Optional[Storage] = None, trial: Optional[TrialRun] = None,
        progress_bar: bool = True, in_memory: bool = False, options: Optional[OptionsFile] = None):
    """Run (or, with the same name and storage, resume) a training run on Ray Train, as ``cfg`` says
    (workers, GPUs, resources, failures). ``num_workers`` MIN-MAX is elastic: Ray Train runs on what it
    can get and grows the group back when capacity returns; the epoch's remaining samples are re-split.
    ``store``: the run's storage settings (default: the AWS_* location variables); ``trial``: a sweep
    trial's run (where it goes, what the trial adds); ``in_memory`` (benchmarks): each worker loads all its
    batches before it trains; ``options``: the run's options file as the caller read it (default: read
    here)."""
    store = store or Storage.from_options()
    cfg, job = prepared_run(cfg, store, trial, progress_bar, in_memory)
    # The options the run was last continued with: put back if the workers refuse these.
    previous = (options or OptionsFile.read(store, job.run_uri)).data
    store.write_text(f"{job.run_uri}/{CONFIG_FILE}", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    with controller_poll(cfg):
        store.remove(f"{job.run_uri}/{USER_ERROR_FILE}")  # one of an earlier start is no error of this one
        result = ray_trainer(cfg, job, store, trial).fit()
    raise_user_error(store, job.run_uri, previous)
    return result


def prepared_run(cfg: Config, store: Storage, trial: Optional[TrialRun], progress_bar: bool,
                 in_memory: bool) -> tuple[Config, WorkerJob]:
    """Checks, Ray, the run's options as the workers take them and what each worker is handed: the
    dataset where every node reads it, scanned once."""
    check_before_ray(cfg, store)
    init_ray(cfg.address)
    quiet_data()
    storage_path = run_storage(cfg, trial.storage_path if trial else None)
    check_cluster(cfg, store, {"dataroot": cfg.dataroot, "storage_path": storage_path})
    check_data_room(cfg)
    cfg = elastic_saves(cfg)
    cfg = dataclasses.replace(cfg, dataroot=shared_dataroot(cfg, storage_path, store), storage_path=storage_path)
    domains = scan_domains(cfg, store, (trial.scans if trial else None) or storage_path)
    run_uri = f"{storage_path}/{trial.run_name if trial else cfg.name}"
    extra = dict(hooks=trial.hooks, events_uri=trial.events_uri, run_files=trial.run_files,
                 start_from=trial.start_from) if trial else {}
    return cfg, WorkerJob(cfg, domains, store, run_uri, progress_bar=progress_bar, in_memory=in_memory, **extra)


def ray_trainer(cfg: Config, job: WorkerJob, store: Storage, trial: Optional[TrialRun]):
    """Ray Train's trainer of the run: its workers, data ingest, storage, checkpoints kept and failures."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    fs, path = store.ray_storage(cfg.storage_path)
    low, high = max(1, cfg.min_workers), max(1, cfg.max_workers)
    score = trial.score if trial else None
    ranked = {"checkpoint_score_attribute": score[0], "checkpoint_score_order": score[1]} if score else {}
    ingest = {}
    if cfg.data_ingest == "train":
        from .ingest import PAIRS, RemainingSamples, run_epochs
        ingest = {"datasets": {PAIRS: run_epochs(cfg)},
                  "dataset_config": RemainingSamples(cfg, job.domains, store, job.run_uri)}
    return TorchTrainer(
        worker_loop, train_loop_config={JOB: job},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"), **ingest,
        scaling_config=ray.train.ScalingConfig(
            num_workers=high if low == high else (low, high), use_gpu=cfg.use_gpu,
            resources_per_worker=worker_bundle(cfg)),
        run_config=ray.train.RunConfig(
            name=trial.run_name if trial else cfg.name, storage_path=path, storage_filesystem=fs,
            callbacks=trial.callbacks if trial else None,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints, **ranked),
            # Worker and node failures count against max_failures; preemptions announced by the cloud
            # (a drained node) have their own budget, without limit: a spot run is never given up.
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures, max_preemption_failures=-1)),
    )


def check_before_ray(cfg: Config, store: Storage) -> None:
    """What can be refused before Ray starts: keys that would have to travel to other nodes, and options
    that cannot work on the workers' device (a GPU exactly when --use_gpu asks for one)."""
    check_no_secrets(store)
    if cfg.device.startswith("cuda") and not cfg.use_gpu:
        raise ConfigError(f"device: {cfg.device!r} on Ray workers needs --use_gpu (a worker trains on the device "
                          "Ray gives it)")
    if cfg.device == "cpu" and cfg.use_gpu:
        raise ConfigError("device: 'cpu' contradicts --use_gpu (a worker trains on the GPU Ray gives it)")
    try:
        check_device_options(cfg, "cuda" if cfg.use_gpu else "cpu")
    except ConfigError as e:
        raise ConfigError(f"{e}{'' if cfg.use_gpu else '; on Ray workers, --use_gpu gives each a GPU'}") from None


def raise_user_error(store: Storage, run_uri: str, previous: Optional[bytes]) -> None:
    """The error in the user's input that the workers ended the run on, if they did; the run's options
    file goes back to ``previous`` (the run was not continued with these)."""
    try:
        found = read_json(store, f"{run_uri}/{USER_ERROR_FILE}")
    except FileNotFoundError:
        return
    store.remove(f"{run_uri}/{USER_ERROR_FILE}")
    if previous is None:
        store.remove(f"{run_uri}/{CONFIG_FILE}")
    else:
        store.write_bytes(f"{run_uri}/{CONFIG_FILE}", previous)
    message = str(found.get("message"))  # a worker's one line; bounded, as anyone may have written the file
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    raise (DataError if found.get("kind") == "DataError" else ConfigError)(message)
