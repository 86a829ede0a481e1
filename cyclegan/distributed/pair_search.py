"""Many pairs in one Tune run: each pair its own searcher and scheduler behind Tune's single ones.

Scores of different pairs are not comparable, so a sweep gives each pair its own Optuna searcher
(``PairSearch``) and its own ASHA brackets or population (``PairScheduler``, which shows each pair's
scheduler only its pair's trials through ``PairTrials``); a trial's config names its pair (``PAIR_KEY``).
Tune saves the searchers with its experiment state but not the scheduler: ``SchedulerState`` carries each
pair's scheduler across --resume. ``InSpace`` keeps a population's explored values in the space.

The sweep's driver, which builds these from the experiment, is ``sweep.py``.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from typing import Optional

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import Searcher

from ..core.config import from_dict
from ..core.experiment import PAIR_KEY, Experiment, trial_values
from .ray_internals import population_trial_states, schedule_trial_save

# A population's per-trial state kept across --resume (fields of Tune's PBT trial state), and PB2's observations.
POPULATION_CLOCK = ("last_perturbation_time", "last_train_time", "last_score")
PB2_STATE = ("data", "last_exploration_time")


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


class PairTrials:
    """What one pair's scheduler sees of Tune's controller: the trials of its pair only (population-based
    training draws its population, and the trials to pause for, from ``get_trials``), and the controller's
    own actions on a trial. It offers what Tune's schedulers use of a controller
    (``ray_internals.SCHEDULER_CONTROLLER_NAMES``, checked against Ray's schedulers) and nothing else: a
    scheduler of a newer Ray that asks for more fails naming it, rather than seeing every pair's trials."""

    def __init__(self, controller, pair: str):
        self._controller, self._pair = controller, pair

    def get_trials(self) -> list:
        return [t for t in self._controller.get_trials() if t.config.get(PAIR_KEY) == self._pair]

    def get_live_trials(self) -> list:
        return [t for t in self._controller.get_live_trials() if t.config.get(PAIR_KEY) == self._pair]

    @property
    def search_alg(self):
        return self._controller.search_alg

    def pause_trial(self, trial, should_checkpoint: bool = True) -> None:
        self._controller.pause_trial(trial, should_checkpoint=should_checkpoint)

    def _schedule_trial_save(self, trial, result: Optional[dict] = None):  # the name PBT calls
        return schedule_trial_save(self._controller, trial, result=result)


class PairScheduler(FIFOScheduler):
    """One scheduler per pair (ASHA, or a population-based trainer, compares a trial only with trials of its
    own pair, and a trial never copies another pair's trial); each sees Tune's controller through its pair's
    ``PairTrials``. With ASHA, trials start in the order Tune queues them, whatever their pair."""

    def __init__(self, schedulers: dict, exp: Optional[Experiment] = None):
        super().__init__()
        self.by_pair, self.exp = schedulers, exp
        self.resumed: dict[str, dict] = {}  # per pair, per trial id: a population's state saved with the sweep
        self.ends: dict[str, float] = {}  # per trial id: its epochs (a population's)

    def _of(self, trial):
        return self.by_pair[trial.config[PAIR_KEY]]

    def _view(self, controller, trial):
        return PairTrials(controller, trial.config[PAIR_KEY])

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        scheduler = self._of(trial)
        scheduler.on_trial_add(self._view(tune_controller, trial), trial)
        saved = self.resumed.get(trial.config[PAIR_KEY], {}).get(trial.trial_id)
        if saved and isinstance(scheduler, PopulationBasedTraining):  # where it was in its perturbations
            for name in POPULATION_CLOCK:
                if name in saved:
                    setattr(population_trial_states(scheduler)[trial], name, saved[name])

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(self._view(tune_controller, trial), trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        scheduler = self._of(trial)
        if isinstance(scheduler, PopulationBasedTraining) and result.get("epochs", 0) >= self._end(trial):
            # A trial's last report: nothing is left to train with explored values, and a clone now would only
            # replace its result with the donor's.
            return TrialScheduler.CONTINUE
        return scheduler.on_trial_result(self._view(tune_controller, trial), trial, result)

    def _end(self, trial) -> float:
        if self.exp is None:
            return float("inf")
        if trial.trial_id not in self.ends:
            pair = next(p for p in self.exp.pairs if p.name == trial.config[PAIR_KEY])
            sampled = {k: v for k, v in trial.config.items() if k != PAIR_KEY}
            self.ends[trial.trial_id] = from_dict(trial_values(self.exp, pair, sampled), source="experiment").total_epochs
        return self.ends[trial.trial_id]

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(self._view(tune_controller, trial), trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(self._view(tune_controller, trial), trial)

    def choose_trial_to_run(self, tune_controller):
        if not any(isinstance(s, PopulationBasedTraining) for s in self.by_pair.values()):
            return super().choose_trial_to_run(tune_controller)
        # Each population picks its own next trial (the one furthest behind); of those, Tune's queue order.
        order = {t: i for i, t in enumerate(tune_controller.get_trials())}
        chosen = [s.choose_trial_to_run(PairTrials(tune_controller, pair)) for pair, s in self.by_pair.items()]
        chosen = [t for t in chosen if t is not None]
        return min(chosen, key=lambda t: order.get(t, 0), default=None)

    def state(self) -> dict:
        """Each pair's scheduler, for a resumed sweep: ASHA's rungs (its own save), a population's per-trial
        perturbation clock and last score (and PB2's observations), by trial id."""
        saved = {}
        with tempfile.TemporaryDirectory(prefix="cyclegan-scheduler-") as folder:
            for index, (pair, scheduler) in enumerate(self.by_pair.items()):
                if isinstance(scheduler, PopulationBasedTraining):
                    saved[pair] = {"trials": {trial.trial_id: {name: getattr(state, name) for name in POPULATION_CLOCK}
                                              for trial, state in population_trial_states(scheduler).items()},
                                   **{name: getattr(scheduler, name) for name in PB2_STATE if hasattr(scheduler, name)}}
                    continue
                path = os.path.join(folder, str(index))
                scheduler.save(path)
                with open(path, "rb") as f:
                    saved[pair] = f.read()
        return saved

    def set_state(self, saved: dict) -> None:
        with tempfile.TemporaryDirectory(prefix="cyclegan-scheduler-") as folder:
            for index, (pair, data) in enumerate(saved.items()):
                scheduler = self.by_pair.get(pair)
                if scheduler is None:
                    continue
                if isinstance(data, dict):  # a population: applied to each trial as Tune adds it back
                    self.resumed[pair] = data.get("trials", {})
                    for name in PB2_STATE:
                        if name in data and hasattr(scheduler, name):
                            setattr(scheduler, name, data[name])
                    continue
                path = os.path.join(folder, str(index))
                with open(path, "wb") as f:
                    f.write(data)
                scheduler.restore(path)

    def debug_string(self) -> str:
        return "; ".join(f"{pair}: {s.debug_string()}" for pair, s in self.by_pair.items())


class InSpace:
    """After a population's explore step: ranges stay within the space's bounds (a rate multiplied by 1.2 at
    every perturbation would leave them), integers stay integers."""

    def __init__(self, space: dict[str, tuple[str, list]]):
        self.space = space

    def __call__(self, config: dict) -> dict:
        for key, (kind, args) in self.space.items():
            if key in config and kind != "choice":
                value = min(max(config[key], args[0]), args[1])
                config[key] = int(round(value)) if kind == "randint" else float(value)
        return config


class SchedulerState(Callback):
    """Tune saves its searchers with the experiment's state, but not its scheduler (its controller leaves
    the scheduler out of what it saves): on --resume every pair's ASHA forgot its rungs and started
    halving over, and a population forgot when each trial was last perturbed. A callback's state is
    saved and restored by Tune with the experiment's (``Callback.get_state``/``set_state``), so each
    pair's scheduler travels in it (``PairScheduler.state``)."""

    def __init__(self, scheduler: PairScheduler):
        self.scheduler = scheduler

    def get_state(self) -> Optional[dict]:
        saved = self.scheduler.state()
        return {"schedulers": saved} if saved else None

    def set_state(self, state: dict) -> None:
        self.scheduler.set_state(state.get("schedulers", {}))
