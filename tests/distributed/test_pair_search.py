"""The per-pair multiplexer of a sweep (distributed/pair_search.py): each pair's searcher and scheduler see
only their pair's trials, and each pair's scheduler survives --resume."""
import pytest

from cyclegan.core.experiment import PAIR_KEY, parse_experiment
from cyclegan.distributed.ray_internals import SCHEDULER_CONTROLLER_NAMES, population_trial_states

from tests.distributed.test_sweep import METRIC, experiment
from tests.distributed.tune_functions import epochs_at_score


class Searcher:
    """One pair's searcher: numbered suggestions, and what it was told."""
    metric = METRIC

    def __init__(self, name: str):
        self.name, self.count, self.told = name, 0, []

    def suggest(self, trial_id):
        self.count += 1
        return {"x": f"{self.name}{self.count}"}

    def on_trial_result(self, trial_id, result):
        self.told.append(("result", trial_id))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append(("complete", trial_id))


def test_suggestions_take_the_pairs_in_turn_and_results_reach_only_their_pairs_searcher(tmp_path):
    from cyclegan.distributed.pair_search import PairSearch
    searchers = {"seasons": Searcher("s"), "fruit": Searcher("f")}
    search = PairSearch(searchers, samples_per_pair=2)
    configs = [search.suggest(f"t{i}") for i in range(5)]
    assert configs[:4] == [{"x": "s1", PAIR_KEY: "seasons"}, {"x": "f1", PAIR_KEY: "fruit"},
                           {"x": "s2", PAIR_KEY: "seasons"}, {"x": "f2", PAIR_KEY: "fruit"}]
    assert configs[4] == search.FINISHED  # every pair has its samples
    search.on_trial_result("t1", {METRIC: 0.5})
    search.on_trial_result("t0", {"epochs": 1})  # a notice's report, without the score: not passed on
    search.on_trial_complete("t2", {METRIC: 0.4})
    assert searchers["fruit"].told == [("result", "t1")]
    assert searchers["seasons"].told == [("complete", "t2")]
    search.save(str(tmp_path / "search.pkl"))  # with Tune's experiment state
    again = PairSearch({"seasons": Searcher("s"), "fruit": Searcher("f")}, samples_per_pair=2)
    again.restore(str(tmp_path / "search.pkl"))
    assert again.suggested == {"seasons": 2, "fruit": 2} and again.pair_of["t3"] == "fruit"


def test_a_pairs_view_of_the_controller_offers_what_tunes_schedulers_use_and_only_its_trials():
    from cyclegan.distributed.pair_search import PairTrials

    class Trial:
        def __init__(self, pair):
            self.config = {PAIR_KEY: pair}

    class Controller:
        search_alg = "the search"

        def __init__(self):
            self.trials, self.calls = [Trial("seasons"), Trial("fruit")], []

        def get_trials(self):
            return self.trials

        def get_live_trials(self):
            return self.trials[1:]

        def pause_trial(self, trial, should_checkpoint=True):
            self.calls.append(("pause", trial, should_checkpoint))

        def _schedule_trial_save(self, trial, result=None):
            self.calls.append(("save", trial, result))
            return "saving"
    controller = Controller()
    view = PairTrials(controller, "fruit")
    assert all(hasattr(view, name) for name in SCHEDULER_CONTROLLER_NAMES)
    assert view.get_trials() == view.get_live_trials() == controller.trials[1:]
    assert view.search_alg == "the search"
    view.pause_trial(controller.trials[1], should_checkpoint=False)
    assert view._schedule_trial_save(controller.trials[1], result={"epochs": 1}) == "saving"
    assert controller.calls == [("pause", controller.trials[1], False), ("save", controller.trials[1], {"epochs": 1})]
    with pytest.raises(AttributeError):
        view.stop_trial  # noqa: B018 (what no scheduler of a sweep uses is not passed through)


def test_a_populations_explored_values_stay_in_the_space():
    from cyclegan.distributed.pair_search import InSpace
    keep = InSpace({"lr": ("loguniform", [1e-5, 1e-3]), "pool_size": ("randint", [0, 8]), "netG": ("choice", ["a"])})
    assert keep({"lr": 2e-3, "pool_size": 3.6, "netG": "b"}) == {"lr": 1e-3, "pool_size": 4, "netG": "b"}
    assert keep({"lr": 1e-6, "pool_size": -2}) == {"lr": 1e-5, "pool_size": 0}


def test_a_resumed_sweep_goes_on_halving_with_the_rungs_it_had(ray_session, tmp_path):
    """Tune saves no scheduler state: after --resume each pair's ASHA had empty rungs, so a weak trial was
    compared with nothing and ran to the end. The sweep's callback saves them with Tune's state. Two
    trials run (scores 1 and 2: the second is halved at the first rung), the sweep is interrupted, and
    the resumed one's last trial (score 3, the worst) is stopped at the first rung too; with empty rungs
    it would be the only one there and run all 4 epochs."""
    import signal

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from cyclegan.distributed.pair_search import PairScheduler, SchedulerState

    class InterruptAfterTwo(tune.Callback):
        def __init__(self):
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            if self.done == 2:  # Tune's own interrupt: it saves the experiment's state and returns
                signal.raise_signal(signal.SIGINT)

    def tuner(scheduler, callbacks):
        return tune.Tuner(
            tune.with_resources(epochs_at_score, {"cpu": 0.1}),
            param_space={"x": tune.grid_search([1, 2, 3]), PAIR_KEY: "p"},
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
            run_config=tune.RunConfig(name="halving", storage_path=str(tmp_path), verbose=0,
                                      callbacks=callbacks))
    scheduler = PairScheduler({"p": ASHAScheduler(time_attr="epochs", metric="score", mode="min", max_t=4,
                                                  grace_period=1, reduction_factor=2)})
    first = tuner(scheduler, [InterruptAfterTwo(), SchedulerState(scheduler)]).fit()
    ran = {r.config["x"]: r.metrics["epochs"] for r in first if r.metrics}
    assert ran == {1: 4, 2: 1}, ran  # the second halved at the first rung; the third never ran
    restored = tune.Tuner.restore(str(tmp_path / "halving"), trainable=tune.with_resources(epochs_at_score,
                                                                                            {"cpu": 0.1}),
                                  resume_unfinished=True).fit()
    last = {r.config["x"]: r.metrics["epochs"] for r in restored}
    assert last == {1: 4, 2: 1, 3: 1}, last  # halved at the first rung against the trials before the resume


def test_a_resumed_population_goes_on_with_each_trials_perturbation_clock(tmp_path):
    """--resume: Tune restores trials and searchers but not the scheduler; each pair's population travels in
    the sweep's callback state (as ASHA's rungs do), and a trial Tune adds back gets its clock and score."""
    import pickle

    from ray.tune.experiment import Trial

    from cyclegan.distributed.pair_search import PairScheduler, SchedulerState
    from cyclegan.distributed.sweep import population
    exp = parse_experiment(experiment(tmp_path, datasets=["seasons"], space={"lr": {"loguniform": [1e-5, 1e-3]}},
                                      search={"algorithm": "pbt", "perturbation_interval": 1}))

    class Controller:  # what a scheduler asks of Tune's controller when a trial is added
        search_alg = None

        def __init__(self, trials):
            self.trials = trials

        def get_trials(self):
            return self.trials

    def scheduler():
        return PairScheduler({"seasons": population(exp, METRIC)}, exp)
    before = scheduler()
    trials = [Trial("run_trial", config={"pair": "seasons", "lr": 1e-4}, trial_id=f"t{i}", stub=True) for i in range(2)]
    for trial in trials:
        before.on_trial_add(Controller(trials), trial)
    state = population_trial_states(before.by_pair["seasons"])[trials[1]]
    state.last_perturbation_time, state.last_train_time, state.last_score = 2.0, 2.0, -0.25
    saved = pickle.loads(pickle.dumps(SchedulerState(before).get_state()))  # as Tune stores it

    after = scheduler()
    SchedulerState(after).set_state(saved)
    again = [Trial("run_trial", config={"pair": "seasons", "lr": 1e-4}, trial_id=f"t{i}", stub=True) for i in range(2)]
    for trial in again:
        after.on_trial_add(Controller(again), trial)
    restored = population_trial_states(after.by_pair["seasons"])[again[1]]
    assert (restored.last_perturbation_time, restored.last_train_time, restored.last_score) == (2.0, 2.0, -0.25)
    assert population_trial_states(after.by_pair["seasons"])[again[0]].last_perturbation_time == 0


def test_each_pairs_population_holds_and_sees_only_its_own_trials(tmp_path):
    """A trial is compared with, and can clone, only trials of its own pair: each pair's population holds its
    pair's trials, and what it asks of Tune's controller lists no other pair's."""
    from ray.tune.experiment import Trial

    from cyclegan.distributed.pair_search import PairScheduler, PairTrials
    from cyclegan.distributed.sweep import population
    exp = parse_experiment(experiment(tmp_path, space={"lr": {"loguniform": [1e-5, 1e-3]}},
                                      search={"algorithm": "pbt", "perturbation_interval": 1}))
    trials = [Trial("run_trial", config={"pair": pair, "lr": 1e-4}, trial_id=f"{pair}{i}", stub=True)
              for i in range(2) for pair in ("seasons", "fruit")]

    class Controller:
        search_alg = None

        def get_trials(self):
            return trials

        def get_live_trials(self):
            return trials
    scheduler = PairScheduler({pair.name: population(exp, METRIC) for pair in exp.pairs}, exp)
    for trial in trials:
        scheduler.on_trial_add(Controller(), trial)
    for pair in ("seasons", "fruit"):
        held = {t.config["pair"] for t in population_trial_states(scheduler.by_pair[pair])}
        view = PairTrials(Controller(), pair)
        seen = {t.config["pair"] for t in view.get_trials() + view.get_live_trials()}
        assert held == seen == {pair}
