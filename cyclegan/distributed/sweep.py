"""``cyclegan sweep EXPERIMENT.yaml``: hyperparameter search with Ray Tune and Optuna over one or more
domain pairs, all searched at once so the cluster stays busy.

One Tune run holds every trial of every pair: trials of all pairs share the cluster and the sweep's
``max_concurrent_trials`` (the cluster-wide limit), so no GPU waits for one pair's last trials while
another pair has trials queued. Scores of different pairs are not comparable, so each pair has its own
Optuna searcher and its own ASHA brackets or population (``pair_search``); a trial's config names its
pair.

Layout of a sweep (local folder or s3://): ``<storage_path>/<sweep>/experiment.yaml`` (the file it was
started from), Tune's experiment state, and per trial a folder ``<pair>_<trial id>/`` with Tune's
``params.json``/``result.json``, the checkpoints (the best by the pair's metric and the latest), and the
trial's TensorBoard events (losses, learning rate, the score, image grids of the same test images for
every trial, and its HParams), so ``tensorboard --logdir <storage_path>/<sweep>`` compares them all.

On a cluster, trials that drive a Ray Train run ask for a little of the ``driver`` resource when the
cluster defines one (the cluster files put it on the on-demand head): a spot reclaim then never takes a
trial's driver with its workers.

The experiment file is read by ``core/experiment.py``; one trial is ``trial.py``; the per-pair searchers
and schedulers are ``pair_search.py``; this is the driver.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Optional

from ray.tune import Callback
from ray.tune.schedulers import PopulationBasedTraining

from ..core.config import Config
from ..core.evaluate import METRICS
from ..core.experiment import (
    EXPERIMENT_FILE,
    OBJECTIVE,
    PAIR_KEY,
    POPULATION_ALGORITHMS,
    Experiment,
    Search,
    mutations,
    pair_config,
    save_experiment,
)
from ..core.lease import Lease
from ..core.rerun import check_rerun, experiment_differences
from ..core.storage import Storage
from ..core.stored import read_yaml
from .pair_search import InSpace, PairScheduler, PairSearch, SchedulerState
from .ray_internals import trial_storage, tune_propagating_none_of
from .runtime import check_cluster, init_ray, quiet_data
from .scratch import remove_stale_scratch_everywhere
from .train import check_before_ray
from .trial import run_trial, trial_folder

log = logging.getLogger("cyclegan")
DRIVER_RESOURCE = "driver"  # on-demand capacity for trial drivers, defined by the cluster files
DRIVER_SHARE = 0.01  # of it per trial driver: a head with driver: 1 takes 100 of them
# What a trial that drives a Ray Train run keeps on its node, asked of Ray as memory so the head holds only
# as many as it can: the trial's process (690 MB), the Train controller Ray Train attaches to it (678 MB)
# and Ray Data's split coordinator beside that (207 MB), peak resident sizes measured on a tiny run
# (2026-12-04; both ask Ray for no CPU and no memory themselves).
TRIAL_DRIVER_MEMORY = 1600 * 2**20


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




class ResultsKept(Callback):
    """A trial that starts again (a population's paused trial, a restarted one) has Tune's logger copy its
    ``result.json``/``progress.csv`` back from storage over the driver's own copy, which is newer by whatever
    arrived since the last sync: those reports were lost from the record. Before the loggers (this
    callback comes first), the driver's copy goes to storage, so what comes back is complete."""

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        import pyarrow.fs
        if not trial.checkpoint:
            return
        filesystem, folder = trial_storage(trial)
        for name in ("result.json", "progress.csv"):
            local = os.path.join(trial.local_path, name)
            if os.path.exists(local):
                pyarrow.fs.copy_files(local, f"{folder}/{name}", destination_filesystem=filesystem)


@contextlib.contextmanager
def _tune_env(exp: Experiment):
    """Tune's settings for this sweep, for as long as it runs: a variable the user set wins, and nothing
    stays behind (a second sweep in the same process, a notebook's, got the first one's limit)."""
    wanted = {
        # Tune's own experiment state must reach storage within seconds, or a killed driver loses trials.
        "TUNE_GLOBAL_CHECKPOINT_S": "2",
        # The trials write their own TensorBoard events (with HParams); Tune's copy would duplicate them.
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }
    # Every slot the limit allows is asked for at once (a pending trial is a resource demand the
    # autoscaler serves): trials start together instead of one actor start-up after another.
    if exp.search.max_concurrent_trials:
        wanted["TUNE_MAX_PENDING_TRIALS_PG"] = str(exp.search.max_concurrent_trials)
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def trial_resources(configs: dict[str, Config], drivers: bool, gpus_per_trial: float = 1.0):
    """What Tune reserves for a trial of each pair: its training resources when it trains in its own process
    (``gpus_per_trial`` of a GPU: several such trials share one), else no CPU and the memory of a trial
    driver with its Train controller and split coordinator (its workers ask for their own), on the
    ``driver`` resource when the cluster has one."""
    from ray.tune import PlacementGroupFactory

    def resources(config: dict):
        cfg = configs[config[PAIR_KEY]]
        if cfg.max_workers == 0:
            return PlacementGroupFactory([{"CPU": cfg.cpus_per_worker, "GPU": gpus_per_trial if cfg.use_gpu else 0}])
        return PlacementGroupFactory([{"CPU": 0, "memory": TRIAL_DRIVER_MEMORY,
                                       **({DRIVER_RESOURCE: DRIVER_SHARE} if drivers else {})}])
    return resources


def _trainable(exp: Experiment, store: Storage):
    import ray
    from ray import tune
    configs = {pair.name: pair_config(exp, pair) for pair in exp.pairs}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for pair in exp.pairs:  # the data and Tune's state must be reachable from every node
        check_cluster(configs[pair.name], store, {"dataroot": pair.dataroot, "storage_path": exp.storage_path})
    drivers = ray.cluster_resources().get(DRIVER_RESOURCE, 0) > 0
    if len(nodes) > 1 and not drivers and any(c.max_workers > 0 for c in configs.values()):
        log.warning("this cluster defines no %r resource: trial drivers may run on spot nodes, and a reclaim "
                    "then restarts the trial (see cluster/ for the head that offers it)", DRIVER_RESOURCE)
    fn = tune.with_parameters(run_trial, setup={"experiment": exp, "store": store})
    return tune.with_resources(fn, trial_resources(configs, drivers, exp.search.gpus_per_trial))


def _run_config(exp: Experiment, store: Storage, scheduler: Optional[PairScheduler] = None):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    fs, path = store.ray_storage(exp.storage_path)
    return tune.RunConfig(
        name=exp.name, storage_path=path, storage_filesystem=fs,
        sync_config=tune.SyncConfig(sync_period=5, sync_artifacts=True),
        # The best checkpoints by the pair's metric, and the latest (which Tune always keeps) to resume from.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=pair_config(exp, exp.pairs[0]).keep_checkpoints,
                                                checkpoint_score_attribute=OBJECTIVE, checkpoint_score_order="min"),
        failure_config=tune.FailureConfig(max_failures=exp.search.max_trial_failures),
        callbacks=[ResultsKept(), JsonLoggerCallback(), CSVLoggerCallback(),
                   *([SchedulerState(scheduler)] if scheduler else [])], verbose=1)


def _tuner(exp: Experiment, store: Storage):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    s = exp.search
    if s.algorithm in POPULATION_ALGORITHMS:
        return _population_tuner(exp, store)
    searchers, schedulers = {}, {}
    for index, pair in enumerate(exp.pairs):  # each pair its own sampler's stream
        metric = exp.metric(pair)
        mode = METRICS[metric][0]
        searchers[pair.name] = OptunaSearch(space=OptunaSearch.convert_search_space(tune_space(exp.space)),
                                            metric=metric, mode=mode, seed=s.seed + index,
                                            points_to_evaluate=[dict(p) for p in s.points_to_evaluate or []] or None)
        if s.scheduler == "asha":
            schedulers[pair.name] = ASHAScheduler(time_attr="epochs", metric=metric, mode=mode,
                                                  max_t=pair_config(exp, pair).total_epochs,
                                                  grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    scheduler = PairScheduler(schedulers) if schedulers else None
    return tune.Tuner(
        _trainable(exp, store),
        tune_config=tune.TuneConfig(search_alg=PairSearch(searchers, s.num_samples),
                                    scheduler=scheduler,
                                    num_samples=s.num_samples * len(exp.pairs),
                                    max_concurrent_trials=s.max_concurrent_trials or None,
                                    time_budget_s=s.time_budget_s,
                                    # The next trial runs in the same process: no second torch import.
                                    reuse_actors=True, trial_name_creator=trial_folder,
                                    trial_dirname_creator=trial_folder),
        run_config=_run_config(exp, store, scheduler))


def population(exp: Experiment, metric: str):
    """One pair's population-based trainer (Tune's PBT or PB2): every ``perturbation_interval`` epochs a trial
    in the pair's bottom ``quantile_fraction`` loads the full-state checkpoint of one in the top fraction and
    goes on with that trial's hyperparameters, explored: PBT multiplies a range's value by 0.8 or 1.2 (or
    draws it again, one time in four) and moves a choice to a neighbour; PB2 picks them with a GP bandit
    fitted to the population's progress. The networks and data are never mutated."""
    s = exp.search
    keys = mutations(s, exp.space)
    common = dict(time_attr="epochs", metric=metric, mode=METRICS[metric][0],
                  perturbation_interval=s.perturbation_interval, quantile_fraction=s.quantile_fraction,
                  custom_explore_fn=InSpace({k: exp.space[k] for k in keys}),
                  # The lineage is the trials' own record (in every checkpoint, see trial.py), read by the report;
                  # notice reports carry no score and are skipped.
                  log_config=False, require_attrs=False, synch=s.synch)
    if s.algorithm == "pb2":
        from ray.tune.schedulers.pb2 import PB2  # scikit-learn: checked when the experiment was read
        return PB2(hyperparam_bounds={k: list(exp.space[k][1]) for k in keys}, **common)
    domains = tune_space({k: exp.space[k] for k in keys})
    return PopulationBasedTraining(
        hyperparam_mutations={k: list(exp.space[k][1]) if exp.space[k][0] == "choice" else domains[k] for k in keys},
        **common)


def _population_tuner(exp: Experiment, store: Storage):
    """Population-based training per pair: Tune's random variant generator draws each pair's population
    (``num_samples`` trials each, the pair a grid axis), seeded; each pair has its own PBT/PB2."""
    import random

    import numpy as np
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator
    s = exp.search
    # Tune's PBT explores with the process's random streams (random, and numpy's for a range drawn again).
    random.seed(s.seed)
    np.random.seed(s.seed)
    scheduler = PairScheduler({pair.name: population(exp, exp.metric(pair)) for pair in exp.pairs}, exp)
    space = {PAIR_KEY: tune.grid_search([pair.name for pair in exp.pairs]), **tune_space(exp.space)}
    return tune.Tuner(
        _trainable(exp, store), param_space=space,
        tune_config=tune.TuneConfig(
            # The whole population exists from the start (PBT compares and clones within it); as many trials run as
            # the cluster's resources hold, and PBT has them take turns at each perturbation.
            search_alg=BasicVariantGenerator(points_to_evaluate=[dict(p) for p in s.points_to_evaluate or []] or None,
                                             random_state=s.seed),
            scheduler=scheduler, num_samples=s.num_samples,
            # A paused trial that drives a Ray Train run ends with its process (its run's controller with it).
            time_budget_s=s.time_budget_s, trial_name_creator=trial_folder,
            reuse_actors=all(pair_config(exp, pair).max_workers == 0 for pair in exp.pairs),
            trial_dirname_creator=trial_folder),
        run_config=_run_config(exp, store, scheduler))


def sweep(exp: Experiment, resume: bool = False, address: Optional[str] = None,
          store: Optional[Storage] = None) -> Any:
    """Run (or continue) the search of every pair at once; returns Tune's ResultGrid."""
    store = store or Storage.from_options(exp.storage_options)
    # One driver per sweep (its trials' runs are covered by it): a second start, or a --resume while the
    # first driver lives, would interleave Tune's experiment state and the trials' checkpoints.
    with Lease(store, exp.uri, "sweep", retry="wait for it to end, or choose another name"):
        if not resume and store.exists(f"{exp.uri}/{EXPERIMENT_FILE}"):
            rerun(exp, store)
            resume = True
        elif not resume:
            log.info("sweep %r: starting in %s", exp.name, exp.uri)
        stage_inception_weights(exp, store)
        return _search(exp, resume, address, store)


def stage_inception_weights(exp: Experiment, store: Storage) -> None:
    """FID/KID with Inception: its weights go into the sweep's storage once, from this machine (downloaded
    here if need be), and every trial reads them from there, so GPU nodes need no internet. Missing
    everywhere, the sweep fails here, before any trial trains, not at the first score. Their SHA-256 (this
    machine's copy's, or with none here the published file's) goes to every trial with the experiment
    (``inception_sha256``): a file replaced in the storage is refused there, not scored with."""
    uri = exp.inception_weights_uri
    if uri is None:
        return
    from ..core.metrics import INCEPTION_URL, put_inception_weights
    try:
        exp.inception_sha256 = put_inception_weights(store, uri)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or put the file at {uri}, where every trial of a sweep in this storage "
                                f"reads it ({INCEPTION_URL})") from None
    log.info("the Inception weights for FID/KID are in %s for every trial", uri)


def rerun(exp: Experiment, store: Storage) -> None:
    """The rerun rule (core/rerun.py): a sweep started again with the same experiment continues (a KubeRay
    RayJob's retry runs the same entrypoint on a new cluster); another experiment under its name is
    refused, naming the differences."""
    import yaml
    saved = read_yaml(store, f"{exp.uri}/{EXPERIMENT_FILE}", kind=None)  # bounded, no aliases: anyone's file
    if isinstance(saved, dict) and isinstance(saved.get("search"), dict):
        # Search settings added since the sweep was written had their defaults then: not a difference.
        saved["search"] = {**dataclasses.asdict(Search()), **saved["search"]}
    now = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(exp), sort_keys=False))
    check_rerun("sweep", exp.uri, experiment_differences(saved if isinstance(saved, dict) else {}, now),
                "choose another name, or continue it as it was started with "
                f"'cyclegan sweep --resume {exp.uri}'")
    log.info("sweep %r: continuing in %s (the same experiment)", exp.name, exp.uri)


def _search(exp: Experiment, resume: bool, address: Optional[str], store: Storage) -> Any:
    for pair in exp.pairs:  # what can be refused before Ray starts (keys, device options)
        check_before_ray(pair_config(exp, pair), store)
    with _tune_env(exp):
        return _search_with_tune(exp, resume, address, store)


def _search_with_tune(exp: Experiment, resume: bool, address: Optional[str], store: Storage) -> Any:
    from ray import tune
    init_ray(address)
    quiet_data()
    fs, path = store.ray_storage(exp.uri)
    if resume and tune.Tuner.can_restore(path, storage_filesystem=fs):
        log.info("resuming the sweep %s from %s", exp.name, exp.uri)
        tuner = tune.Tuner.restore(path, trainable=_trainable(exp, store), storage_filesystem=fs,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = _tuner(exp, store)  # checks the cluster before anything is written
        if not resume:
            save_experiment(exp, store)
        log.info("searching %s: %d trials per pair, at most %s at once", ", ".join(p.name for p in exp.pairs),
                 exp.search.num_samples, exp.search.max_concurrent_trials or "as many as the cluster holds")
    with credentials_stay_on_their_node():
        results = tuner.fit()
    # Trials that Tune stopped were ended without cleaning their node's scratch folder.
    try:
        log.debug("removed %d scratch folders of ended trials", remove_stale_scratch_everywhere())
    except Exception as e:  # the search is done and stored: a cleanup problem never fails it
        log.warning("could not clean the nodes' scratch folders after the sweep: %s", e)
    return results


@contextlib.contextmanager
def credentials_stay_on_their_node():
    """Ray Tune copies AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the session tokens of the driver's
    environment into every trial actor's runtime environment (ray.tune.execution.class_cache), where
    Ray's state API and the runtime-env agent's log show them, and a token frozen there expires mid-sweep.
    Trials find their own node's credentials (see core/filesystems.py), so those names come off Tune's list while
    the sweep runs."""
    with tune_propagating_none_of(lambda name: name.startswith("AWS_")):
        yield
