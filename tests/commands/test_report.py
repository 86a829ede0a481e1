"""`cyclegan report` reads a sweep folder, which may come from anywhere: its names are data (issue 22: 2)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from cyclegan.cli import main
from cyclegan.core.experiment import EXPERIMENT_FILE, load_experiment, save_experiment
from cyclegan.core.storage import Storage

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("hostile", ["../../../escaped_pair", "x'><img src=x onerror=alert(1)>"])
def test_a_stored_pair_name_that_is_no_folder_name_is_refused_and_nothing_is_written(tmp_path, capsys, hostile):
    """A pair named ../../../escaped_pair made the report write weights, train_opt.yaml and trial.json outside
    report/; one named x'><img ...> went unescaped into the page's href and src."""
    exp = load_experiment(ROOT / "experiments" / "sweep_tiny.yaml")
    sweep = tmp_path / "sweeps" / "deep" / "sw"
    exp = type(exp)(**{**exp.__dict__, "storage_path": str(sweep.parent), "name": "sw"})
    save_experiment(exp, Storage.from_options())
    stored = yaml.safe_load((sweep / EXPERIMENT_FILE).read_text())
    stored["pairs"][0]["name"] = hostile
    (sweep / EXPERIMENT_FILE).write_text(yaml.safe_dump(stored))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["report", str(sweep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {sweep}/{EXPERIMENT_FILE}: pairs[0].name ") and "is not a folder name" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, inside or out


UNREACHABLE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
               "AWS_DEFAULT_REGION": "us-east-1"}  # port 1 on loopback: nothing listens, refused at once


@pytest.mark.slow  # an end-to-end command run
def test_an_unreachable_store_is_one_error_line_not_a_traceback(tmp_path):
    """report s3://... and translate --output s3://... against an unreachable endpoint printed a raw pyarrow
    OSError traceback (issue 22: 11)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, **UNREACHABLE}
    report = subprocess.run([sys.executable, "-m", "cyclegan.cli", "report", "s3://b/sweeps/sw", "--out",
                             str(tmp_path / "rep")], capture_output=True, text=True, timeout=120, env=env)
    assert report.returncode == 2 and "Traceback" not in report.stderr
    assert report.stderr.strip().splitlines()[-1].startswith(
        "error: s3://b/sweeps/sw/experiment.yaml: cannot read (") and "127.0.0.1:1" in report.stderr


# ---------------------------------------------------------------- what the page shows, from Tune's layout
def _trial(sweep: Path, exp, pair: str, trial_id: str, params: dict, scores: list[float], seed: int,
           lineage=(), exploits=()) -> dict:
    """A trial folder as Tune and the trial's hooks leave it: params.json, result.json (one report an epoch),
    a checkpoint per epoch with its state.pt and score record, and a population's exploits/; the networks'
    weights of each checkpoint drawn from ``seed``."""
    import json

    import torch

    from cyclegan.core import checkpoint as ckpt
    from cyclegan.core.config import from_dict
    from cyclegan.core.experiment import EXPLOITS, PAIR_KEY, SCORE_FILE, trial_values
    from cyclegan.core.model import CycleGAN
    folder = sweep / trial_id
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({PAIR_KEY: pair, **params}))
    results, nets = [], {}
    cfg = from_dict({**trial_values(exp, next(p for p in exp.pairs if p.name == pair), params), "device": "cpu"})
    for epoch, score in enumerate(scores, 1):
        results.append({"l1": score, "epochs": float(epoch), "total_iters": 8 * epoch})
        model = CycleGAN(dataclasses.replace(cfg, seed=seed + epoch), device=torch.device("cpu"))
        nets[epoch] = {name: net.state_dict() for name, net in model.networks().items()}
        checkpoint = folder / f"checkpoint_{epoch - 1:06d}"
        checkpoint.mkdir()
        torch.save(ckpt.state_payload({"config": cfg.to_dict(), "model": {"nets": nets[epoch]}}),
                   checkpoint / "state.pt")
        (checkpoint / SCORE_FILE).write_text(json.dumps(
            {"score": score, "epochs": float(epoch), "total_iters": 8 * epoch, "lineage": list(lineage),
             "params": {PAIR_KEY: pair, **params}}))
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results) + '{"l1": 0.0, "epo')
    if exploits:
        (folder / EXPLOITS).mkdir()
        for i, event in enumerate(exploits):
            (folder / EXPLOITS / f"{i}.json").write_text(json.dumps(event))
    return nets


def test_the_page_shows_each_pairs_trials_ranked_its_best_exported_and_their_translations(tmp_path):
    """The report of a sweep folder (Tune's layout, written here without Ray): per pair, the trials ranked by
    their best score, the best trial's weights (those of its best checkpoint) exported in the reference format
    and linked, the top trials' translations of the same test images side by side, and a population's lineage."""
    import html
    import json
    import re

    import numpy as np
    import torch
    from PIL import Image

    from cyclegan.commands.report import table, write_report
    from cyclegan.core.config import from_dict
    from cyclegan.core.data import resolve_dataroot
    from cyclegan.core.evaluate import test_images, translate_images
    from cyclegan.core.model import CycleGAN
    exp = load_experiment(ROOT / "experiments" / "sweep_tiny.yaml")
    exp = type(exp)(**{**exp.__dict__, "storage_path": str(tmp_path / "sweeps"), "name": "sw"})
    exp.base.update(builtin_count=2)
    save_experiment(exp, Storage.from_options())
    sweep = tmp_path / "sweeps" / "sw"
    params = {"lambda_cycle": 10.0, "lambda_identity": 0.0, "pool_size": 0, "netG": "resnet_6blocks"}
    change = {"trial": "seasons_c", "from": "seasons_b", "epochs": 1.0, "total_iters": 8,
              "before": dict(params, lambda_cycle=3.0), "after": params, "changed": {"lambda_cycle": [3.0, 10.0]}}
    # seasons: b is best at its first epoch (0.1), then a (its best 0.2, final), then c (cloned from b).
    nets_b = _trial(sweep, exp, "seasons", "seasons_b", params, [0.1, 0.3], seed=10)
    _trial(sweep, exp, "seasons", "seasons_a", dict(params, pool_size=4), [0.4, 0.2], seed=20)
    _trial(sweep, exp, "seasons", "seasons_c", params, [0.5, 0.35], seed=30, lineage=[change], exploits=[change])
    _trial(sweep, exp, "fruit", "fruit_a", params, [0.25], seed=40)
    (sweep / "fruit_never").mkdir()  # a trial that never reported: left out
    (sweep / "fruit_never" / "params.json").write_text('{"pair": "fruit"}')

    page = write_report(str(sweep), top=2, images=2)
    assert page == sweep / "report" / "index.html"
    text = page.read_text()
    assert "<h1>Sweep sw</h1>" in text and "<h2>seasons</h2>" in text and "<h2>fruit</h2>" in text
    seasons = text[text.index("<h2>seasons</h2>"):text.index("<h2>fruit</h2>")]
    assert "metric: l1 (lower is better), 3 trials" in seasons
    ranks = re.findall(r"<tr><td>(\d)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>[^<]+</td><td>([^<]+)</td>",
                       seasons)
    assert ranks == [("1", "seasons_b", "0.3", "0.1", "0.1 @ 1.00"), ("2", "seasons_a", "0.2", "0.2", "0.2 @ 2.00"),
                     ("3", "seasons_c", "0.35", "0.35", "0.35 @ 2.00")]
    assert "<h3>Lineage</h3>" in seasons and "<td>seasons_c</td><td>1</td><td>seasons_b</td>" in seasons
    assert "<td>lambda_cycle 3 → 10</td>" in seasons
    assert "schedule of the best weights (seasons_b):" in seasons  # b was never cloned: one segment
    assert "metric: l1 (lower is better), 1 trials" in text and "Lineage" not in text[text.index("<h2>fruit</h2>"):]
    # The best: linked, its weights those of its best checkpoint (epoch 1), loadable by cyclegan test.
    for pair, best in (("seasons", "seasons_b"), ("fruit", "fruit_a")):
        assert f"<a href='{pair}/best/'>{pair}/best/</a>" in text
        record = json.loads((page.parent / pair / "best" / "trial.json").read_text())
        assert record["trial"] == best and record["checkpoint"].endswith(f"{best}/checkpoint_000000/state.pt")
        options = yaml.safe_load((page.parent / pair / "best" / "train_opt.yaml").read_text())
        assert options["netG"] == "resnet_6blocks" and options["dataroot"] is None
    record = json.loads((page.parent / "seasons" / "best" / "trial.json").read_text())
    assert (record["best"], record["final"], record["checkpoint_score"], record["checkpoint_epochs"]) == (0.1, 0.3, 0.1, 1.0)
    assert record["metric"] == "l1" and record["params"] == params
    for name in ("G_A", "G_B", "D_A", "D_B"):
        exported = torch.load(page.parent / "seasons" / "best" / f"latest_net_{name}.pth", weights_only=True)
        assert exported.keys() == nets_b[1][name].keys()
        assert all(torch.equal(exported[k], v) for k, v in nets_b[1][name].items())
    # Images: each test image and the top trials' translations of it, every one on disk; the best's are its
    # best checkpoint's translations.
    images = re.findall(r"<img src='([^']+)'>", text)
    assert len(images) == 2 * 2 * (1 + 2) + 2 * 2 * (1 + 1)  # directions x images x (input + trials shown)
    assert all((page.parent / html.unescape(src)).is_file() for src in images)
    assert "<th>#1 seasons_b</th><th>#2 seasons_a</th>" in seasons and "#3" not in seasons
    first = re.search(r"<img src='(seasons/images/AtoB_([^']+)_input\.png)'>", text)
    shown = np.asarray(Image.open(page.parent / f"seasons/images/AtoB_{first.group(2)}_seasons_b.png"))
    saved = yaml.safe_load((page.parent / "seasons" / "best" / "train_opt.yaml").read_text())
    cfg = from_dict({**saved, "device": "cpu", "checkpoints_dir": str(tmp_path / "builtin")})
    model = CycleGAN(cfg, device=torch.device("cpu"))
    model.G_A.load_state_dict(nets_b[1]["G_A"])
    inputs = test_images(resolve_dataroot(cfg), "testA", 3, cfg, 1)
    assert np.array_equal(shown, translate_images(model.G_A, [inputs[0][1]])[0])
    # The table printed beside it: the same ranking.
    lines = table(str(sweep)).splitlines()
    assert lines[0] == "seasons: 3 trials" and lines[1].split()[:2] == ["1.", "seasons_b"]
    assert "at epoch 1 went on from seasons_b: lambda_cycle 3 → 10" in lines[4] and lines[-2] == "fruit: 1 trials"
    # The command itself, where Ray cannot be imported (the report reads files; it needs no Ray): the same page.
    import subprocess
    import sys
    again = tmp_path / "again"
    code = "import sys; sys.modules['ray'] = None; from cyclegan.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "report", str(sweep), "--out", str(again), "--top", "2",
                           "--images", "2"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "seasons: 3 trials" and f"report: {again / 'index.html'}" in done.stdout
    assert (again / "index.html").read_text() == text
