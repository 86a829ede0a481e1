"""``cyclegan bench --population EXPERIMENT``: population-based training against Optuna + ASHA (and Optuna
alone) at the same budget: the experiment's pairs, trials per pair, epochs per trial and seeds, each run
``--repeats`` times."""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time

from ...core.evaluate import METRICS
from ...core.experiment import Experiment
from ...distributed.runtime import init_ray
from ...distributed.sweep import sweep


def runs(exp: Experiment, repeats: int) -> list[tuple[str, int, Experiment]]:
    """(variant, repeat, experiment) for Optuna + ASHA, Optuna alone and PBT, every repeat; repeat r uses
    seed + r."""
    out = []
    for repeat in range(repeats):
        # Optuna + ASHA stops weak trials early; Optuna alone trains every trial to the end, as PBT does.
        for variant, algorithm, scheduler in (("optuna+asha", "optuna", "asha"), ("optuna", "optuna", "none"),
                                              ("pbt", "pbt", "none")):
            search = dataclasses.replace(exp.search, algorithm=algorithm, seed=exp.search.seed + repeat,
                                         scheduler=scheduler, max_concurrent_trials=0)
            out.append((variant, repeat, dataclasses.replace(exp, name=f"{exp.name}-{algorithm}-{scheduler}-{repeat}",
                                                              search=search)))
    return out


def bench(exp: Experiment, repeats: int = 3) -> list[dict]:
    """Per run: each pair's best final score (the last score of each trial, best of the trials), the epochs
    all its trials trained together, and the wall time; one JSON line each."""
    storage = tempfile.mkdtemp(prefix="cyclegan-population-bench-")
    init_ray(None)
    figures = []
    try:
        for algorithm, repeat, run_exp in runs(dataclasses.replace(exp, storage_path=storage), repeats):
            started = time.perf_counter()
            results = sweep(run_exp)
            wall = time.perf_counter() - started
            for pair in run_exp.pairs:
                metric = run_exp.metric(pair)
                sign = 1 if METRICS[metric][0] == "min" else -1
                mine = [r for r in results if r.config.get("pair") == pair.name and r.metrics.get(metric) is not None]
                best = min((r.metrics[metric] for r in mine), key=lambda v: sign * v, default=None)
                line = {"algorithm": algorithm, "repeat": repeat, "seed": run_exp.search.seed, "pair": pair.name,
                        "metric": metric, "best_final": best, "trials": len(mine),
                        "epochs_trained": round(sum(r.metrics.get("epochs", 0) for r in mine), 2),
                        "wall_s": round(wall, 1)}
                figures.append(line)
                print(json.dumps(line), flush=True)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return figures
