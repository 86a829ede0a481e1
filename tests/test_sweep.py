"""Sweeps: Ray Tune + Optuna over built-in pairs, ASHA, TensorBoard read back, report, and resume."""
import glob
import json
import time
from pathlib import Path

import pytest
import yaml

from cyclegan.config import ConfigError
from cyclegan.experiment import parse_experiment

from helpers import kill_driver_when

BASE = dict(netG="resnet_6blocks", ngf=4, ndf=4, builtin_size=24, builtin_count=8, load_size=28, crop_size=24,
            n_epochs=2, n_epochs_decay=2, num_threads=0, cpus_per_worker=0.5, seed=3)
SPACE = {"lambda_cycle": {"loguniform": [1, 30]}, "lambda_identity": [0.0, 0.5], "pool_size": [0, 4],
         "netG": ["resnet_6blocks", "resnet_9blocks"]}


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
    ({"spaces": {}}, r"spaces: unknown key .*did you mean 'space'"),
])
def test_invalid_experiments_fail_before_any_trial_naming_the_key(tmp_path, change, message):
    data = experiment(tmp_path)
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        parse_experiment(data)


def test_the_shipped_sweep_experiment_is_valid():
    root = Path(__file__).parents[1] / "experiments"
    for path in root.glob("sweep*.yaml"):
        exp = parse_experiment(yaml.safe_load(path.read_text()), source=str(path))
        assert exp.space and exp.pairs


def read_events(folder):
    """Scalars, images and HParams summaries of every event file in a trial folder."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    found = {"scalars": set(), "images": set(), "hparams": set(), "hparam_values": {}}
    for path in glob.glob(str(folder / "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    found["hparams"].add(value.tag)
                    if value.tag == "_hparams_/session_start_info":
                        from tensorboard.plugins.hparams import plugin_data_pb2
                        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                        found["hparam_values"] = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                                  for k, v in data.session_start_info.hparams.items()}
                elif plugin == "images" or value.HasField("image"):
                    found["images"].add(value.tag)
                elif plugin == "scalars" or value.HasField("simple_value"):
                    found["scalars"].add(value.tag)
    return found


def trial_records(pair_dir):
    out = {}
    for folder in sorted(p for p in pair_dir.iterdir() if (p / "params.json").exists()):
        results = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        out[folder.name] = {"params": json.loads((folder / "params.json").read_text()), "results": results,
                            "folder": folder}
    return out


def test_a_sweep_over_two_pairs_with_asha_tensorboard_and_report(ray_session, tmp_path):
    from cyclegan.distributed.sweep import sweep
    exp = parse_experiment(experiment(tmp_path))
    started = time.perf_counter()
    sweep(exp)
    wall = time.perf_counter() - started
    root = tmp_path / "sweeps" / "sw"
    for pair in ("seasons", "fruit"):
        trials = trial_records(root / pair)
        assert len(trials) == 6
        params = [t["params"] for t in trials.values()]
        for key in SPACE:  # the search explored every key
            assert len({json.dumps(p[key]) for p in params}) > 1, (key, params)
        epochs = {tid: max(r.get("epochs", 0) for r in t["results"]) for tid, t in trials.items()}
        iters = {tid: max(r["total_iters"] for r in t["results"]) for tid, t in trials.items()}
        assert max(epochs.values()) == 4 and max(iters.values()) == 32  # 4 epochs x 8 images
        stopped = [tid for tid in trials if epochs[tid] < 4]
        assert stopped, f"ASHA stopped nothing: {epochs}"
        assert all(iters[tid] < 32 for tid in stopped)
        for tid, t in trials.items():
            events = read_events(t["folder"])
            assert {"loss/G_A", "loss/cycle_A", "lr", "hparams/l1", "hparams/best_l1", "score/l1"} <= events["scalars"]
            assert {"test/AtoB", "test/BtoA"} <= events["images"]
            assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= events["hparams"]
            assert events["hparam_values"]["pair"] == pair
            assert events["hparam_values"]["netG"] == t["params"]["netG"]
            assert t["results"][-1]["l1"] == pytest.approx(t["results"][-1]["best_l1"], abs=1) and \
                t["results"][-1]["best_l1"] <= min(r["l1"] for r in t["results"]) + 1e-12
    train_seconds = sum(r["time_this_iter_s"] for pair in ("seasons", "fruit")
                        for t in trial_records(root / pair).values() for r in t["results"])
    print(f"\nsweep of 12 trials: {wall:.1f} s wall, {train_seconds:.1f} s in trials")

    from cyclegan.cli import main
    assert main(["report", str(root)]) == 0
    page = root / "report" / "index.html"
    text = page.read_text()
    for pair in ("seasons", "fruit"):
        trials = trial_records(root / pair)
        best = min(trials, key=lambda tid: trials[tid]["results"][-1]["l1"])
        assert f"<h2>{pair}</h2>" in text and best in text
        assert json.loads((page.parent / pair / "best" / "trial.json").read_text())["trial"] == best
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
    assert len(images) >= 2 * 2 * 2  # two pairs, two directions, input + at least one trial per test image
    assert all((page.parent / src).exists() for src in images)


def experiment_status(pair_dir):
    files = sorted(pair_dir.glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
    except json.JSONDecodeError:  # being rewritten
        return {}
    return {json.loads(t[0])["trial_id"]: json.loads(t[0])["status"] for t in data["trial_data"]}


def test_trials_as_ray_train_runs_report_to_tune(ray_session, tmp_path):
    """num_workers >= 1: each trial drives a Ray Train run (Train inside Tune, the V2 way)."""
    from cyclegan.distributed.sweep import sweep
    data = experiment(tmp_path, datasets=["fruit"],
                      base=dict(BASE, checkpoints_dir=str(tmp_path / "ck"), num_workers="1", n_epochs=1,
                                n_epochs_decay=1),
                      search={"num_samples": 1, "scheduler": "none", "eval_images": 4, "grid_images": 1})
    results = sweep(parse_experiment(data))["fruit"]
    assert len(results) == 1 and not results.errors
    pair_dir = tmp_path / "sweeps" / "sw" / "fruit"
    for tid, t in trial_records(pair_dir).items():
        assert t["results"][-1]["total_iters"] == 16 and "l1" in t["results"][-1]
        assert glob.glob(str(pair_dir / tid / "train" / "checkpoint_*" / "state.pt"))  # Ray Train's checkpoints
        events = read_events(pair_dir / tid)  # written by the Train worker into the trial's folder
        assert "hparams/l1" in events["scalars"] and events["images"] and events["hparams"]


def test_a_killed_sweep_driver_resumes_without_rerunning_finished_trials(ray_session, tmp_path):
    data = experiment(tmp_path, datasets=["seasons"],
                      base=dict(BASE, checkpoints_dir=str(tmp_path / "ck"), save_latest_freq=4),
                      search={"num_samples": 4, "max_concurrent_trials": 2, "scheduler": "none", "eval_images": 4,
                              "grid_images": 1, "seed": 1})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    address = ray_session.get_runtime_context().gcs_address
    pair_dir = tmp_path / "sweeps" / "sw" / "seasons"
    kill_driver_when(["sweep", str(tmp_path / "exp.yaml"), "--address", address],
                     lambda: list(experiment_status(pair_dir).values()).count("TERMINATED") >= 1
                     and "RUNNING" in experiment_status(pair_dir).values(), 400,
                     "a finished trial and a running one", log_path=tmp_path / "driver.log")
    before = experiment_status(pair_dir)
    finished = [tid for tid, status in before.items() if status == "TERMINATED"]
    lines_before = {tid: (pair_dir / tid / "result.json").read_text().count("\n") for tid in finished}
    time.sleep(3)  # let Ray reap the dead driver's trials
    from cyclegan.cli import main
    assert main(["sweep", "--resume", str(tmp_path / "sweeps" / "sw")]) == 0
    after = experiment_status(pair_dir)
    assert set(before) <= set(after) and len(after) == 4
    assert all(status == "TERMINATED" for status in after.values()), after
    for tid in finished:  # not run again
        assert (pair_dir / tid / "result.json").read_text().count("\n") == lines_before[tid]
    for tid, t in trial_records(pair_dir).items():
        assert max(r["total_iters"] for r in t["results"]) == 32  # 4 epochs x 8 images: all complete
        assert read_events(pair_dir / tid)["images"]
    for tid in (tid for tid, status in before.items() if status == "RUNNING"):
        iters = [r["total_iters"] for r in trial_records(pair_dir)[tid]["results"]]
        if iters.index(max(iters)) > 1:  # it had reported before the kill: resumed, not restarted
            assert iters.count(iters[0]) == 1, iters


def test_a_sweep_with_its_results_in_s3(ray_session, s3, tmp_path):
    """storage_path s3://: Tune's state, trial results, checkpoints and the trials' TensorBoard events go to
    the bucket, and the report reads them back from there."""
    from cyclegan.cli import main
    s3.mkdir("sweep-results")
    data = experiment(tmp_path, datasets=["seasons"], storage_path="s3://sweep-results/sweeps",
                      base=dict(BASE, checkpoints_dir=str(tmp_path / "ck"), n_epochs=1, n_epochs_decay=1),
                      search={"num_samples": 2, "scheduler": "none", "eval_images": 4, "grid_images": 1})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    assert main(["sweep", str(tmp_path / "exp.yaml")]) == 0
    pair = "sweep-results/sweeps/sw/seasons"
    trials = [p for p in s3.ls(pair, refresh=True) if s3.isdir(p) and p.rstrip("/") != pair]
    assert len(trials) == 2
    for trial in trials:
        files = [p.rsplit("/", 1)[-1] for p in s3.ls(trial)]
        assert "result.json" in files and any(f.startswith("events.out.tfevents") for f in files)
        assert s3.glob(f"{trial}/checkpoint_*/state.pt")
    out = tmp_path / "report"
    assert main(["report", "s3://sweep-results/sweeps/sw", "--out", str(out)]) == 0
    assert (out / "seasons" / "best" / "latest_net_G_A.pth").exists()
