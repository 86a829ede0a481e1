"""``cyclegan sweep EXPERIMENT.yaml``: hyperparameter search with Ray Tune and Optuna over one or more
domain pairs, all searched at once so the cluster stays busy.

One Tune run holds every trial of every pair: trials of all pairs share the cluster and the sweep's
``max_concurrent_trials`` (the cluster-wide limit), so no GPU waits for one pair's last trials while
another pair has trials queued. Scores of different pairs are not comparable, so each pair has its own
Optuna searcher (``PairSearch``) and its own ASHA brackets (``PairScheduler``); a trial's config names
its pair.

Layout of a sweep (local folder or s3://): ``<storage_path>/<sweep>/experiment.yaml`` (the file it was
started from), Tune's experiment state, and per trial a folder ``<pair>_<trial id>/`` with Tune's
``params.json``/``result.json``, the checkpoints (the best by the pair's metric and the latest), and the
trial's TensorBoard events (losses, learning rate, the score, image grids of the same test images for
every trial, and its HParams), so ``tensorboard --logdir <storage_path>/<sweep>`` compares them all.

On a cluster, trials that drive a Ray Train run ask for a little of the ``driver`` resource when the
cluster defines one (the cluster files put it on the on-demand head): a spot reclaim then never takes a
trial's driver with its workers.

The experiment file is ``cyclegan/experiment.py``; one trial is ``trial.py``; this is the driver.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import tempfile
from typing import Any, Optional

from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from ..core.config import Config
from ..core.evaluate import METRICS
from ..core.experiment import EXPERIMENT_FILE, OBJECTIVE, PAIR_KEY, Experiment, pair_config, save_experiment
from ..core.lease import Lease
from ..core.rerun import check_rerun, experiment_differences
from ..core.storage import Storage
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


class PairSearch(Searcher):
    """One searcher per pair behind Tune's single search interface. Suggestions take the pairs in turn
    (the pair with the fewest trials so far goes next), each from its own searcher, with the pair's name
    added to the config; a trial's results reach only its pair's searcher."""

    def __init__(self, searchers: dict, samples_per_pair: int):
        super().__init__()
        self.by_pair, self.samples_per_pair = searchers, samples_per_pair
        self.suggested = {pair: 0 for pair in searchers}
        self.pair_of: dict[str, str] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # every pair's searcher already has its metric, mode and space

    def suggest(self, trial_id: str):
        open_pairs = [p for p in self.by_pair if self.suggested[p] < self.samples_per_pair]
        if not open_pairs:
            return self.FINISHED
        pair = min(open_pairs, key=lambda p: self.suggested[p])
        config = self.by_pair[pair].suggest(trial_id)
        if config is None or config == self.FINISHED:
            return config
        self.suggested[pair] += 1
        self.pair_of[trial_id] = pair
        return {**config, PAIR_KEY: pair}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self.by_pair.get(self.pair_of.get(trial_id, ""))
        if searcher is not None and searcher.metric in result:  # a notice's report has no score
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self.pair_of:
            self.by_pair[self.pair_of[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:  # Tune saves the searchers with its experiment state
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PairScheduler(FIFOScheduler):
    """One scheduler per pair (ASHA compares a trial only with trials of its own pair); trials start in
    the order Tune queues them, whatever their pair."""

    def __init__(self, schedulers: dict):
        super().__init__()
        self.by_pair = schedulers

    def _of(self, trial):
        return self.by_pair[trial.config[PAIR_KEY]]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{pair}: {s.debug_string()}" for pair, s in self.by_pair.items())


def _scheduler_state_callback():
    from ray.tune import Callback

    class SchedulerState(Callback):
        """Tune saves its searchers with the experiment's state, but not its scheduler (its controller leaves
        the scheduler out of what it saves): on --resume every pair's ASHA forgot its rungs and started
        halving over, comparing new trials with nothing. A callback's state is saved and restored by Tune
        with the experiment's (``Callback.get_state``/``set_state``), so each pair's scheduler travels in it,
        written and read with the scheduler's own ``save``/``restore``."""

        def __init__(self, scheduler: PairScheduler):
            self.scheduler = scheduler

        def get_state(self) -> Optional[dict]:
            saved = {}
            with tempfile.TemporaryDirectory(prefix="cyclegan-asha-") as folder:
                for index, (pair, scheduler) in enumerate(self.scheduler.by_pair.items()):
                    path = os.path.join(folder, str(index))
                    scheduler.save(path)
                    with open(path, "rb") as f:
                        saved[pair] = f.read()
            return {"schedulers": saved} if saved else None

        def set_state(self, state: dict) -> None:
            with tempfile.TemporaryDirectory(prefix="cyclegan-asha-") as folder:
                for index, (pair, data) in enumerate(state.get("schedulers", {}).items()):
                    if pair in self.scheduler.by_pair:
                        path = os.path.join(folder, str(index))
                        with open(path, "wb") as f:
                            f.write(data)
                        self.scheduler.by_pair[pair].restore(path)
    return SchedulerState


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
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(),
                   *([_scheduler_state_callback()(scheduler)] if scheduler else [])], verbose=1)


def _tuner(exp: Experiment, store: Storage):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    s = exp.search
    searchers, schedulers = {}, {}
    for index, pair in enumerate(exp.pairs):  # each pair its own sampler's stream
        metric = exp.metric(pair)
        mode = METRICS[metric][0]
        searchers[pair.name] = OptunaSearch(space=OptunaSearch.convert_search_space(tune_space(exp.space)),
                                            metric=metric, mode=mode, seed=s.seed + index)
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
    everywhere, the sweep fails here, before any trial trains, not at the first score."""
    uri = exp.inception_weights_uri
    if uri is None or store.exists(uri):
        return
    from ..core.metrics import INCEPTION_URL, inception_weights_path, load_inception_weights
    try:
        load_inception_weights()  # this machine's copy, downloaded if allowed; checked to load
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or put the file at {uri}, where every trial of a sweep in this storage "
                                f"reads it ({INCEPTION_URL})") from None
    store.upload_file(inception_weights_path(), uri)
    log.info("the Inception weights for FID/KID are in %s for every trial", uri)


def rerun(exp: Experiment, store: Storage) -> None:
    """The rerun rule (core/rerun.py): a sweep started again with the same experiment continues (a KubeRay
    RayJob's retry runs the same entrypoint on a new cluster); another experiment under its name is
    refused, naming the differences."""
    import yaml
    saved = yaml.safe_load(store.read_text(f"{exp.uri}/{EXPERIMENT_FILE}"))
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
    Trials find their own node's credentials (see storage.py), so those names come off Tune's list while
    the sweep runs."""
    from ray.tune.execution import class_cache
    names = {name for name in class_cache.ENV_VARS_TO_PROPAGATE if name.startswith("AWS_")}
    class_cache.ENV_VARS_TO_PROPAGATE -= names
    try:
        yield
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE |= names


