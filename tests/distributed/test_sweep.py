"""Sweeps: Ray Tune + Optuna over built-in pairs, ASHA, TensorBoard read back, report, and resume."""
import json
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cyclegan.core.config import ConfigError
from cyclegan.core.experiment import parse_experiment

from tests.distributed.tune_functions import meet_the_others, report_session_token
from tests.helpers.events import read_events
from tests.helpers.processes import kill_driver_when, wait_for

BASE = dict(netG="resnet_6blocks", ngf=4, ndf=4, builtin_size=24, builtin_count=8, load_size=28, crop_size=24,
            n_epochs=2, n_epochs_decay=2, num_threads=0, cpus_per_worker=0.5, seed=3)
SPACE = {"lambda_cycle": {"loguniform": [1, 30]}, "lambda_identity": [0.0, 0.5], "pool_size": [0, 4],
         "netG": ["resnet_6blocks", "resnet_9blocks"]}
METRIC = "l1"  # a built-in pair's sweep metric


def experiment(tmp_path, **overrides):
    data = {"name": "sw", "storage_path": str(tmp_path / "sweeps"), "datasets": ["seasons", "fruit"],
            "base": dict(BASE, checkpoints_dir=str(tmp_path / "ck")), "space": SPACE,
            "search": {"num_samples": 6, "max_concurrent_trials": 2, "grace_period": 1, "reduction_factor": 2,
                       "eval_images": 8, "grid_images": 2, "seed": 0}}
    data.update(overrides)
    return data


@pytest.mark.parametrize("change, message", [
    ({"space": {"lamda_A": [1, 2]}}, r"space\.lamda_A: unknown option \(did you mean 'lambda_A'\?\)"),
    ({"space": {"lr": {"loguniform": [0.001, 0.001]}}}, r"space\.lr: empty range"),
    ({"space": {"pool_size": {"randint": [10, 2]}}}, r"space\.pool_size: empty range"),
    ({"space": {"netG": ["resnet_6blocks", "unet_128"]}}, r"space\.netG: choice 'unet_128' is rejected: crop_size"),
    ({"space": {"norm": ["instance", "layer"]}}, r"space\.norm: choice 'layer' is rejected"),
    ({"space": {"pool_size": [0, -1]}}, r"space\.pool_size: choice -1 is rejected: pool_size: -1 is below"),
    ({"space": {"lr": {"loguniform": [0, 0.1]}}}, r"space\.lr: loguniform needs low > 0"),
    ({"space": {"ngf": {"uniform": [8, 16]}}}, r"space\.ngf: an integer option: use randint"),
    ({"space": {"lambda_cycle": [5], "lambda_A": [5]}}, r"space\.lambda_cycle: sets lambda_A and lambda_B"),
    ({"space": {"dataroot": ["x"]}}, r"space\.dataroot: not searchable"),
    ({"space": {}}, r"space: needs at least one option"),
    ({"search": {"metric": "fid2"}}, r"search\.metric: 'fid2' is not one of"),
    ({"search": {"num_sample": 3}}, r"search\.num_sample: unknown \(did you mean 'num_samples'\?\)"),
    ({"datasets": ["seasons", "/data/horse2zebra"], "search": {"metric": "l1"}},
     r"search\.metric: l1 needs ideal translations.*horse2zebra"),
    ({"datasets": ["seasons", {"builtin": "seasons"}]}, r"datasets: two pairs share a name"),
    ({"base": {"ngf": "wide"}}, r"ngf: 'wide' is not a valid int"),
    ({"base": dict(BASE, num_workers="2"), "search": {"num_samples": 4}},
     r"search\.max_concurrent_trials: needed when trials train on Ray workers"),
    ({"spaces": {}}, r"spaces: unknown key .*did you mean 'space'"),
    ({"search": {"points_to_evaluate": [{"lambda_cycle": 10, "lambda_identity": 0.5, "pool_size": 3, "netG": "resnet_6blocks"}]}},
     r"search\.points_to_evaluate\[0\]\.pool_size: 3 is outside"),
    ({"search": {"points_to_evaluate": [{"lambda_cycle": 10}]}},
     r"search\.points_to_evaluate\[0\]: no value for space\.lambda_identity"),
    ({"search": {"points_to_evaluate": [{"lambda_cycle": 10, "lambda_identity": 0.5, "pool_size": 4, "netG": "resnet_6blocks",
                                         "lrr": 0.1}]}}, r"search\.points_to_evaluate\[0\]\.lrr: not a key of space"),
    ({"search": {"perturbation_interval": 2}}, r"search\.perturbation_interval: for algorithm pbt or pb2"),
    ({"search": {"algorithm": "pbt", "hyperparam_mutations": ["lambda_cycle", "netG"]}},
     r"space\.netG: cannot change in a running trial"),
    ({"search": {"algorithm": "pb2"}}, r"space\.lambda_identity: pb2 explores ranges"),
    ({"search": {"algorithm": "pbt", "hyperparam_mutations": ["beta1"]}}, r"search\.hyperparam_mutations: 'beta1' is not"),
    ({"search": {"algorithm": "pbt", "scheduler": "asha"}}, r"search\.scheduler: asha is for algorithm optuna"),
    ({"search": {"algorithm": "pbt", "perturbation_interval": 4}},
     r"search\.perturbation_interval: 4 epochs is not within a trial's 4"),
    ({"search": {"algorithm": "pbt", "quantile_fraction": 0.7}}, r"search\.quantile_fraction: 0\.7 must be at most 0\.5"),
    ({"search": {"algorithm": "pbt", "max_concurrent_trials": 2}}, r"search\.max_concurrent_trials: pbt's population"),
    ({"base": dict(BASE, keep_checkpoints=2), "search": {"algorithm": "pbt"}}, r"base\.keep_checkpoints: 2 is too few"),
])
def test_invalid_experiments_fail_before_any_trial_naming_the_key(tmp_path, change, message):
    data = experiment(tmp_path)
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        parse_experiment(data)


def test_the_shipped_sweep_experiment_is_valid():
    shipped = sorted((Path(__file__).parents[2] / "experiments").glob("sweep*.yaml"))
    assert shipped, "no sweep experiment in experiments/"
    for path in shipped:
        exp = parse_experiment(yaml.safe_load(path.read_text()), source=str(path))
        assert exp.space and exp.pairs


def trial_records(sweep_dir, pair=None):
    """Every trial of a sweep (of one pair), by folder name: its params (pair included), results, folder."""
    out = {}
    for folder in sorted(p for p in sweep_dir.iterdir() if (p / "params.json").exists()):
        params = json.loads((folder / "params.json").read_text())
        if pair is None or params["pair"] == pair:
            results = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
            out[folder.name] = {"params": params, "results": results, "folder": folder}
    return out


def running_profile(trials) -> list[tuple[float, int, str]]:
    """From Tune's results: (time, trials running just after it, pair) at every trial start and end. A trial
    starts when its first result's time_this_iter_s began."""
    events = []
    for t in trials.values():
        # Its end: the first result at its last step (ASHA stops a trial that reaches max_t there, and the
        # run's closing report, a moment later, no longer holds the slot).
        final = max(r["total_iters"] for r in t["results"])
        first, last = t["results"][0], next(r for r in t["results"] if r["total_iters"] == final)
        events += [(first["reported_at"] - first["time_this_iter_s"], 1, t["params"]["pair"]),
                   (last["reported_at"], -1, t["params"]["pair"])]
    profile, running = [], 0
    for when, change, pair in sorted(events):
        running += change
        profile.append((when, running, pair))
    return profile


def sustained_max(profile, at_least_s: float = 0.5) -> int:
    """The most trials that ran together for ``at_least_s`` or longer. A start is estimated from the first
    result (its time_this_iter_s), which can put it a few milliseconds before the end of the trial whose
    slot it took: such a moment is not a third trial running."""
    return max(a[1] for a, b in zip(profile, profile[1:]) if b[0] - a[0] >= at_least_s)


def share_at_limit(profile, limit: int) -> float:
    """The share of the time from the moment ``limit`` trials first ran to the last trial's start (the
    queue empty) during which ``limit`` trials ran."""
    starts = [when for (when, running, _), before in zip(profile, [(0, 0, "")] + profile) if running > before[1]]
    filled = next(when for when, running, _ in profile if running == limit)
    full = sum(min(b[0], starts[-1]) - a[0] for a, b in zip(profile, profile[1:])
               if a[1] == limit and filled <= a[0] < starts[-1])
    return full / max(1e-9, starts[-1] - filled)


def test_three_pairs_searched_at_once_fill_the_limit_with_asha_tensorboard_and_report(ray_session, tmp_path):
    from cyclegan.distributed.sweep import sweep
    exp = parse_experiment(experiment(tmp_path, datasets=["seasons", "fruit", "zebra"], search={
        "num_samples": 3, "max_concurrent_trials": 2, "grace_period": 1, "reduction_factor": 2, "eval_images": 8,
        "grid_images": 2, "seed": 0}))
    started = time.perf_counter()
    sweep(exp)
    wall = time.perf_counter() - started
    root = tmp_path / "sweeps" / "sw"
    everything = trial_records(root)
    assert len(everything) == 9
    # The pairs were searched at once (trials of every pair ran before the first pair's were all done),
    # the sweep's limit held for all of them together (2 at once, never more), and until the last trial
    # started the slots stayed filled: an ended trial was replaced at once, whatever its pair.
    profile = running_profile(everything)
    print("\n" + "\n".join(f"{when - profile[0][0]:6.1f} s  {running} running  ({pair})"
                            for when, running, pair in profile))
    first = {pair: min(when for when, _, p in profile if p == pair) for pair in ("seasons", "fruit", "zebra")}
    done = {pair: max(t["results"][-1]["reported_at"] for t in trial_records(root, pair).values())
            for pair in ("seasons", "fruit", "zebra")}
    assert max(first.values()) < min(done.values()), (first, done)
    assert sustained_max(profile) == 2
    share = share_at_limit(profile, 2)
    print(f"slots filled {share:.0%} of the time from the first full moment to the last start")
    assert share >= 0.75, profile
    stopped = []
    for pair in ("seasons", "fruit", "zebra"):
        trials = trial_records(root, pair)
        assert len(trials) == 3
        epochs = {tid: max(r.get("epochs", 0) for r in t["results"]) for tid, t in trials.items()}
        iters = {tid: max(r["total_iters"] for r in t["results"]) for tid, t in trials.items()}
        assert max(epochs.values()) == 4 and max(iters.values()) == 32  # 4 epochs x 8 images
        stopped += [tid for tid in trials if epochs[tid] < 4 and iters[tid] < 32]
        for tid, t in trials.items():
            assert tid.startswith(f"{pair}_")
            events = read_events(t["folder"])
            assert {"loss/G_A", "loss/cycle_A", "lr", "hparams/l1", "hparams/best_l1", "score/l1"} <= events["scalars"]
            assert {"test/AtoB", "test/BtoA"} <= events["images"]
            assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= events["hparams"]
            assert events["hparam_values"]["pair"] == pair
            assert events["hparam_values"]["netG"] == t["params"]["netG"]
            assert t["results"][-1]["best_l1"] <= min(r["l1"] for r in t["results"]) + 1e-12
    assert stopped, "ASHA stopped nothing"
    for key in SPACE:  # the searchers explored every key
        assert len({json.dumps(t["params"][key]) for t in everything.values()}) > 1, key
    assert not list(Path(tempfile.gettempdir()).glob("cyclegan-trial-*"))  # the trials' scratch is gone
    print(f"\nsweep of 9 trials: {wall:.1f} s wall")

    from cyclegan.cli import main
    assert main(["report", str(root)]) == 0
    page = root / "report" / "index.html"
    text = page.read_text()
    for pair in ("seasons", "fruit", "zebra"):
        trials = trial_records(root, pair)
        best = min(trials, key=lambda tid: trials[tid]["results"][-1]["best_l1"])
        assert f"<h2>{pair}</h2>" in text and best in text
        record = json.loads((page.parent / pair / "best" / "trial.json").read_text())
        # The exported weights are those of the trial's best score, and the page says which epoch.
        assert record["trial"] == best and record["best"] == trials[best]["results"][-1]["best_l1"]
        assert record["checkpoint_score"] == record["best"]
        at = [r for r in trials[best]["results"] if r.get("l1") == record["best"]][0]
        assert record["checkpoint_epochs"] == at["epochs"]
        assert f"{record['best']:.4g} @ {at['epochs']:.2f}" in text
        for name in ("G_A", "G_B", "D_A", "D_B"):
            import torch
            assert torch.load(page.parent / pair / "best" / f"latest_net_{name}.pth", weights_only=True)
    # The exported best runs with `cyclegan test`, its options taken from the exported train_opt.yaml.
    best = page.parent / "seasons"
    assert main(["test", "--config", str(best / "best" / "train_opt.yaml"), "--checkpoints_dir", str(best),
                 "--name", "best", "--results_dir", str(tmp_path / "results"), "--num_test", "2"]) == 0
    assert (tmp_path / "results" / "best" / "test_latest" / "index.html").exists()
    import re
    images = re.findall(r"<img src='([^']+)'>", text)
    assert len(images) >= 3 * 2 * 2  # three pairs, two directions, input + at least one trial per test image
    assert all((page.parent / src).exists() for src in images)


def test_checkpoints_are_kept_by_score_and_the_report_exports_the_best(ray_session, tmp_path):
    """keep_checkpoints 1: the checkpoint with the best score and the latest (to resume from) stay, and
    the report exports the best one's weights with the epoch it was taken at."""
    import torch

    from cyclegan.commands.report import write_report
    from cyclegan.distributed.sweep import sweep
    data = experiment(tmp_path, datasets=["fruit"], base=dict(BASE, checkpoints_dir=str(tmp_path / "ck"),
                                                              keep_checkpoints=1, lr=0.01),
                      space={"lambda_identity": [0.0]},
                      search={"num_samples": 1, "scheduler": "none", "eval_images": 4, "grid_images": 1})
    sweep(parse_experiment(data))
    import os  # Tune's settings were the sweep's alone: a later sweep in this process gets its own limit
    assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ and "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ
    root = tmp_path / "sweeps" / "sw"
    (tid, trial), = trial_records(root).items()
    saved = [r for r in trial["results"] if r.get("checkpoint_dir_name")]
    assert len(saved) == 4  # one per epoch
    best = min(saved, key=lambda r: (r["l1"], -r["total_iters"]))
    kept = {p.parent.name for p in trial["folder"].glob("checkpoint_*/state.pt")}
    assert kept == {best["checkpoint_dir_name"], saved[-1]["checkpoint_dir_name"]}
    page = write_report(str(root))
    record = json.loads((page.parent / "fruit" / "best" / "trial.json").read_text())
    assert record["checkpoint_score"] == best["l1"] == record["best"]
    assert record["checkpoint_epochs"] == best["epochs"]
    state = torch.load(trial["folder"] / best["checkpoint_dir_name"] / "state.pt", weights_only=True)
    exported = torch.load(page.parent / "fruit" / "best" / "latest_net_G_A.pth", weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in state["model"]["nets"]["G_A"].items())


def experiment_status(pair_dir, iters: bool = False):
    """Each trial's status in Tune's saved experiment state (with ``iters``: and the total_iters of its
    last result there), by trial folder (<pair>_<trial id>), as trial_records names them."""
    files = sorted(pair_dir.glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
    except json.JSONDecodeError:  # being rewritten
        return {}
    status = {}
    for trial, runtime in data["trial_data"]:
        t, last = json.loads(trial), json.loads(runtime).get("last_result") or {}
        key = f"{t['config']['pair']}_{t['trial_id']}"
        status[key] = (t["status"], last.get("total_iters", 0)) if iters else t["status"]
    return status


def test_a_killed_sweep_driver_resumes_without_rerunning_finished_trials(ray_session, tmp_path):
    data = experiment(tmp_path, datasets=["seasons"],
                      base=dict(BASE, checkpoints_dir=str(tmp_path / "ck"), save_latest_freq=4),
                      search={"num_samples": 4, "max_concurrent_trials": 2, "scheduler": "none", "eval_images": 4,
                              "grid_images": 1, "seed": 1})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    address = ray_session.get_runtime_context().gcs_address
    pair_dir = tmp_path / "sweeps" / "sw"
    def finished_and_checkpointed(saved) -> bool:
        # A finished trial, and a running one whose checkpointed report (every 4 images) is in Tune's
        # saved state: what a resumed sweep continues from (a report not saved yet is repeated).
        return (any(status == "TERMINATED" for status, _ in saved.values())
                and any(status == "RUNNING" and done >= 4 for status, done in saved.values()))
    kill_driver_when(["sweep", str(tmp_path / "exp.yaml"), "--address", address],
                     lambda: finished_and_checkpointed(experiment_status(pair_dir, iters=True)), 400,
                     "a finished trial and a checkpointed running one", log_path=tmp_path / "driver.log")
    saved = experiment_status(pair_dir, iters=True)
    before = {tid: status for tid, (status, _) in saved.items()}
    finished = [tid for tid, status in before.items() if status == "TERMINATED"]
    lines_before = {tid: (pair_dir / tid / "result.json").read_text().count("\n") for tid in finished}
    wait_for(lambda: not alive_trials(), 60, "Ray to end the dead driver's trials")
    from cyclegan.cli import main
    assert main(["sweep", "--resume", str(tmp_path / "sweeps" / "sw")]) == 0
    after = experiment_status(pair_dir)
    assert set(before) <= set(after) and len(after) == 4
    assert all(status == "TERMINATED" for status in after.values()), after
    for tid in finished:  # not run again
        assert (pair_dir / tid / "result.json").read_text().count("\n") == lines_before[tid]
    # Every trial of the resumed sweep is complete. A trial the killed driver started after Tune last saved
    # its state is unknown to the restore (the restored searcher samples the fourth trial again): its folder
    # stays, and it is not one of the sweep's trials.
    records = trial_records(pair_dir)
    for tid in after:
        assert max(r["total_iters"] for r in records[tid]["results"]) == 32  # 4 epochs x 8 images: all complete
        assert read_events(pair_dir / tid)["images"]
    for tid in (tid for tid, (status, done) in saved.items() if status == "RUNNING" and done >= 4):
        # Resumed from its checkpoint, not restarted: its checkpointed reports are not repeated. (A report
        # after Tune last saved its state is: at least once. A trial checkpointed at its last image, 32,
        # reports its end again, with the score of that checkpoint.)
        results = trial_records(pair_dir)[tid]["results"]
        iters = [r["total_iters"] for r in results if not r.get("done")]
        assert all(iters.count(i) == 1 for i in iters if i <= saved[tid][1]), iters
        assert len({r[METRIC] for r in results if r.get("done")}) == 1
        # TensorBoard shows each of its steps once: what the killed attempt logged past the checkpoint is
        # purged, and the score at the checkpoint's step is not logged again.
        steps = scalar_steps(pair_dir / tid, f"hparams/{METRIC}")
        assert steps == sorted(set(steps)), steps


def scalar_steps(folder, tag) -> list[int]:
    """The steps of a scalar as TensorBoard shows them (restarts' purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def alive_trials() -> list:
    """Live actors of other drivers than this test session: the killed sweep driver's trials."""
    import ray
    from ray.util.state import list_actors
    session = ray.get_runtime_context().get_job_id()
    return [a for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")])
            if a.job_id != session]


def test_a_sweep_with_its_results_in_s3(ray_session, s3, tmp_path):
    """storage_path s3://: Tune's state, trial results, checkpoints and the trials' TensorBoard events go to
    the bucket, and the report reads them back from there."""
    from cyclegan.cli import main
    s3.mkdir("sweep-results")
    data = experiment(tmp_path, datasets=["seasons"], storage_path="s3://sweep-results/sweeps",
                      base=dict(BASE, checkpoints_dir=str(tmp_path / "ck"), n_epochs=1, n_epochs_decay=0),
                      search={"num_samples": 2, "scheduler": "none", "eval_images": 4, "grid_images": 1})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    assert main(["sweep", str(tmp_path / "exp.yaml")]) == 0
    sweep_uri = "sweep-results/sweeps/sw"
    trials = [p for p in s3.ls(sweep_uri, refresh=True) if p.rsplit("/", 1)[-1].startswith("seasons_")]
    assert len(trials) == 2
    for trial in trials:
        files = [p.rsplit("/", 1)[-1] for p in s3.ls(trial)]
        assert "result.json" in files and any(f.startswith("events.out.tfevents") for f in files)
        assert s3.glob(f"{trial}/checkpoint_*/state.pt")
    out = tmp_path / "report"
    assert main(["report", "s3://sweep-results/sweeps/sw", "--out", str(out)]) == 0
    assert (out / "seasons" / "best" / "latest_net_G_A.pth").exists()


def test_a_drivers_aws_credentials_do_not_reach_trial_actors(ray_session, tmp_path, monkeypatch):
    """Tune copies the driver's AWS_* credentials into every trial actor's runtime environment (there,
    Ray's state API shows them, and a token frozen there expires mid-sweep). Ray has no public switch, so
    the sweep takes them off Tune's private list while it runs: this fails loudly if Ray moves that list
    (the sweep's function raises) or stops reading it (the token would arrive)."""
    from ray import tune

    from cyclegan.distributed.sweep import credentials_stay_on_their_node
    monkeypatch.setenv("AWS_SESSION_TOKEN", "driver-only-token")  # set after Ray started: not a node's own

    def token_seen_by_a_trial(name):
        tuner = tune.Tuner(tune.with_resources(report_session_token, {"cpu": 0.1}),
                           run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0))
        return tuner.fit()[0].metrics["token"]
    assert token_seen_by_a_trial("plain") == "driver-only-token"  # what Tune does by itself
    with credentials_stay_on_their_node():
        assert token_seen_by_a_trial("sweep") == ""
    from cyclegan.distributed.ray_internals import tune_propagated_names
    assert "AWS_SESSION_TOKEN" in tune_propagated_names()  # put back afterwards


def test_trials_that_train_in_their_own_process_share_a_gpu(ray_session, tmp_path):
    """search.gpus_per_trial 0.25 on the session's node, which declares one GPU: four trials with the sweep's
    own resources run at once (each waits at a meeting point for the others, so the most that met is the
    most that ran together), all on that GPU. Trials on Ray workers keep a whole GPU per worker (refused
    otherwise, naming the key)."""
    import asyncio

    import ray
    from ray import tune

    from cyclegan.core.experiment import PAIR_KEY, pair_config
    from cyclegan.distributed.sweep import trial_resources
    data = experiment(tmp_path, datasets=["seasons"], base=dict(BASE, use_gpu=True, cpus_per_worker=0.25))
    data["search"] = {**data["search"], "gpus_per_trial": 0.25}
    exp = parse_experiment(data)
    configs = {pair.name: pair_config(exp, pair) for pair in exp.pairs}

    @ray.remote(num_cpus=0)
    class Meeting:
        def __init__(self, expected: int):
            self.expected, self.arrived, self.everyone = expected, 0, asyncio.Event()

        async def arrive(self) -> int:
            self.arrived += 1
            if self.arrived >= self.expected:
                self.everyone.set()
            try:
                await asyncio.wait_for(self.everyone.wait(), 90)
            except asyncio.TimeoutError:
                pass
            return self.arrived

    meeting = Meeting.options(name=f"meeting-{tmp_path.name}").remote(4)
    resources = trial_resources(configs, drivers=False, gpus_per_trial=exp.search.gpus_per_trial)
    assert resources({PAIR_KEY: "seasons"}).bundles[0] == {"CPU": 0.25, "GPU": 0.25}
    results = tune.Tuner(tune.with_resources(meet_the_others, resources),
                         param_space={PAIR_KEY: "seasons", "meeting": f"meeting-{tmp_path.name}"},
                         tune_config=tune.TuneConfig(num_samples=4),
                         run_config=tune.RunConfig(name="packing", storage_path=str(tmp_path), verbose=0)).fit()
    ray.kill(meeting)
    assert sorted(r.metrics["met"] for r in results) == [4, 4, 4, 4]  # every trial met the other three
    gpus = [r.metrics["gpus"] for r in results]
    assert all(g == gpus[0] and len(g) == 1 for g in gpus)  # the one GPU
    for base, share, message in [(dict(BASE, use_gpu=True, num_workers="1"), 0.5, "a whole GPU per worker"),
                                 (BASE, 0.5, "the trials train on CPUs"),
                                 (dict(BASE, use_gpu=True), 2, "must be at most 1")]:
        bad = experiment(tmp_path, datasets=["seasons"], base=base)
        bad["search"] = {**bad["search"], "max_concurrent_trials": 2, "gpus_per_trial": share}
        with pytest.raises(ConfigError, match=rf"search\.gpus_per_trial: .*{message}"):
            parse_experiment(bad)


def test_a_sweep_started_again_with_another_experiment_is_refused_naming_the_differences(tmp_path):
    """The rerun rule for sweeps (the same experiment continues: tests/distributed/test_multinode.py
    submits the same sweep job twice, as a RayJob's retry does): another experiment under the name is
    refused before Ray starts, naming each difference; where the store is may differ."""
    from cyclegan.core.experiment import save_experiment
    from cyclegan.core.storage import Storage
    from cyclegan.distributed.sweep import sweep
    save_experiment(parse_experiment(experiment(tmp_path)), Storage.from_options())
    changed = experiment(tmp_path, space={**SPACE, "pool_size": [0, 8]})
    changed["search"]["num_samples"] = 8
    with pytest.raises(ConfigError) as refused:
        sweep(parse_experiment(changed))
    uri = tmp_path / "sweeps" / "sw"
    assert str(refused.value) == (
        f'name: the sweep at {uri} exists with other options (space.pool_size: ["choice", [0, 4]] in the sweep, '
        '["choice", [0, 8]] now; search.num_samples: 6 in the sweep, 8 now); choose another name, or continue '
        f"it as it was started with 'cyclegan sweep --resume {uri}'")
    assert [p.name for p in uri.iterdir()] == ["experiment.yaml"]  # nothing else written


def test_a_notice_checkpoint_is_reported_without_scoring_and_never_ranked_best(tiny_cfg, tmp_path):
    """On a preemption notice the checkpoint comes first: a trial's score (FID runs Inception over the
    test images) is not computed for it, so the upload has the notice's time. It is reported without
    the metric (ASHA and Optuna take the next score), ranked below every scored checkpoint, and its
    score file says it has no score (the report never exports it as the best)."""
    from cyclegan.core.experiment import OBJECTIVE, SCORE_FILE
    from cyclegan.core.storage import Storage
    from cyclegan.core.trainer import Hooks, Trainer
    from cyclegan.distributed.trial import SweepHooks
    from cyclegan.distributed.worker import Report

    class NoticeAfterSix(Hooks):
        checks_notices = True

        def notice(self, trainer):
            return trainer.progress.total_iters >= 6

    reports = []

    def report_fn(metrics, folder):
        reports.append((metrics, json.loads((Path(folder) / SCORE_FILE).read_text()) if folder else None))
    spec = {"metric": "l1", "feature_extractor": "inception", "eval_images": 2, "grid_images": 1,
            "trial_uri": str(tmp_path / "trial"), "store": Storage.from_options(), "hparams": {"pair": "seasons"}}
    cfg = tiny_cfg(name="notice", save_latest_freq=4, notice_check_freq=2, notice_check_secs=0.0,
                   tensorboard=False)
    Trainer(cfg, progress_bar=False, hooks=[SweepHooks(spec), NoticeAfterSix(), Report(report_fn)]).run()
    saves = [(m, s) for m, s in reports if s is not None]
    notice = [(m, s) for m, s in saves if m["preemption_notice"]]  # from the notice on (the node is going)
    assert notice and notice[0][0]["total_iters"] == 6 and len(saves) > len(notice)
    for metrics, score in notice:
        assert "l1" not in metrics and metrics["score_skipped"] == 1 and metrics[OBJECTIVE] != metrics[OBJECTIVE]  # NaN
        assert score["score"] is None and score["total_iters"] == metrics["total_iters"]
    assert all("l1" in m and s["score"] == m["l1"] for m, s in saves if not m["preemption_notice"])


def test_a_fid_sweep_puts_the_inception_weights_in_its_storage_or_fails_before_any_trial(tmp_path, monkeypatch):
    """GPU nodes may have no internet: the driver puts the FID Inception's weights into the sweep's storage
    once (from its own copy), and trials read them from there. With no copy anywhere, the sweep fails at
    once, naming both places, before any trial trains (not at the first score)."""
    import torch

    from cyclegan.core.errors import UserError
    from cyclegan.core.metrics import INCEPTION_FILE, INCEPTION_SHA256, load_inception_weights
    from cyclegan.core.storage import Storage
    from cyclegan.distributed.sweep import stage_inception_weights, sweep
    from cyclegan.distributed.trial import staged_weights
    exp = parse_experiment(experiment(tmp_path, search={"metric": "fid", "num_samples": 1}))
    uri = f"{tmp_path / 'sweeps'}/_weights/{INCEPTION_FILE}"
    assert exp.inception_weights_uri == uri
    assert parse_experiment(experiment(tmp_path)).inception_weights_uri is None  # l1: no Inception
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1")
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match=rf"Inception-v3 weights at {tmp_path / 'nowhere.pth'}.*; or put "
                                                rf"the file at {uri}, where every trial"):
        sweep(exp)
    assert not (tmp_path / "sweeps" / "sw").exists() or not list((tmp_path / "sweeps" / "sw").glob("*_*"))
    # A machine with the weights (a stand-in state dict here: the real file is 91 MB): staged once, read back.
    weights = {"Conv2d_1a_3x3.conv.weight": torch.randn(32, 3, 3, 3)}
    torch.save(weights, tmp_path / "inception.pth")
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "inception.pth"))
    store = Storage.from_options()
    stage_inception_weights(exp, store)
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "nowhere.pth"))  # a node without a copy
    read = load_inception_weights(stored=(store, staged_weights(exp)))  # pinned to the driver's hash
    assert torch.equal(read["Conv2d_1a_3x3.conv.weight"], weights["Conv2d_1a_3x3.conv.weight"])
    # A driver without a copy can vouch for a staged file only as the published one, which a stand-in is not.
    with pytest.raises(UserError, match=rf"{uri}: its SHA-256 is [0-9a-f]{{64}}, not {INCEPTION_SHA256}"):
        stage_inception_weights(exp, store)
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "inception.pth"))
    stage_inception_weights(exp, store)  # with its copy: already there, the same file, nothing to upload


POPULATION_BASE = dict(BASE, builtin_count=16, n_epochs=2, n_epochs_decay=0, cpus_per_worker=2.0)


def same_state(a, b, where: str = "state") -> list[str]:
    """Where two checkpoint states differ (tensors bit for bit)."""
    import torch
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in (same_state(a.get(k), b.get(k), f"{where}.{k}") if k in a and k in b else [f"{where}.{k}"])]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return ([f"{where} length"] if len(a) != len(b) else
                [d for i, (x, y) in enumerate(zip(a, b)) for d in same_state(x, y, f"{where}[{i}]")])
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) else [where]
    return [] if a == b else [where]


@pytest.mark.slow  # an end-to-end command run
def test_a_crippled_trial_is_cloned_from_a_better_one_at_its_first_perturbation_exactly(ray_session, tmp_path):
    """Population-based training: the trial planted with a learning rate near zero goes on, at its first
    perturbation, from the full state of the best trial, with that trial's rate explored; its scores then follow
    the donor's path. Its restored state is the donor's checkpoint bit for bit apart from the rate; the lineage
    is in TensorBoard and in the report's table."""
    import torch
    from ray.tune import Checkpoint

    from cyclegan.commands.report import table
    from cyclegan.core.config import from_dict
    from cyclegan.core.experiment import trial_values
    from cyclegan.core.trainer import Trainer
    from cyclegan.distributed.sweep import sweep
    from cyclegan.distributed.worker import restore_from
    # One trial at a time (each asks the session's 2 CPUs): the first to reach epoch 1 waits, paused, for the
    # others; the crippled one, third, is compared with both and clones the better one, which saved its state.
    # Two epochs at a constant rate: the perturbation at epoch 1, and one epoch after it to follow the clone
    # (a trial's last report is never perturbed).
    exp = parse_experiment(experiment(tmp_path, datasets=["seasons"],
                                      base=dict(POPULATION_BASE, checkpoints_dir=str(tmp_path / "ck")),
                                      space={"lr": {"loguniform": [1e-8, 3e-3]}, "netG": ["resnet_6blocks"]},
                                      search={"algorithm": "pbt", "num_samples": 3, "perturbation_interval": 1,
                                              "quantile_fraction": 0.5, "eval_images": 8, "grid_images": 1, "seed": 0,
                                              "points_to_evaluate": [{"lr": lr, "netG": "resnet_6blocks"}
                                                                     for lr in (5e-4, 2e-3, 1e-8)]}))
    sweep(exp)
    root = tmp_path / "sweeps" / "sw"
    trials = trial_records(root)
    by_lr = {t["results"][0]["config"]["lr"]: name for name, t in trials.items()}
    assert sorted(by_lr) == [1e-8, 5e-4, 2e-3]
    crippled, donor, other = by_lr[1e-8], by_lr[2e-3], by_lr[5e-4]

    def score(name, epochs):
        return next(r[METRIC] for r in trials[name]["results"] if r.get("epochs") == epochs and METRIC in r)
    # The plant: after one epoch the near-zero rate has not moved from the start; the 2e-3 trial is the best.
    assert score(donor, 1.0) < score(other, 1.0) < score(crippled, 1.0)

    def checkpoints(name):
        return {json.loads((c / "sweep.json").read_text())["total_iters"]: c
                for c in trials[name]["folder"].glob("checkpoint_*") if (c / "sweep.json").exists()}
    exploits = sorted((json.loads(f.read_text()) for f in (trials[crippled]["folder"] / "exploits").glob("*.json")),
                      key=lambda e: e["total_iters"])
    first = exploits[0]
    assert (first["trial"], first["from"], first["epochs"], first["total_iters"]) == (crippled, donor, 1.0, 16)
    assert set(first["changed"]) == {"lr"} and first["changed"]["lr"][0] == 2e-3
    new_lr = first["after"]["lr"]
    assert 1e-8 <= new_lr <= 3e-3 and new_lr != 2e-3 and first["after"]["netG"] == "resnet_6blocks"
    # The latest checkpoint carries the history of its weights: the last exploit, by the clone.
    latest = json.loads((checkpoints(crippled)[max(checkpoints(crippled))] / "sweep.json").read_text())
    assert latest["lineage"][-1] == exploits[-1]
    # Its next run started at the donor's image 16 with the new rate, and from then on its scores are on the
    # donor's path, not on its own (the near-zero rate's, which stays where it started).
    resumed = next(r for r in trials[crippled]["results"] if r.get("epochs") == 2.0)
    assert resumed["resumed_from_iters"] == 16 and resumed["config"]["lr"] == new_lr
    own = score(crippled, 1.0)
    now, theirs = score(crippled, 2.0), score(donor, 2.0)
    assert abs(now - theirs) < abs(now - own) and now < own - 0.05, (own, theirs, now)

    # Exact: the donor's checkpoint at epoch 1 restored with the clone's hyperparameters, as its trial did.
    donor_checkpoint = checkpoints(donor)[16]
    pair = exp.pairs[0]
    cfg = from_dict({**trial_values(exp, pair, first["after"]), "name": "clone",
                     "checkpoints_dir": str(tmp_path / "clone"), "storage_options": None})
    trainer = Trainer(cfg, progress_bar=False)
    restore_from(trainer, Checkpoint.from_directory(str(donor_checkpoint)))
    saved = torch.load(donor_checkpoint / "state.pt", weights_only=True)
    restored = trainer.state()
    assert same_state(restored["model"], saved["model"], "model") == []  # networks, optimizers, pools
    assert same_state(restored["progress"], saved["progress"]) == [] and restored["total_iters"] == 16
    assert same_state(restored["rng"], saved["rng"], "rng") == []
    assert [k for k in restored["config"] if restored["config"][k] != saved["config"].get(k)
            and k not in ("name", "checkpoints_dir", "dataroot")] == ["lr"]  # where this process put things
    # The new rate is the one difference, in the options; the loop's first step sets the optimizers from it.
    trainer.model.set_epoch_lr(trainer.progress.epoch)
    assert trainer.model.optimizer_G.param_groups[0]["lr"] == new_lr
    trainer.lock.release()

    # TensorBoard: the rate as a curve (near zero, then the explored one); the report's table: the lineage.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(trials[crippled]["folder"]))
    events.Reload()
    curve = {e.step: e.value for e in events.Scalars("schedule/lr")}
    assert curve[16] == pytest.approx(1e-8) and curve[32] == pytest.approx(resumed["config"]["lr"])
    assert f"at epoch 1 went on from {donor}: lr 0.002 → " in table(str(root))


@pytest.mark.slow  # an end-to-end command run
def test_a_train_inside_tune_trial_is_cloned_into_a_new_run_from_the_donors_train_checkpoint(ray_session, tmp_path):
    """The same plant with every trial a Ray Train run (Train inside Tune), two trials perturbed together
    (synch): the crippled trial's next run is a new Train run of its own that starts from the donor's Train
    checkpoint, and its scores follow the donor's."""
    from cyclegan.commands.report import table
    from cyclegan.distributed.sweep import sweep
    exp = parse_experiment(experiment(tmp_path, datasets=["seasons"],
                                      base=dict(POPULATION_BASE, checkpoints_dir=str(tmp_path / "ck"), num_workers="1",
                                                cpus_per_worker=0.5, n_epochs=1, n_epochs_decay=1, builtin_count=8),
                                      space={"lr": {"loguniform": [1e-8, 3e-3]}},
                                      search={"algorithm": "pbt", "num_samples": 2, "perturbation_interval": 1,
                                              "quantile_fraction": 0.5, "synch": True, "eval_images": 4,
                                              "grid_images": 1, "seed": 0,
                                              "points_to_evaluate": [{"lr": 2e-3}, {"lr": 1e-8}]}))
    sweep(exp)
    root = tmp_path / "sweeps" / "sw"
    trials = trial_records(root)
    by_lr = {t["results"][0]["config"]["lr"]: name for name, t in trials.items()}
    crippled, donor = by_lr[1e-8], by_lr[2e-3]

    def score(name, epochs):
        return next(r[METRIC] for r in trials[name]["results"] if r.get("epochs") == epochs and METRIC in r)
    assert score(donor, 1.0) < score(crippled, 1.0)
    exploits = [json.loads(f.read_text()) for f in (trials[crippled]["folder"] / "exploits").glob("*.json")]
    assert [(e["from"], e["epochs"], e["total_iters"]) for e in exploits] == [(donor, 1.0, 8)]
    # A new Train run of the crippled trial's own, begun from the donor's checkpoint at image 8.
    runs = sorted(p.name for p in trials[crippled]["folder"].glob("train-*") if p.is_dir())
    assert len(runs) == 1, runs
    states = sorted((trials[crippled]["folder"] / runs[0]).glob("checkpoint_*/sweep.json"))
    assert states and json.loads(states[0].read_text())["lineage"][-1]["from"] == donor
    resumed = next(r for r in trials[crippled]["results"] if r.get("epochs") == 2.0 and METRIC in r)
    assert resumed["resumed_from_iters"] == 8 and resumed["config"]["lr"] == exploits[0]["after"]["lr"]
    now, theirs, own = score(crippled, 2.0), score(donor, 2.0), score(crippled, 1.0)
    assert abs(now - theirs) < abs(now - own) and now < own - 0.05, (own, theirs, now)
    assert f"at epoch 1 went on from {donor}: lr 0.002 → " in table(str(root))
