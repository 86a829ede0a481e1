"""``cyclegan bench --sweep EXPERIMENT``: a sweep's overhead per trial, one trial at a time."""
from __future__ import annotations

import dataclasses
import tempfile
import time

from ...core.experiment import Experiment
from ...distributed.runtime import init_ray
from ...distributed.sweep import sweep


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
    inside = [r.metrics.get("time_total_s", 0.0) for r in results]
    figures = {"trials": len(inside), "wall_s": wall, "in_trials_s": sum(inside),
               "overhead_per_trial_s": (wall - sum(inside)) / max(1, len(inside))}
    print(f"{figures['trials']} trials, one at a time: {wall:.1f} s wall, {sum(inside):.1f} s inside the trials, "
          f"overhead {figures['overhead_per_trial_s']:.2f} s per trial")
    return figures
