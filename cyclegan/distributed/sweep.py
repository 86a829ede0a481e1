"""``cyclegan sweep EXPERIMENT.yaml``: hyperparameter search with Ray Tune and Optuna, per domain pair.

Layout of a sweep (local folder or s3://): ``<storage_path>/<sweep>/experiment.yaml`` (the file it was
started from), and per pair a Tune experiment ``<pair>/`` whose trial folders ``<pair>/<trial>/`` hold
Tune's ``params.json``/``result.json``, the checkpoints, and the trial's TensorBoard events (losses,
learning rate, the score, image grids of the same test images for every trial, and its HParams), so
``tensorboard --logdir <storage_path>/<sweep>`` compares pairs and trials side by side.

The experiment file is ``cyclegan/experiment.py``; one trial is ``trial.py``; this is the driver.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from ..config import Config, ConfigError
from ..data import resolve_dataroot
from ..evaluate import METRICS
from ..experiment import EXPERIMENT_FILE, Experiment, Pair, pair_config, save_experiment
from ..storage import Storage
from .runtime import init_ray, quiet_data
from .trial import run_trial

log = logging.getLogger("cyclegan")


def tune_space(space: dict[str, tuple[str, list]]) -> dict:
    from ray import tune
    out = {}
    for key, (kind, args) in space.items():
        if kind == "choice":
            out[key] = tune.choice(args)
        elif kind == "uniform":
            out[key] = tune.uniform(*args)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*args)
        else:
            out[key] = tune.randint(args[0], args[1] + 1)  # inclusive in the file, exclusive in Tune
    return out


def _tune_env() -> None:
    # Tune's own experiment state must reach storage within seconds, or a killed driver loses trials.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # The trials write their own TensorBoard events (with HParams); Tune's copy would duplicate them.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")


def _trainable(exp: Experiment, pair: Pair, base_cfg: Config, store: Storage):
    from ray import tune
    metric = exp.metric(pair)
    builtin_root = str(Path(base_cfg.checkpoints_dir).resolve())
    if pair.builtin:  # written once here, so the trials only read it
        resolve_dataroot(dataclasses.replace(base_cfg, checkpoints_dir=builtin_root))
    setup = {"experiment": exp, "pair": pair, "metric": metric, "pair_uri": f"{exp.uri}/{pair.name}",
             "store": store, "builtin_root": builtin_root}
    fn = tune.with_parameters(run_trial, setup=setup)
    if base_cfg.max_workers == 0:
        import ray
        use_gpu = base_cfg.use_gpu if base_cfg.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
        resources = {"cpu": base_cfg.cpus_per_worker, "gpu": 1 if use_gpu else 0}
    else:  # the trial only drives a Train run; its workers ask for their own resources
        resources = {"cpu": 0, "memory": 64 * 2**20}
    return tune.with_resources(fn, resources), metric


def _run_config(exp: Experiment, pair: Pair, base_cfg: Config, store: Storage):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    fs, path = store.ray_storage(exp.uri)
    return tune.RunConfig(
        name=pair.name, storage_path=path, storage_filesystem=fs,
        sync_config=tune.SyncConfig(sync_period=5, sync_artifacts=True),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=base_cfg.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=exp.search.max_trial_failures),
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()], verbose=1)


def _tuner(exp: Experiment, pair: Pair, store: Storage):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch
    base_cfg = pair_config(exp, pair)
    trainable, metric = _trainable(exp, pair, base_cfg, store)
    mode = METRICS[metric][0]
    s = exp.search
    scheduler = (ASHAScheduler(time_attr="epochs", max_t=base_cfg.total_epochs, grace_period=s.grace_period,
                               reduction_factor=s.reduction_factor)
                 if s.scheduler == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable, param_space=tune_space(exp.space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=OptunaSearch(seed=s.seed),
                                    scheduler=scheduler, num_samples=s.num_samples,
                                    max_concurrent_trials=s.max_concurrent_trials,
                                    time_budget_s=s.time_budget_s,
                                    # The next trial runs in the same process: no second torch import.
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: t.trial_id,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=_run_config(exp, pair, base_cfg, store))


def sweep(exp: Experiment, resume: bool = False, address: Optional[str] = None,
          store: Optional[Storage] = None) -> dict[str, Any]:
    """Run (or continue) every pair's search; returns {pair: ResultGrid}."""
    from ray import tune
    store = store or Storage.from_options()
    if not resume and store.exists(f"{exp.uri}/{EXPERIMENT_FILE}"):
        raise ConfigError(f"name: a sweep {exp.name!r} already exists at {exp.uri}; continue it with "
                          f"'cyclegan sweep --resume {exp.uri}' or choose another name")
    if not resume:
        save_experiment(exp, store)
    _tune_env()
    init_ray(address)
    quiet_data()
    results = {}
    for pair in exp.pairs:
        pair_uri = f"{exp.uri}/{pair.name}"
        fs, path = store.ray_storage(pair_uri)
        if resume and tune.Tuner.can_restore(path, storage_filesystem=fs):
            log.info("resuming the search of %s from %s", pair.name, pair_uri)
            trainable, _ = _trainable(exp, pair, pair_config(exp, pair), store)
            tuner = tune.Tuner.restore(path, trainable=trainable, storage_filesystem=fs,
                                       resume_unfinished=True, resume_errored=True)
        else:
            log.info("searching %s: %d trials, metric %s", pair.name, exp.search.num_samples, exp.metric(pair))
            tuner = _tuner(exp, pair, store)
        results[pair.name] = tuner.fit()
    return results


def bench(exp: Experiment) -> dict:
    """Per-trial overhead of a sweep: (wall time - time spent inside the trials) / trials, one trial at a
    time so the two are comparable. Ray's own start-up is outside the wall time."""
    exp = dataclasses.replace(exp, name=f"{exp.name}-bench-{int(time.time())}",
                              storage_path=tempfile.mkdtemp(prefix="cyclegan-sweep-bench-"),
                              search=dataclasses.replace(exp.search, max_concurrent_trials=1))
    init_ray(None)
    started = time.perf_counter()
    results = sweep(exp)
    wall = time.perf_counter() - started
    inside = [r.metrics.get("time_total_s", 0.0) for grid in results.values() for r in grid]
    figures = {"trials": len(inside), "wall_s": wall, "in_trials_s": sum(inside),
               "overhead_per_trial_s": (wall - sum(inside)) / max(1, len(inside))}
    print(f"{figures['trials']} trials, one at a time: {wall:.1f} s wall, {sum(inside):.1f} s inside the trials, "
          f"overhead {figures['overhead_per_trial_s']:.2f} s per trial")
    return figures
