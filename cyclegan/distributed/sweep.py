"""``cyclegan sweep EXPERIMENT.yaml``: hyperparameter search with Ray Tune and Optuna, per domain pair.

Layout of a sweep (local folder or s3://): ``<storage_path>/<sweep>/experiment.yaml`` (the file it was
started from), and per pair a Tune experiment ``<pair>/`` whose trial folders ``<pair>/<trial>/`` hold
Tune's ``params.json``/``result.json``, the checkpoints, and the trial's TensorBoard events (losses,
learning rate, the score, image grids of the same test images for every trial, and its HParams), so
``tensorboard --logdir <storage_path>/<sweep>`` compares pairs and trials side by side.

A trial with ``num_workers: 0`` trains inside the Tune trial process (the cheapest for small runs);
with N >= 1 the trial's function is the driver of a Ray Train run of N workers (Train inside Tune, the
Train V2 way) whose reports reach Tune through ``TuneReportCallback``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from ..config import BUILTIN_PAIRS, FIELDS, Config, ConfigError, from_dict, load_yaml
from ..evaluate import METRICS
from . import storage

log = logging.getLogger("cyclegan")

EXPERIMENT_FILE = "experiment.yaml"
EXPERIMENT_KEYS = ("name", "storage_path", "datasets", "base", "space", "search")
SEARCH_DEFAULTS: dict[str, Any] = {
    "metric": "auto",            # l1 | psnr (built-in pairs) | fid | kid; auto: l1 for built-in pairs, else fid
    "num_samples": 8,            # trials per pair
    "max_concurrent_trials": 2,  # per pair (pairs run one after the other)
    "time_budget_s": None,       # per pair
    "seed": 0,                   # Optuna's TPE sampler
    "scheduler": "asha",         # asha | none
    "grace_period": 1,           # ASHA: epochs every trial gets
    "reduction_factor": 2,       # ASHA: keep 1/reduction_factor at each rung
    "feature_extractor": "inception",  # for fid/kid: inception | tiny | package.module:callable
    "eval_images": 100,          # test images per direction for the score
    "grid_images": 4,            # fixed test images per direction in the TensorBoard grids
    "max_trial_failures": 3,     # restarts of a trial (from its checkpoint) after its process is lost
}
# Training defaults a sweep changes: a checkpoint (and a score for ASHA) at every epoch end, and
# TensorBoard always on; the end-of-run evaluation is the sweep's own score.
SWEEP_BASE_DEFAULTS = {"save_epoch_freq": 1, "tensorboard": True, "eval_at_end": False}
# Keys a sweep sets itself, that say where things go, or that fix a trial's resources: not searchable.
NOT_SEARCHABLE = {"name", "dataroot", "checkpoints_dir", "storage_path", "storage_options", "resume",
                  "address", "continue_train", "epoch", "load_iter", "results_dir", "builtin", "phase",
                  "num_workers", "use_gpu", "cpus_per_worker", "worker_resources"}
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
TIED_LAMBDA = "lambda_cycle"  # one value for lambda_A and lambda_B


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
    search: dict

    @property
    def uri(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    def metric(self, pair: Pair) -> str:
        m = self.search["metric"]
        return ("l1" if pair.builtin else "fid") if m == "auto" else m


# ---------------------------------------------------------------- the experiment file
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
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
        raise ConfigError(f"{where}.name: {name!r} must be letters, digits, '_', '.', '-' (it names a folder)")
    return Pair(str(name), entry.get("dataroot"), entry.get("builtin"))


def _targets(key: str) -> list[str]:
    return ["lambda_A", "lambda_B"] if key == TIED_LAMBDA else [key]


def _check_value(key: str, value: Any, base: dict, what: str) -> None:
    try:
        from_dict({**base, **{k: value for k in _targets(key)}}, source="experiment")
    except ConfigError as e:
        raise ConfigError(f"space.{key}: {what} {value!r} is rejected: {e}") from None


def _space_entry(key: str, spec: Any, base: dict) -> tuple[str, list]:
    if key not in FIELDS and key != TIED_LAMBDA:
        close = difflib.get_close_matches(key, list(FIELDS) + [TIED_LAMBDA], n=1)
        raise ConfigError(f"space.{key}: unknown option" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"space.{key}: not searchable (the sweep sets it per pair and trial)")
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"space.{key}: {spec!r} must be a list of choices or one of "
                          f"{{choice: [...]}}, {{uniform: [low, high]}}, {{loguniform: [low, high]}}, "
                          f"{{randint: [low, high]}}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}: {kind} needs a non-empty list, got {args!r}")
    if kind == "choice":
        for value in args:
            _check_value(key, value, base, "choice")
        return kind, args
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"space.{key}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high and not (kind == "randint" and low == high):
        raise ConfigError(f"space.{key}: empty range [{low}, {high}] (low must be below high)")
    field_type = "float" if key == TIED_LAMBDA else FIELDS[key].type
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"space.{key}: randint needs integer bounds, got {args!r}")
    if kind in ("uniform", "loguniform") and "int" in str(field_type):
        raise ConfigError(f"space.{key}: an integer option: use randint or choice, not {kind}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"space.{key}: loguniform needs low > 0, got {low}")
    for value in (low, high):
        _check_value(key, value, base, "bound")
    return kind, [low, high]


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
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"name: {name!r} must be letters, digits, '_', '.', '-' (it names the sweep's folder)")
    base = dict(data.get("base") or {})
    for key in base:
        if key in NOT_SEARCHABLE - {"checkpoints_dir", "address", "num_workers", "use_gpu", "cpus_per_worker",
                                    "worker_resources"}:
            raise ConfigError(f"base.{key}: set per pair by the sweep (use datasets / storage_path)")
    base = {**SWEEP_BASE_DEFAULTS, **base}
    from_dict(base, source=f"{source} base")  # names a bad key or value
    datasets = data.get("datasets") or ["seasons"]
    if not isinstance(datasets, list):
        raise ConfigError(f"datasets: {datasets!r} must be a list")
    pairs = [_pair(entry, i) for i, entry in enumerate(datasets)]
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"datasets: two pairs share a name ({names}); give them distinct 'name's")
    space_in = data.get("space") or {}
    if not isinstance(space_in, dict) or not space_in:
        raise ConfigError("space: needs at least one option to search, e.g. lambda_cycle: {loguniform: [3, 30]}")
    if TIED_LAMBDA in space_in and ({"lambda_A", "lambda_B"} & set(space_in)):
        raise ConfigError(f"space.{TIED_LAMBDA}: sets lambda_A and lambda_B together; do not also search them")
    space = {key: _space_entry(key, spec, base) for key, spec in space_in.items()}
    search_in = data.get("search") or {}
    unknown = set(search_in) - set(SEARCH_DEFAULTS)
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, SEARCH_DEFAULTS, n=1)
        raise ConfigError(f"search.{key}: unknown" + (f" (did you mean {close[0]!r}?)" if close else ""))
    search = {**SEARCH_DEFAULTS, **search_in}
    if search["metric"] not in ("auto", *METRICS):
        raise ConfigError(f"search.metric: {search['metric']!r} is not one of auto, {', '.join(METRICS)}")
    if search["scheduler"] not in ("asha", "none"):
        raise ConfigError(f"search.scheduler: {search['scheduler']!r} is not asha or none")
    for key in ("num_samples", "max_concurrent_trials", "eval_images", "grid_images", "reduction_factor"):
        if not isinstance(search[key], int) or search[key] < 1 or (key == "reduction_factor" and search[key] < 2):
            raise ConfigError(f"search.{key}: {search[key]!r} must be an integer >= {2 if key == 'reduction_factor' else 1}")
    if not isinstance(search["grace_period"], (int, float)) or search["grace_period"] <= 0:
        raise ConfigError(f"search.grace_period: {search['grace_period']!r} must be > 0 (epochs)")
    if search["metric"] in ("l1", "psnr"):
        for pair in pairs:
            if not pair.builtin:
                raise ConfigError(f"search.metric: {search['metric']} needs ideal translations, which only "
                                  f"built-in pairs have ({pair.name} is not one); use fid or kid")
    storage_path = str(data.get("storage_path") or "./sweeps")
    if not storage.is_remote(storage_path):
        storage_path = str(Path(storage_path).resolve())
    return Experiment(name, storage_path, pairs, base, space, search)


def load_experiment(path: str | Path) -> Experiment:
    return parse_experiment(load_yaml(path), source=str(path))


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


def trial_values(exp: Experiment, pair: Pair, params: dict) -> dict:
    """The training options of one trial: schema defaults < sweep defaults < base < pair < sampled values."""
    values = dict(exp.base)
    if pair.builtin:
        values["builtin"] = pair.builtin
    else:
        values["dataroot"] = pair.dataroot
    for key, value in params.items():
        for target in _targets(key):
            values[target] = value
    if values.get("dataroot") and storage.is_remote(values["dataroot"]) and str(values.get("num_workers", "0")) == "0":
        values["num_workers"] = "1"  # object-store data streams through Ray Data: a Train run
    return values


# ---------------------------------------------------------------- inside a trial
class SweepHooks:
    """What a trial adds to training: its score at every report (for ASHA and Optuna), the best so
    far, the TensorBoard HParams session and fixed-image grids, and the events copied to storage."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.metric, self.mode = spec["metric"], METRICS[spec["metric"]][0]
        self.best: Optional[float] = None
        self.scored: tuple[int, dict] = (-1, {})
        remote = storage.is_remote(spec["trial_uri"])
        # Events go straight to the trial folder when it is local, else to scratch and then uploaded.
        self.tensorboard_dir = Path(tempfile.mkdtemp(prefix="cyclegan-tb-")) if remote else Path(spec["trial_uri"])
        self.upload_to = spec["trial_uri"] if remote else None
        self.scorer = None

    def start(self, trainer) -> None:
        if not trainer.is_main:
            return
        from ..evaluate import Scorer, test_images
        cfg = trainer.cfg
        options = self.spec.get("options") or {}
        self.scorer = Scorer(cfg, self.metric, self.spec["feature_extractor"], self.spec["eval_images"], options,
                             trainer.model.device)
        n = self.spec["grid_images"]
        self.grid = {split: [img for _, img in test_images(cfg.dataroot, split, nc, cfg, n, options)]
                     for split, nc in (("testA", cfg.input_nc), ("testB", cfg.output_nc))}
        if trainer.writer is not None and trainer.resumed_from is None:
            from torch.utils.tensorboard.summary import hparams
            values = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                      for k, v in self.spec["hparams"].items()}
            experiment, start, _ = hparams(values, {f"hparams/{self.metric}": 0.0,
                                                    f"hparams/best_{self.metric}": 0.0})
            for summary in (experiment, start):
                trainer.writer._get_file_writer().add_summary(summary)

    def metrics(self, trainer) -> dict:
        if not trainer.is_main or self.scorer is None:
            return {}
        p = trainer.progress
        if self.scored[0] == p.total_iters:  # the end-of-run report follows the last save at the same step
            return self.scored[1]
        scores = self.scorer(trainer.model.G_A, trainer.model.G_B)
        value = float(scores[self.metric])
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
        epochs = p.epoch - trainer.cfg.epoch_count + p.epoch_iter / max(1, trainer.epoch_length())
        # Tune gets the headline numbers; TensorBoard gets every direction and the identity baseline.
        out = {self.metric: value, f"best_{self.metric}": self.best, "epochs": epochs,
               **{f"score_{k}": float(v) for k, v in scores.items() if k in METRICS}}
        writer = trainer.writer
        if writer is not None:
            step = p.total_iters
            writer.add_scalar(f"hparams/{self.metric}", value, step)
            writer.add_scalar(f"hparams/best_{self.metric}", self.best, step)
            for key, v in scores.items():
                writer.add_scalar(f"score/{key}", v, step)
            self._log_grids(trainer, step)
            writer.flush()
            self._upload()
        self.scored = (p.total_iters, out)
        return out

    def _log_grids(self, trainer, step: int) -> None:
        import torch
        import torchvision
        from ..evaluate import translate_images
        for name, gen, split in (("AtoB", trainer.model.G_A, "testA"), ("BtoA", trainer.model.G_B, "testB")):
            reals = self.grid[split]
            fakes = translate_images(gen, reals)
            tiles = [torch.from_numpy(i.copy()).permute(2, 0, 1).expand(3, -1, -1) for i in reals + fakes]
            grid = torchvision.utils.make_grid(tiles, nrow=len(reals), padding=2)
            trainer.writer.add_image(f"test/{name}", grid, step)  # top row: inputs, bottom: translations

    def _upload(self) -> None:
        if self.upload_to is None:
            return
        import pyarrow.fs as pafs
        fs, path = storage.resolve(self.upload_to, self.spec.get("options") or {})
        pafs.copy_files(str(self.tensorboard_dir), path, destination_filesystem=fs)

    def save(self, folder: Path) -> None:
        (folder / "sweep.json").write_text(json.dumps({"best": self.best}))

    def restore(self, folder: Path) -> None:
        saved = folder / "sweep.json"
        if saved.exists():
            self.best = json.loads(saved.read_text()).get("best")


def run_trial(params: dict, setup: dict) -> None:
    """One trial: Tune calls it with the sampled values (and again, from its checkpoint, after a restart)."""
    from ray import tune
    from ..data import resolve_dataroot
    from ..train import Trainer
    from .train import fit, parse_resources, quiet_data, train_and_report
    exp, pair = setup["experiment"], setup["pair"]
    ctx = tune.get_context()
    trial_uri = f"{setup['pair_uri']}/{ctx.get_trial_id()}"
    # This node's working files (states, reference weights): the trial's record is its Tune checkpoints.
    scratch = Path(tempfile.gettempdir()) / "cyclegan-trials" / ctx.get_trial_id()
    values = trial_values(exp, pair, params)
    cfg = from_dict({**values, "name": "run", "checkpoints_dir": str(scratch), "storage_options": None})
    # A built-in pair is read from where the driver wrote it (_trainable), not from the trial's scratch.
    cfg = dataclasses.replace(cfg, dataroot=resolve_dataroot(
        dataclasses.replace(cfg, checkpoints_dir=setup["builtin_root"])))
    hparams = {"pair": pair.name, **{k: v for k, v in params.items()}}
    spec = {"metric": setup["metric"], "feature_extractor": exp.search["feature_extractor"],
            "eval_images": exp.search["eval_images"], "grid_images": exp.search["grid_images"],
            "trial_uri": trial_uri, "options": setup["options"], "hparams": hparams}
    if cfg.max_workers == 0:
        quiet_data()
        import torch
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))  # the CPUs Tune reserved, not the machine's
        hooks = SweepHooks(spec)
        trainer = Trainer(cfg, progress_bar=False, tensorboard_dir=hooks.tensorboard_dir)

        def report_fn(metrics, folder):
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)
        train_and_report(trainer, tune.get_checkpoint(), report_fn, hooks)
    else:
        from ray.tune.integration.ray_train import TuneReportCallback
        fit(cfg, num_workers=(max(1, cfg.min_workers), max(1, cfg.max_workers)), use_gpu=cfg.use_gpu,
            cpus_per_worker=cfg.cpus_per_worker, storage_path=trial_uri, storage_options=setup["options"],
            max_failures=cfg.max_failures, progress_bar=False, run_name="train",
            worker_resources=parse_resources(cfg.worker_resources), callbacks=[TuneReportCallback()], sweep=spec)


# ---------------------------------------------------------------- the driver
def _tune_env() -> None:
    # Tune's own experiment state must reach storage within seconds, or a killed driver loses trials.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # The trials write their own TensorBoard events (with HParams); Tune's copy would duplicate them.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")


def _trainable(exp: Experiment, pair: Pair, base_cfg: Config, options: dict):
    from ray import tune
    metric = exp.metric(pair)
    builtin_root = str(Path(base_cfg.checkpoints_dir).resolve())
    if pair.builtin:  # written once here, so the trials only read it
        from ..data import resolve_dataroot
        resolve_dataroot(dataclasses.replace(base_cfg, checkpoints_dir=builtin_root))
    setup = {"experiment": exp, "pair": pair, "metric": metric, "pair_uri": f"{exp.uri}/{pair.name}",
             "options": options, "builtin_root": builtin_root}
    fn = tune.with_parameters(run_trial, setup=setup)
    if base_cfg.max_workers == 0:
        import ray
        use_gpu = base_cfg.use_gpu if base_cfg.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
        resources = {"cpu": base_cfg.cpus_per_worker, "gpu": 1 if use_gpu else 0}
    else:  # the trial only drives a Train run; its workers ask for their own resources
        resources = {"cpu": 0, "memory": 64 * 2**20}
    return tune.with_resources(fn, resources), metric


def _run_config(exp: Experiment, pair: Pair, base_cfg: Config, options: dict):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    fs, path = storage.ray_storage(exp.uri, options)
    return tune.RunConfig(
        name=pair.name, storage_path=path, storage_filesystem=fs,
        sync_config=tune.SyncConfig(sync_period=5, sync_artifacts=True),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=base_cfg.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=exp.search["max_trial_failures"]),
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()], verbose=1)


def pair_config(exp: Experiment, pair: Pair) -> Config:
    """The options every trial of a pair shares (before the sampled values)."""
    return from_dict(trial_values(exp, pair, {}), source="experiment")


def _tuner(exp: Experiment, pair: Pair, options: dict):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch
    base_cfg = pair_config(exp, pair)
    trainable, metric = _trainable(exp, pair, base_cfg, options)
    mode = METRICS[metric][0]
    s = exp.search
    scheduler = (ASHAScheduler(time_attr="epochs", max_t=base_cfg.total_epochs, grace_period=s["grace_period"],
                               reduction_factor=s["reduction_factor"])
                 if s["scheduler"] == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable, param_space=tune_space(exp.space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=OptunaSearch(seed=s["seed"]),
                                    scheduler=scheduler, num_samples=s["num_samples"],
                                    max_concurrent_trials=s["max_concurrent_trials"],
                                    time_budget_s=s["time_budget_s"],
                                    # The next trial runs in the same process: no second torch import.
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: t.trial_id,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=_run_config(exp, pair, base_cfg, options))


def _exists(uri: str, options: dict) -> bool:
    import pyarrow.fs as pafs
    fs, path = storage.resolve(uri, options)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def sweep(exp: Experiment, resume: bool = False, address: Optional[str] = None,
          options: Optional[dict] = None) -> dict[str, Any]:
    """Run (or continue) every pair's search; returns {pair: ResultGrid}."""
    from ray import tune
    from .train import _write_text, init_ray, quiet_data
    options = storage.with_env(options or {})
    marker = f"{exp.uri}/{EXPERIMENT_FILE}"
    if not resume and _exists(marker, options):
        raise ConfigError(f"name: a sweep {exp.name!r} already exists at {exp.uri}; continue it with "
                          f"'cyclegan sweep --resume {exp.uri}' or choose another name")
    if not resume:
        _write_text(marker, yaml.safe_dump(dataclasses.asdict(exp), sort_keys=False), options)
    _tune_env()
    init_ray(address)
    quiet_data()
    results = {}
    for pair in exp.pairs:
        pair_uri = f"{exp.uri}/{pair.name}"
        fs, path = storage.ray_storage(pair_uri, options)
        if resume and tune.Tuner.can_restore(path, storage_filesystem=fs):
            log.info("resuming the search of %s from %s", pair.name, pair_uri)
            trainable, _ = _trainable(exp, pair, pair_config(exp, pair), options)
            tuner = tune.Tuner.restore(path, trainable=trainable, storage_filesystem=fs,
                                       resume_unfinished=True, resume_errored=True)
        else:
            log.info("searching %s: %d trials, metric %s", pair.name, exp.search["num_samples"], exp.metric(pair))
            tuner = _tuner(exp, pair, options)
        results[pair.name] = tuner.fit()
    return results


def resumed_experiment(uri: str, options: Optional[dict] = None) -> Experiment:
    from .train import _read_text
    uri = uri.rstrip("/") if storage.is_remote(uri) else str(Path(uri).resolve())
    try:
        text = _read_text(f"{uri}/{EXPERIMENT_FILE}", storage.with_env(options or {}))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: not a sweep (no {EXPERIMENT_FILE}); --resume takes "
                                f"<storage_path>/<sweep name>") from None
    saved = yaml.safe_load(text)
    saved["pairs"] = [Pair(**p) for p in saved["pairs"]]
    saved["space"] = {k: tuple(v) for k, v in saved["space"].items()}
    exp = Experiment(**saved)
    if exp.uri.rstrip("/") != uri and not storage.is_remote(uri):  # the folder was moved: follow it
        exp = dataclasses.replace(exp, storage_path=str(Path(uri).parent), name=Path(uri).name)
    return exp



def bench(exp: Experiment) -> dict:
    """Per-trial overhead of a sweep: (wall time - time spent inside the trials) / trials, one trial at a
    time so the two are comparable. Ray's own start-up is outside the wall time."""
    import time
    from .train import init_ray
    exp = dataclasses.replace(exp, name=f"{exp.name}-bench-{int(time.time())}",
                              storage_path=tempfile.mkdtemp(prefix="cyclegan-sweep-bench-"),
                              search={**exp.search, "max_concurrent_trials": 1})
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
