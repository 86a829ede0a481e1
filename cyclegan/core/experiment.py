"""The experiment file of ``cyclegan sweep``: which pairs, the base options, the search space and the
search settings, validated before any trial starts: the search settings are declared, coerced and checked as
the options are (``schema.py``), the space in ``space.py``; errors name the key.

No Ray here: the sweep driver (``distributed/sweep.py``) and ``cyclegan report`` both read it.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import (
    BASE_MAY_SET,
    BUILTIN_PAIRS,
    NAME,
    NOT_SEARCHABLE,
    PROCESS_KEYS,
    Config,
    ConfigError,
    from_dict,
    load_yaml,
    shown,
)
from .evaluate import METRICS
from .schema import Schema, setting
from .space import MUTABLE, check_points, mutations, parse_space, targets
from .storage import SECRET_KEYS, Storage, is_remote
from .stored import read_yaml

EXPERIMENT_FILE = "experiment.yaml"
# What a sweep's trials write, read back by `cyclegan report`:
SCORE_FILE = "sweep.json"  # in every checkpoint of a trial
EXPLOITS = "exploits"  # in a population's trial folder: one file per time it went on from another trial's state
TRAIN_RUN = "train"  # a Train-inside-Tune trial's Ray Train run, in its folder
TRAIN_RUNS = rf"{TRAIN_RUN}(-[0-9a-f]{{8}})?"  # its runs' folder names (train-<id>: one begun from a clone)
PAIR_KEY = "pair"  # in a trial's config: which pair it trains (its searcher and scheduler are that pair's)
OBJECTIVE = "objective"  # the pair's metric oriented so that lower is better: ranks the checkpoints kept
EXPERIMENT_KEYS = ("name", "storage_path", "storage_options", "datasets", "base", "space", "search")
# Training defaults a sweep changes: a checkpoint (and a score for ASHA) at every epoch end, and
# TensorBoard always on; the end-of-run evaluation is the sweep's own score.
SWEEP_BASE_DEFAULTS = {"save_epoch_freq": 1, "tensorboard": True, "eval_at_end": False}
LOCATION_KEYS = ("endpoint_url", "region")
ALGORITHMS = ("optuna", "pbt", "pb2")
POPULATION_ALGORITHMS = ("pbt", "pb2")


@dataclass
class Search:
    """The ``search:`` section: how trials are sampled, scheduled and scored."""
    metric: str = setting("auto", "l1 | psnr (built-in pairs) | fid | kid; auto: l1 for built-in pairs, else fid",
                          choices=("auto", *METRICS))
    num_samples: int = setting(8, "trials per pair", minimum=1)
    max_concurrent_trials: int = setting(0, "trials running at once, all pairs together (the cluster-wide limit); "
                                            "0: as many as the cluster's resources hold (trials that train in their own process; "
                                            "needed when num_workers > 0)", minimum=0)
    time_budget_s: Optional[float] = setting(None, "for the whole sweep")
    seed: int = setting(0, "Optuna's TPE sampler; pbt/pb2: the first draws and the explore steps")
    algorithm: str = setting("optuna", "optuna (TPE per pair, with the scheduler below) | pbt | pb2 (population-based "
                                       "training per pair: the weakest trials copy the state of the strongest and "
                                       "perturb their hyperparameters mid-run)", choices=ALGORITHMS)
    scheduler: str = setting("asha", "with algorithm optuna: asha | none", choices=("asha", "none"))
    grace_period: float = setting(1, "ASHA: epochs every trial gets", above=0)
    reduction_factor: int = setting(2, "ASHA: keep 1/reduction_factor at each rung", minimum=2)
    # population=True: a setting only population-based training reads (given for another algorithm: refused)
    perturbation_interval: float = setting(2, "pbt/pb2: epochs between a trial's perturbations", above=0,
                                           population=True)
    hyperparam_mutations: Optional[list] = setting(None, "pbt/pb2: the space keys changed mid-run (default: every "
                                                         f"key of the space among {', '.join(MUTABLE)}); the "
                                                         "others are drawn once per trial", population=True)
    quantile_fraction: float = setting(0.25, "pbt/pb2: the bottom fraction of a pair's population copies the top "
                                             "fraction", above=0, population=True)
    synch: bool = setting(False, "pbt/pb2: perturb a pair's trials together at each interval (each waits there "
                                 "for the others) instead of each on its own when it gets there", population=True)
    points_to_evaluate: Optional[list] = setting(None, "each pair's first trials: a list of mappings, each giving "
                                                       "every key of the space a value")
    feature_extractor: str = setting("inception", "for fid/kid: inception | tiny | package.module:callable")
    eval_images: int = setting(100, "test images per direction for the score", minimum=1)
    grid_images: int = setting(4, "fixed test images per direction in the TensorBoard grids", minimum=1)
    max_trial_failures: int = setting(3, "restarts of a trial (from its checkpoint) after its process is lost")
    gpus_per_trial: float = setting(1.0, "with base.use_gpu, the share of a GPU a trial that trains in its own "
                                         "process asks for: 0.25 runs four trials on each GPU (a CycleGAN at "
                                         "batch 1 leaves most of a large GPU idle); trials on Ray workers "
                                         "(num_workers > 0) take a whole GPU per worker", above=0)


SEARCH = Schema(Search, prefix="search.")
POPULATION_SETTINGS = tuple(key for key, f in SEARCH.fields.items() if f.metadata.get("population"))


@dataclass
class Pair:
    name: str
    dataroot: Optional[str] = None   # None: the built-in pair ``builtin``
    builtin: Optional[str] = None


@dataclass
class Experiment:
    name: str
    storage_path: str
    pairs: list[Pair]
    base: dict
    space: dict[str, tuple[str, list]]
    search: Search
    storage_options: dict = field(default_factory=dict)  # where the store is (endpoint_url, region), no keys

    @property
    def uri(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def inception_weights_uri(self) -> Optional[str]:
        """Where every trial reads the FID Inception's weights (beside the built-in pairs, for every sweep in
        this storage), when a pair is scored by FID/KID with them; None otherwise."""
        from .metrics import INCEPTION_FILE
        if self.search.feature_extractor != "inception" or all(self.metric(p) not in ("fid", "kid") for p in self.pairs):
            return None
        return f"{self.storage_path.rstrip('/')}/_weights/{INCEPTION_FILE}"

    def metric(self, pair: Pair) -> str:
        m = self.search.metric
        return ("l1" if pair.builtin else "fid") if m == "auto" else m


def _unknown(key: str, known, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    return ConfigError(f"{where}: unknown" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _pair(entry: Any, index: int) -> Pair:
    where = f"datasets[{index}]"
    if isinstance(entry, str):
        entry = {"builtin": entry} if entry in BUILTIN_PAIRS else {"dataroot": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {entry!r} is not a built-in pair name, a path/URI, or a mapping")
    unknown = set(entry) - {"name", "dataroot", "builtin"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (expected name, dataroot or builtin)")
    if bool(entry.get("dataroot")) == bool(entry.get("builtin")):
        raise ConfigError(f"{where}: give exactly one of dataroot and builtin")
    if entry.get("builtin") and entry["builtin"] not in BUILTIN_PAIRS:
        raise ConfigError(f"{where}.builtin: {entry['builtin']!r} is not one of {', '.join(BUILTIN_PAIRS)}")
    name = entry.get("name") or entry.get("builtin") or str(entry["dataroot"]).rstrip("/").rsplit("/", 1)[-1]
    if not re.fullmatch(NAME, str(name)):
        raise ConfigError(f"{where}.name: {name!r} must be letters, digits, '_', '.', '-' (it names a folder)")
    return Pair(str(name), entry.get("dataroot"), entry.get("builtin"))


def parse_search(values: Any, pairs: list[Pair], space: Optional[dict] = None, base: Optional[dict] = None) -> Search:
    if not isinstance(values, dict):
        raise ConfigError("search: must be a mapping of settings")
    search = SEARCH.build(dict(sorted(values.items())))
    if search.quantile_fraction > 0.5:
        raise ConfigError(f"search.quantile_fraction: {search.quantile_fraction!r} must be at most 0.5 (the bottom "
                          "copies the top)")
    if search.gpus_per_trial > 1:
        raise ConfigError(f"search.gpus_per_trial: {search.gpus_per_trial!r} must be at most 1 (a trial trains in one "
                          "process, on one GPU; for more, set base.num_workers)")
    if space is not None:
        check_points(search.points_to_evaluate or [], space, base or {})
        _check_population(search, values, space, base or {})
    if search.metric in ("l1", "psnr"):
        for pair in pairs:
            if not pair.builtin:
                raise ConfigError(f"search.metric: {search.metric} needs ideal translations, which only "
                                  f"built-in pairs have ({pair.name} is not one); use fid or kid")
    return search


def _check_population(search: Search, values: dict, space: dict, base: dict) -> None:
    if search.algorithm not in POPULATION_ALGORITHMS:
        for key in POPULATION_SETTINGS:
            if key in values:
                raise ConfigError(f"search.{key}: for algorithm pbt or pb2 (this search is {search.algorithm})")
        return
    if search.max_concurrent_trials:
        raise ConfigError(f"search.max_concurrent_trials: {search.algorithm}'s population exists all at once: as many "
                          "trials run as the cluster's resources hold (base.cpus_per_worker, search.gpus_per_trial) "
                          "and the others take turns at each perturbation")
    if values.get("scheduler") == "asha":
        raise ConfigError(f"search.scheduler: asha is for algorithm optuna; {search.algorithm} schedules its "
                          "population itself (weak trials are replaced, not stopped)")
    keys = mutations(search, space)
    if not keys:
        raise ConfigError(f"search.hyperparam_mutations: nothing to mutate: the space has none of "
                          f"{', '.join(MUTABLE)}")
    for key in keys:
        if not isinstance(key, str) or key not in space:
            raise ConfigError(f"search.hyperparam_mutations: {key!r} is not a key of space ({', '.join(space)})")
        if key not in MUTABLE:
            raise ConfigError(f"space.{key}: cannot change in a running trial (it shapes the networks, the data or "
                              f"the run; {search.algorithm} draws it once per trial); mutable: {', '.join(MUTABLE)}")
        if search.algorithm == "pb2" and space[key][0] == "choice":
            raise ConfigError(f"space.{key}: pb2 explores ranges; give {{uniform: [low, high]}}, "
                              "{loguniform: ...} or {randint: ...}, or use pbt for a choice")
    if search.algorithm == "pb2" and importlib.util.find_spec("sklearn") is None:
        raise ConfigError("search.algorithm: pb2's GP bandit needs scikit-learn: pip install 'cyclegan[pb2]'")
    cfg = from_dict(base, source="experiment base")
    if not any(key in space for key in ("n_epochs", "n_epochs_decay")) and \
            search.perturbation_interval >= cfg.total_epochs:
        raise ConfigError(f"search.perturbation_interval: {search.perturbation_interval:g} epochs is not within a "
                          f"trial's {cfg.total_epochs} (n_epochs + n_epochs_decay): no trial would be perturbed")
    if cfg.keep_checkpoints < 3:
        raise ConfigError(f"base.keep_checkpoints: {cfg.keep_checkpoints} is too few for {search.algorithm}: a "
                          "trial is cloned from another's recent checkpoint, which must still be kept (at least 3)")


def parse_location(options: Any, key: str = "storage_options") -> dict:
    """Where a sweep's store is: ``endpoint_url`` and ``region``, nothing that signs a request (an experiment
    file is shared and stored beside the results; credentials come from each node)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{key}: a mapping of endpoint_url and region is needed, not a {type(options).__name__}")
    for name, value in options.items():
        if name in SECRET_KEYS:
            raise ConfigError(f"{key}.{name}: credentials never go in an experiment file; every node finds its own "
                              f"(instance role, service account, AWS_* variables)")
        if name not in LOCATION_KEYS:  # named when it looks like a name (a pasted credential is not repeated)
            named = f".{name}" if re.fullmatch(r"[A-Za-z_]{1,40}", str(name)) else ""
            raise _unknown(str(name), LOCATION_KEYS, f"{key}{named}")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}.{name}: {shown(name, value)} must be a non-empty string")
    return dict(options)


def parse_experiment(data: dict, source: str = "experiment") -> Experiment:
    """Validate everything a sweep needs before any trial starts; errors name the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping")
    for key in data:
        if key not in EXPERIMENT_KEYS:
            close = difflib.get_close_matches(key, EXPERIMENT_KEYS, n=1)
            raise ConfigError(f"{key}: unknown key in {source}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; expected {', '.join(EXPERIMENT_KEYS)}")
    name = str(data.get("name") or "")
    if not re.fullmatch(NAME, name):
        raise ConfigError(f"name: {name!r} must be letters, digits, '_', '.', '-' (it names the sweep's folder)")
    base = dict(data.get("base") or {})
    for key in base:
        if key in NOT_SEARCHABLE - BASE_MAY_SET:
            raise ConfigError(f"base.{key}: set per pair by the sweep (use datasets / storage_path)")
    base = {**SWEEP_BASE_DEFAULTS, **base}
    base_cfg = from_dict(base, source=f"{source} base")  # names a bad key or value
    datasets = data.get("datasets") or ["seasons"]
    if not isinstance(datasets, list):
        raise ConfigError(f"datasets: {datasets!r} must be a list")
    pairs = [_pair(entry, i) for i, entry in enumerate(datasets)]
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"datasets: two pairs share a name ({names}); give them distinct 'name's")
    space = parse_space(data.get("space") or {}, base)
    search = parse_search(data.get("search") or {}, pairs, space, base)
    if base_cfg.max_workers > 0 and not search.max_concurrent_trials and search.algorithm not in POPULATION_ALGORITHMS:
        # A Train-inside-Tune trial's own bundle is almost empty (its workers ask for theirs), so without a
        # limit every trial starts its Ray Train run at once: the autoscaler is flooded, ASHA has nothing
        # to compare at its first rung, and the workers wait for each other's resources.
        raise ConfigError("search.max_concurrent_trials: needed when trials train on Ray workers (base.num_workers "
                          f"{base_cfg.num_workers!r}): e.g. your GPUs / (num_workers per trial)")
    if search.gpus_per_trial != 1 and (base_cfg.max_workers > 0 or not base_cfg.use_gpu):
        why = (f"trials on Ray workers (base.num_workers {base_cfg.num_workers!r}) take a whole GPU per worker"
               if base_cfg.max_workers > 0 else "the trials train on CPUs (base.use_gpu is off)")
        raise ConfigError(f"search.gpus_per_trial: {search.gpus_per_trial!r} is for trials that train in their own "
                          f"process on a GPU; {why}")
    storage_path = str(data.get("storage_path") or "./sweeps")
    if not is_remote(storage_path):
        storage_path = str(Path(storage_path).resolve())
    return Experiment(name, storage_path, pairs, base, space, search, parse_location(data.get("storage_options")))


def load_experiment(path: str | Path) -> Experiment:
    return parse_experiment(load_yaml(path), source=str(path))


def save_experiment(exp: Experiment, store: Storage) -> None:
    """``<sweep>/experiment.yaml``: what ``--resume`` and ``cyclegan report`` read back."""
    store.write_text(f"{exp.uri}/{EXPERIMENT_FILE}", yaml.safe_dump(dataclasses.asdict(exp), sort_keys=False))


def resumed_experiment(uri: str, store: Optional[Storage] = None) -> Experiment:
    """The experiment a sweep folder (or s3:// prefix) was started from. What the stored file decides is what
    is searched (pairs, base options, space, search settings), validated again; where the sweep is, which
    store it reaches and what this process uses are not the file's: the folder is where it was read, its
    store this process's (``--storage_options``, the AWS_* variables), and the base options of the process
    (``address``, ``checkpoints_dir`` ...) are left out."""
    store = store or Storage.from_options()
    uri = uri.rstrip("/") if is_remote(uri) else str(Path(uri).resolve())
    where = f"{uri}/{EXPERIMENT_FILE}"
    try:
        saved = read_yaml(store, where)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: not a sweep (no {EXPERIMENT_FILE}); --resume takes "
                                f"<storage_path>/<sweep name>") from None
    if not isinstance(saved.get("pairs"), list):
        raise ConfigError(f"{where}: not a sweep's experiment (no list of pairs)")
    storage_path, _, name = uri.rpartition("/")
    if not re.fullmatch(NAME, name):
        raise ConfigError(f"{uri}: {shown('name', name)} is not a sweep's folder name (letters, digits, '_', '.', "
                          f"'-'; not starting with '.' or '-')")
    # Names from a stored file are data: they become folders and page links, so they are checked again.
    for i, p in enumerate(saved["pairs"]):
        pair_name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(pair_name, str) or not re.fullmatch(NAME, pair_name):
            raise ConfigError(f"{where}: pairs[{i}].name {shown('name', pair_name)} is not a folder name "
                              f"(letters, digits, '_', '.', '-'; not starting with '.' or '-')")
    try:
        pairs = [_pair(p, i) for i, p in enumerate(saved["pairs"])]
        space = saved.get("space")
        if not isinstance(space, dict) or not all(isinstance(v, list) and len(v) == 2 for v in space.values()):
            raise ConfigError("space: not a stored search space")
        base = saved.get("base") or {}
        if not isinstance(base, dict):
            raise ConfigError("base: not a mapping of options")
        search = saved.get("search") or {}
        if not isinstance(search, dict):
            raise ConfigError("search: not a mapping of settings")
        exp = Experiment(name, storage_path, pairs, {k: v for k, v in base.items() if k not in PROCESS_KEYS},
                         {str(k): tuple(v) for k, v in space.items()}, parse_search(search, pairs))
        for pair in pairs:  # the base options, checked as options are
            pair_config(exp, pair)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return exp


def trial_values(exp: Experiment, pair: Pair, params: dict) -> dict:
    """The training options of one trial: schema defaults < sweep defaults < base < pair < sampled values."""
    values = dict(exp.base)
    if pair.builtin:
        values["builtin"] = pair.builtin
    else:
        values["dataroot"] = pair.dataroot
    for key, value in params.items():
        for target in targets(key):
            values[target] = value
    if values.get("dataroot") and is_remote(values["dataroot"]) and str(values.get("num_workers", "0")) == "0":
        values["num_workers"] = "1"  # object-store data streams through Ray Data: a Train run
    return values


def pair_config(exp: Experiment, pair: Pair) -> Config:
    """The options every trial of a pair shares (before the sampled values)."""
    return from_dict(trial_values(exp, pair, {}), source="experiment")
