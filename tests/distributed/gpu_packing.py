"""Sweep trials sharing a GPU, on a Ray node that declares one GPU (this machine has none: Ray's scheduler
only counts them). Run as a script (never imported) by tests/distributed/test_sweep.py, with its own Ray
instance in this child process and the repository root on PYTHONPATH:

    PYTHONPATH=. python tests/distributed/gpu_packing.py EXPERIMENT_JSON OUT_JSON

Four trials get the sweep's own trial resources (``trial_resources`` with the experiment's
``search.gpus_per_trial``); each waits at a meeting point for the others, so the most trials that met
is the most that ran at once."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

TRIALS = 4
WAIT_S = 90


def main(experiment_path: str, out_path: str) -> None:
    import ray
    from ray import tune

    from cyclegan.core.experiment import PAIR_KEY, pair_config, parse_experiment
    from cyclegan.distributed.sweep import trial_resources

    exp = parse_experiment(json.loads(Path(experiment_path).read_text()))
    configs = {pair.name: pair_config(exp, pair) for pair in exp.pairs}
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Meeting:
        def __init__(self):
            self.arrived, self.everyone = 0, asyncio.Event()

        async def arrive(self) -> int:
            self.arrived += 1
            if self.arrived >= TRIALS:
                self.everyone.set()
            try:
                await asyncio.wait_for(self.everyone.wait(), WAIT_S)
            except asyncio.TimeoutError:
                pass
            return self.arrived

    meeting = Meeting.remote()

    def trial(config):
        met = ray.get(meeting.arrive.remote())
        tune.report({"met": met, "gpus": [str(g) for g in ray.get_gpu_ids()]})

    resources = trial_resources(configs, drivers=False, gpus_per_trial=exp.search.gpus_per_trial)
    bundle = resources({PAIR_KEY: exp.pairs[0].name}).bundles[0]
    results = tune.Tuner(tune.with_resources(trial, resources), param_space={PAIR_KEY: exp.pairs[0].name},
                         tune_config=tune.TuneConfig(num_samples=TRIALS),
                         run_config=tune.RunConfig(name="packing", storage_path=str(Path(out_path).parent / "tune"),
                                                   verbose=0)).fit()
    outcome = {"bundle": bundle, "met": [r.metrics["met"] for r in results],
               "gpus": [r.metrics["gpus"] for r in results]}
    ray.shutdown()
    Path(out_path).write_text(json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
