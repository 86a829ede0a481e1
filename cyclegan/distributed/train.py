"""``cyclegan train`` on Ray Train: the core trainer on N workers, data from Ray Data streams, full-state
checkpoints reported to the run's storage, restarts from the latest one after failures.

Every artifact of a run lives in ``<storage_path>/<name>/`` (a folder, or an s3://, gs:// prefix on a
cluster): Ray Train's checkpoints, and what the first worker writes (reference weights, TensorBoard
events, ``train_opt.yaml``, ``result.json``), first to a scratch folder on its own node, then mirrored
at every save and at the end. The scratch folder goes when the worker ends; the driver reads the
result back from storage. Credentials never travel: each process finds its node's own.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..core.config import MAX_YAML_BYTES, Config, ConfigError, check_device_options, from_dict
from ..core.data import resolve_dataroot
from ..core.errors import DataError
from ..core.lease import Lease
from ..core.rerun import rerun_run
from ..core.storage import Storage, is_remote
from ..core.stored import read_json, read_yaml, run_options
from ..core.trainer import Hooks
from .runtime import check_cluster, check_data_room, check_no_secrets, init_ray, parse_resources, quiet_data
from .scratch import node_scratch
from .streams import scan_domains
from .worker import USER_ERROR_FILE, worker_loop

log = logging.getLogger("cyclegan")
CONFIG_FILE = "cyclegan_config.yaml"
POLL_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
MAX_MESSAGE = 2000  # characters of a worker's error shown


def resumed_config(cfg: Config, given: set[str], store: Storage) -> Config:
    """--resume RUN: what the run trains and how, from its stored options, with the flags given now on top.
    Where to connect, local folders and the store (``address``, ``checkpoints_dir`` ...) are this process's:
    whoever can write the bucket must not choose the Ray cluster the driver joins."""
    run = cfg.resume.rstrip("/")
    try:
        saved = run_options(read_yaml(store, f"{run}/{CONFIG_FILE}"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{run}/{CONFIG_FILE}: not found; --resume takes <storage_path>/<name> "
                                f"of a Ray run") from None
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


def set_controller_poll(cfg: Config) -> None:
    """--poll_secs for the controller Ray Train starts next: a variable it carries from the driver to the
    controller and the workers (its ENV_VARS_TO_PROPAGATE); one the user set wins."""
    os.environ.setdefault(POLL_VARIABLE, str(cfg.poll_secs))


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
    if cfg.resume:
        cfg = resumed_config(cfg, given or set(), store)
    check_before_ray(cfg, store)  # before anything is written
    run_uri = f"{run_storage(cfg)}/{cfg.name}"
    rerun_on_ray(cfg, store, run_uri)
    # One driver per run: its workers on other machines write into storage, where nothing else locks.
    with Lease(store, run_uri, "run", retry="wait for it to end, or give another --name or --storage_path"):
        fit(cfg, store, progress_bar=progress_bar)
    try:
        return read_json(store, f"{run_uri}/result.json")
    except FileNotFoundError:
        return {}


def rerun_on_ray(cfg: Config, store: Storage, run_uri: str) -> None:
    """The rerun rule (core/rerun.py) for a Ray run: Ray Train continues a run whose name and storage it
    finds; that is said, and refused when the options differ (--resume and --continue_train take the
    options given now)."""
    try:
        saved = read_yaml(store, f"{run_uri}/{CONFIG_FILE}", kind=None)
    except FileNotFoundError:
        saved = None
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


def fit(cfg: Config, store: Optional[Storage] = None, storage_path: Optional[str] = None,
        run_name: Optional[str] = None, callbacks: Optional[list] = None,
        hooks: Optional[Callable[[], Hooks]] = None, events_uri: Optional[str] = None, run_files: bool = True,
        score: Optional[tuple[str, str]] = None,
        progress_bar: bool = True, scans: Optional[str] = None, in_memory: bool = False,
        start_from: Optional[Any] = None):
    """Run (or, with the same name and storage, resume) a training run on Ray Train, as ``cfg`` says
    (workers, GPUs, resources, failures). ``num_workers`` MIN-MAX is elastic: Ray Train runs on what it
    can get and grows the group back when capacity returns; the epoch's remaining samples are re-split.
    ``store``: the run's storage settings (default: the AWS_* location variables). Inside a sweep trial,
    ``storage_path``/``run_name``/``callbacks``/``hooks`` place the run in the trial's folder, forward its
    reports to Tune and add the trial's score; ``hooks`` is a picklable factory of a ``Hooks`` that every
    worker calls and adds to its trainer; ``events_uri``: where TensorBoard events go (default
    ``<run>/tensorboard``); ``run_files`` False: the run's own files (weights, result.json) stay on the node;
    ``score`` (metric, mode) ranks the checkpoints kept (the latest is always kept too); ``scans``: where
    the data's scan manifests are kept (default: ``storage_path``; a sweep's, for all its trials);
    ``in_memory`` (benchmarks): each worker loads all its batches before it trains; ``start_from``: a Ray
    checkpoint (of another run: a population-based sweep's donor) a new run starts from, Train V2's way
    (its own checkpoints win once it has some)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    store = store or Storage.from_options()
    check_before_ray(cfg, store)
    init_ray(cfg.address)
    quiet_data()
    storage_path = run_storage(cfg, storage_path)
    check_cluster(cfg, store, {"dataroot": cfg.dataroot, "storage_path": storage_path})
    check_data_room(cfg)
    cfg = elastic_saves(cfg)
    cfg = dataclasses.replace(cfg, dataroot=shared_dataroot(cfg, storage_path, store), storage_path=storage_path)
    domains = scan_domains(cfg, store, scans or storage_path)
    run_name = run_name or cfg.name
    run_uri = f"{storage_path}/{run_name}"
    try:  # the options the run was last continued with: put back if the workers refuse these
        previous: Optional[bytes] = store.read_bytes(f"{run_uri}/{CONFIG_FILE}", limit=MAX_YAML_BYTES)
    except FileNotFoundError:
        previous = None
    store.write_text(f"{run_uri}/{CONFIG_FILE}", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    fs, path = store.ray_storage(storage_path)
    set_controller_poll(cfg)
    low, high = max(1, cfg.min_workers), max(1, cfg.max_workers)
    ranked = {"checkpoint_score_attribute": score[0], "checkpoint_score_order": score[1]} if score else {}
    ingest = {}
    if cfg.data_ingest == "train":
        from .ingest import PAIRS, RemainingSamples, run_epochs
        ingest = {"datasets": {PAIRS: run_epochs(cfg)}, "dataset_config": RemainingSamples(cfg, domains, store, run_uri)}
    store.remove(f"{run_uri}/{USER_ERROR_FILE}")  # one of an earlier start is no error of this one
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "domains": domains, "store": store, "run_uri": run_uri,
                           "progress_bar": progress_bar, "hooks": hooks, "in_memory": in_memory,
                           "events_uri": events_uri, "run_files": run_files, "start_from": start_from},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"), **ingest,
        scaling_config=ray.train.ScalingConfig(
            num_workers=high if low == high else (low, high), use_gpu=cfg.use_gpu,
            resources_per_worker=worker_bundle(cfg)),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=path, storage_filesystem=fs, callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints, **ranked),
            # Worker and node failures count against max_failures; preemptions announced by the cloud
            # (a drained node) have their own budget, without limit: a spot run is never given up.
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures, max_preemption_failures=-1)),
    )
    result = trainer.fit()
    raise_user_error(store, run_uri, previous)
    return result


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
