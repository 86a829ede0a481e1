"""Every internal of Ray this project relies on, in one place: names outside Ray's public API, and behaviour
Ray does not document. Each entry says what it relies on; tests/distributed/test_ray_internals.py checks
each one against the installed Ray and fails naming it when an upgrade moves or changes it.

Nothing here imports Ray when the module is imported: the autoscaler, ``cyclegan bench --restart`` and
Ray Data's tasks import it cheaply.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator, Optional

# ---------------------------------------------------------------- the v1 autoscaler (distributed/autoscaling.py)


def default_utilization_scorer(node_resources: dict, resources: list, node_type: str, *,
                               node_availability_summary: Any) -> Optional[tuple]:
    """Ray's own score of a node type for a demand. Relies on:
    ``ray.autoscaler._private.resource_demand_scheduler._default_utilization_scorer``, the scorer that
    ``RAY_AUTOSCALER_UTILIZATION_SCORER`` replaces, called with these arguments, returning a tuple or None."""
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer
    return _default_utilization_scorer(node_resources, resources, node_type,
                                       node_availability_summary=node_availability_summary)


def last_launch_worked(node_availability_summary: Any, node_type: str) -> bool:
    """Whether the node type's last launch worked (True when none was recorded). Relies on: the summary the
    v1 autoscaler hands a scorer (``NodeAvailabilitySummary``) keeping, by node type,
    ``node_availabilities`` records with ``is_available``."""
    record = node_availability_summary.node_availabilities.get(node_type)
    return record is None or bool(record.is_available)


# ---------------------------------------------------------------- Tune (distributed/sweep.py, pair_search.py)

# What Tune's schedulers of a sweep (FIFO, ASHA, PBT, PB2) use of the controller they are handed: what
# pair_search.PairTrials offers them. Relies on: those schedulers calling nothing else on it.
SCHEDULER_CONTROLLER_NAMES = frozenset({"get_trials", "get_live_trials", "search_alg", "pause_trial",
                                        "_schedule_trial_save"})


def schedule_trial_save(controller: Any, trial: Any, result: Optional[dict] = None) -> Any:
    """The controller's save of a trial, as PBT asks for it. Relies on: ``TuneController._schedule_trial_save``
    (PBT calls it on the controller it is handed)."""
    return controller._schedule_trial_save(trial, result=result)


def population_trial_states(scheduler: Any) -> dict:
    """A population-based scheduler's state of each trial, by Trial. Relies on: ``PopulationBasedTraining``
    (and PB2) keeping it in ``_trial_state``, with the attributes ``last_perturbation_time``,
    ``last_train_time`` and ``last_score`` that it reads at every result."""
    return scheduler._trial_state


def trial_storage(trial: Any) -> tuple[Any, str]:
    """Where Tune keeps a trial's files: (pyarrow filesystem, path in it). Relies on: ``Trial.storage`` (Ray
    Train's ``StorageContext``) with ``storage_filesystem`` and ``trial_fs_path``."""
    return trial.storage.storage_filesystem, trial.storage.trial_fs_path


@contextlib.contextmanager
def tune_propagating_none_of(leave_out: Callable[[str], bool]) -> Iterator[set[str]]:
    """For as long as it lasts, Tune copies none of the driver's variables that ``leave_out`` names into a
    trial actor's runtime environment; put back after (yields the names left out). Relies on:
    ``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``, a set read each time Tune registers a
    trainable's actor class (Ray has no public switch)."""
    from ray.tune.execution import class_cache
    names = {name for name in class_cache.ENV_VARS_TO_PROPAGATE if leave_out(name)}
    class_cache.ENV_VARS_TO_PROPAGATE -= names
    try:
        yield names
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE |= names


def tune_propagated_names() -> frozenset[str]:
    """The variables Tune copies from the driver into trial actors now (same reliance as above)."""
    from ray.tune.execution import class_cache
    return frozenset(class_cache.ENV_VARS_TO_PROPAGATE)


# ---------------------------------------------------------------- Ray Train V2 (distributed/train.py, ingest.py)

# How often Train's controller polls its workers. Relies on: Train V2 reading this variable (its
# HEALTH_CHECK_INTERVAL_S_ENV_VAR) and carrying it from the driver to the controller and the workers.
TRAIN_HEALTH_CHECK_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def train_propagated_variables() -> dict[str, str]:
    """The variables (and values) Train V2 carries from this process to its controller and workers. Relies
    on: ``ray.train.v2._internal.constants.get_env_vars_to_propagate``."""
    from ray.train.v2._internal.constants import get_env_vars_to_propagate
    return get_env_vars_to_propagate()


# Behaviour ingest.RemainingSamples relies on: Train V2 calls DataConfig.configure lazily, once, when the
# first worker (rank 0) asks for its shard (ray.train.get_dataset_shard), not when the worker group starts.
# The module whose manager does it (the test checks it there):
DATA_CONFIGURE_CALLER = "ray.train.v2._internal.data_integration.dataset_manager"

# ---------------------------------------------------------------- Ray's log lines (commands/bench/restart.py)
# Relies on: Ray's driver printing a worker's lines behind "(<actor class> pid=<pid>[, ip=<node ip>])" (the ip
# when not the driver's node), Train's worker being the actor RayTrainWorker, and Train's log lines for a
# checkpoint registered and for a worker group's process group.
TRAIN_WORKER_PREFIX = re.compile(r"\(RayTrainWorker pid=(\d+)(?:, ip=([^)\s]+))?\)")
TRAIN_CHECKPOINT_LINE = "Checkpoint successfully created"
TRAIN_PROCESS_GROUP_LINE = "Setting up process group"

# ---------------------------------------------------------------- for the tests


def cpus_ray_detects() -> int:
    """The CPUs a Ray instance of its own gets on this machine. Relies on: ``ray._private.utils.get_num_cpus``."""
    from ray._private.utils import get_num_cpus
    return get_num_cpus()


def package_working_dir(folder: str, package: str) -> int:
    """A job's ``--working-dir`` packed as ``ray job submit`` packs it (honouring .gitignore and .rayignore)
    into ``package``; returns Ray's size limit for it. Relies on: ``create_package`` and
    ``GCS_STORAGE_MAX_SIZE`` of ``ray._private.runtime_env.packaging``."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, create_package
    create_package(folder, package, include_gitignore=True)
    return GCS_STORAGE_MAX_SIZE
