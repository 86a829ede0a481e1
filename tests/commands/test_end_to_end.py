"""End to end through the real ``cyclegan`` command: train, test, gallery, TensorBoard, eval, bench (each a
process, as a user runs it), and the test and synth commands on published and built-in data (in this
process: the same command function, without another interpreter importing torch)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.cli import main
from cyclegan.core.config import from_dict
from cyclegan.core.evaluate import score_translation
from cyclegan.core.networks import define_G
from cyclegan.core.synth import PAIRS, render, write_pair
from cyclegan.core.trainer import Trainer

CLI = [sys.executable, "-m", "cyclegan.cli"]


def run(args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="default")
    proc = subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"cyclegan {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def tensorboard_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.mark.slow  # an end-to-end command run
def test_train_test_gallery_and_tensorboard(tiny_pair, tmp_path):
    flags = ["--dataroot", tiny_pair, "--name", "e2e", "--checkpoints_dir", tmp_path / "checkpoints",
             "--netG", "resnet_6blocks", "--ngf", 4, "--ndf", 4, "--load_size", 28, "--crop_size", 24,
             "--num_threads", 0]
    out = run(["train", *flags, "--n_epochs", 1, "--n_epochs_decay", 1, "--print_freq", 5,
               "--image_log_freq", 10, "--save_epoch_freq", 1], cwd=tmp_path).stdout
    run_dir = tmp_path / "checkpoints" / "e2e"
    for label in ("latest", "1", "2"):
        assert (run_dir / f"{label}_net_G_A.pth").exists()
    assert "eval: L1 to the ideal translation" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["total_iters"] == 20 and 0 < result["eval"]["l1"] < 1

    acc = tensorboard_tags(run_dir / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    for name in ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"):
        assert f"loss/{name}" in scalars
        assert [e.step for e in acc.Scalars(f"loss/{name}")] == [5, 10, 15, 20]
    assert {"lr", "eval/l1", "eval/psnr"} <= scalars
    assert acc.Scalars("lr")[0].value == pytest.approx(0.0002)
    assert acc.Scalars("lr")[-1].value == pytest.approx(0.0001)
    assert {"images/A", "images/B"} <= set(acc.Tags()["images"])
    grid = acc.Images("images/A")[-1]
    assert grid.width > 3 * grid.height  # real_A | fake_B | rec_A | idt_B side by side

    proc = run(["test", *flags, "--results_dir", tmp_path / "results", "--num_test", 3], cwd=tmp_path)
    assert "translates only 3 of the 4 test images" in proc.stderr
    web = tmp_path / "results" / "e2e" / "test_latest"
    page = (web / "index.html").read_text()
    assert "Experiment = e2e, Phase = test, Epoch = latest" in page
    images = sorted(p.name for p in (web / "images").iterdir())
    assert len(images) == 3 * 6
    for visual in ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B"):
        assert f"0000_{visual}.png" in images
    shown = re.findall(r'src="([^"]+)"', page)
    assert sorted(src.rsplit("/", 1)[-1] for src in shown) == images  # each image on the page once
    for src in shown:
        assert (web / src).exists()
    assert Image.open(web / "images" / "0000_fake_B.png").size == (24, 24)

    scores = json.loads(run(["eval", *flags], cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert scores["l1"] == pytest.approx(result["eval"]["l1"], rel=1e-5)
    fid = run(["eval", *flags, "--metric", "kid", "--feature_extractor", "tiny"], cwd=tmp_path).stdout
    assert "FID " in fid and "KID " in fid
    fid_scores = json.loads(fid.strip().splitlines()[-1])
    assert fid_scores["fid"] > 0 and {"fid_AtoB", "fid_BtoA", "kid_AtoB", "kid_BtoA"} <= set(fid_scores)


def test_a_reference_pretrained_generator_translates_as_is(tiny_pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a user would run it: nothing lands in the repository
    # A file as the reference publishes it: plain state_dict, here saved from DataParallel ('module.')
    # by an older PyTorch that stored InstanceNorm running stats.
    torch.manual_seed(0)
    net = define_G(3, 3, 8, "resnet_6blocks")
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    sd["module.model.2.running_mean"] = torch.zeros(8)
    sd["module.model.2.running_var"] = torch.ones(8)
    sd["module.model.2.num_batches_tracked"] = torch.tensor(0)
    folder = tmp_path / "checkpoints" / "seasons_pretrained"
    folder.mkdir(parents=True)
    torch.save(sd, folder / "latest_net_G.pth")

    assert main(["test", "--dataroot", str(Path(tiny_pair) / "testA"), "--name", "seasons_pretrained", "--model",
                 "test", "--no_dropout", "--netG", "resnet_6blocks", "--ngf", "8", "--crop_size", "24",
                 "--checkpoints_dir", str(tmp_path / "checkpoints"), "--results_dir", str(tmp_path / "results")]) == 0
    images = tmp_path / "results" / "seasons_pretrained" / "test_latest" / "images"
    assert sorted(p.name for p in images.iterdir())[:2] == ["0000_fake.png", "0000_real.png"]
    real = np.asarray(Image.open(Path(tiny_pair) / "testA" / "0000.png"), dtype=np.float32) / 127.5 - 1
    with torch.no_grad():
        expected = net(torch.from_numpy(real.transpose(2, 0, 1))[None])[0]
    expected = ((expected.numpy().transpose(1, 2, 0) + 1) / 2 * 255).round()
    got = np.asarray(Image.open(images / "0000_fake.png"), dtype=np.float32)
    assert np.abs(got - expected).max() <= 1


def test_a_wrong_architecture_gives_a_clear_error(tiny_pair, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "checkpoints" / "x_pretrained"
    folder.mkdir(parents=True)
    torch.save(define_G(3, 3, 8, "resnet_6blocks").state_dict(), folder / "latest_net_G.pth")
    assert main(["test", "--dataroot", str(tiny_pair), "--name", "x_pretrained", "--model", "test",
                 "--checkpoints_dir", str(tmp_path / "checkpoints"), "--results_dir", str(tmp_path / "r")]) == 2
    assert "latest_net_G.pth: does not fit this network" in capsys.readouterr().err


def test_builtin_pairs_are_deterministic_and_paired():
    for pair in PAIRS:
        a = np.asarray(render(pair, 0, "testA", 1, 32, "A"))
        assert np.array_equal(a, np.asarray(render(pair, 0, "testA", 1, 32, "A")))
        b = np.asarray(render(pair, 0, "testA", 1, 32, "B"))
        other = np.asarray(render(pair, 0, "testA", 2, 32, "A"))
        assert np.abs(a.astype(int) - b).mean() > 5  # the domains differ ...
        assert not np.array_equal(a, other)           # ... and so do scenes
    assert np.asarray(render("fruit", 0, "testA", 0, 80, "A")).shape == (80, 80, 3)


def test_synth_command_writes_the_unaligned_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "synth", "zebra", "--out", str(tmp_path / "z"), "--size", "16", "--n_train", "3",
                 "--n_test", "2"]) == 0
    for split, n in (("trainA", 3), ("trainB", 3), ("testA", 2), ("testB", 2), ("ideal/testA", 2)):
        assert len(list((tmp_path / "z" / split).glob("*.png"))) == n
    assert json.loads((tmp_path / "z" / "pair.json").read_text())["pair"] == "zebra"


@pytest.mark.slow
def test_the_score_separates_a_trained_model_from_identity_and_collapse(tmp_path):
    root = write_pair("seasons", tmp_path / "seasons", size=32, n_train=40, n_test=8)
    cfg = from_dict(dict(dataroot=str(root), checkpoints_dir=str(tmp_path / "ck"), name="brief",
                         netG="resnet_6blocks", ngf=8, ndf=8, load_size=36, crop_size=32, num_threads=0,
                         n_epochs=4, n_epochs_decay=0, lambda_identity=0, tensorboard=False, seed=0))
    trained = Trainer(cfg, progress_bar=False).run()["eval"]

    class Collapsed(torch.nn.Module):  # one grey image whatever the input
        def forward(self, x):
            return torch.zeros_like(x)
    cpu = torch.device("cpu")
    identity = score_translation(torch.nn.Identity(), torch.nn.Identity(), str(root), device=cpu)
    collapsed = score_translation(Collapsed(), Collapsed(), str(root), device=cpu)
    assert identity["l1"] == pytest.approx(trained["identity_l1"])
    assert trained["l1"] < 0.5 * identity["l1"]
    assert trained["l1"] < 0.5 * collapsed["l1"]
    assert trained["psnr"] > identity["psnr"] + 6


@pytest.mark.slow  # an end-to-end command run
def test_bench_prints_json_last(tmp_path):
    out = run(["bench", "--netG", "resnet_6blocks", "--ngf", 4, "--ndf", 4, "--crop_size", 32, "--warmup", 1,
               "--iters", 3], tmp_path).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sec_per_iter"] > 0 and result["images_per_sec"] == pytest.approx(1 / result["sec_per_iter"])


@pytest.mark.slow  # end-to-end command runs
def test_a_name_with_a_run_continues_with_the_same_options_and_refuses_others(tiny_pair, tmp_path, caplog, capsys):
    """The rerun rule: the same command again continues the run (here: finished, so it ends at once, with
    the same weights); an option that changes only how it runs may differ; one that decides what is
    trained is refused, naming it, unless --continue_train says to continue with it."""
    import logging

    flags = ["--dataroot", str(tiny_pair), "--name", "again", "--checkpoints_dir", str(tmp_path), "--netG",
             "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24",
             "--num_threads", "0", "--n_epochs", "1", "--n_epochs_decay", "0"]
    caplog.set_level(logging.INFO, logger="cyclegan")
    assert main(["train", *flags]) == 0
    assert f"run 'again': starting in {tmp_path / 'again'}" in caplog.text
    weights = torch.load(tmp_path / "again" / "latest_net_G_A.pth", weights_only=True)
    caplog.clear()
    assert main(["train", *flags, "--print_freq", "3"]) == 0  # how it is logged: not what is trained
    assert "run 'again': continuing from its last checkpoint" in caplog.text and "(the same options)" in caplog.text
    again = torch.load(tmp_path / "again" / "latest_net_G_A.pth", weights_only=True)
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # nothing more to train
    capsys.readouterr()
    assert main(["train", *flags, "--lr", "0.001", "--pool_size", "0"]) == 2
    assert capsys.readouterr().err == (
        f"error: name: the run at {tmp_path / 'again'} exists with other options (pool_size: 50 in the run, 0 now; "
        "lr: 0.0002 in the run, 0.001 now); give another --name, or --continue_train to continue it with the "
        "options given now\n")
    assert main(["train", *flags, "--lr", "0.001", "--continue_train"]) == 0
