"""Parity with the public reference code's finer points that the commands carry: the options as a command
line gives them (--suffix, the identity loss's check), --load_iter at test time, and the saved images as
the reference's tensor2im writes them (the core's points: tests/core/test_parity.py)."""
import numpy as np
import torch
import yaml
from PIL import Image

from cyclegan.cli import build_parser, main
from cyclegan.commands.options import from_args
from cyclegan.commands.test import save_image
from cyclegan.core import checkpoint as ckpt
from cyclegan.core.config import TEST_DEFAULTS
from cyclegan.core.trainer import Hooks, Trainer

# Short runs: epochs of 4 images, nothing but the checkpoints written.
QUICK = dict(max_dataset_size=4, tensorboard=False, eval_at_end=False)
CLI_TINY = ["--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24",
            "--num_threads", "0", "--max_dataset_size", "4", "--n_epochs", "1", "--n_epochs_decay", "0",
            "--no-tensorboard", "--no-eval_at_end"]


def parse(argv):
    return build_parser().parse_args(argv)


# ---------------------------------------------------------------- 1. identity loss and channels
def test_identity_loss_with_different_channel_counts_is_refused_from_the_command_line(capsys):
    # It stops before any dataset is looked at (this folder does not exist).
    assert main(["train", "--dataroot", "/nonexistent/data", "--input_nc", "1"]) == 2
    assert "lambda_identity: 0.5 needs input_nc == output_nc" in capsys.readouterr().err
    # Testing a 1 <-> 3 channel model needs no identity loss option.
    assert from_args(parse(["test", "--input_nc", "1"]), defaults=TEST_DEFAULTS).input_nc == 1


# ---------------------------------------------------------------- 2. --suffix
def test_suffix_is_formatted_with_the_options_and_appended_to_the_name():
    cfg = from_args(parse(["train", "--name", "h2z", "--suffix", "{netG}_size{load_size}"]))
    assert cfg.name == "h2z_resnet_9blocks_size286"
    assert from_args(parse(["train", "--name", "h2z", "--suffix", ""])).name == "h2z"


def test_a_suffix_naming_no_option_is_an_error_naming_suffix(capsys):
    assert main(["train", "--name", "h2z", "--suffix", "{netG}_{colour}"]) == 2
    assert "suffix: '{netG}_{colour}' names {colour}, which is not an option" in capsys.readouterr().err


def test_a_suffixed_run_is_tested_from_its_saved_options_without_a_second_suffix(tiny_pair, tmp_path):
    ck, results = str(tmp_path / "ck"), str(tmp_path / "results")
    assert main(["train", "--dataroot", str(tiny_pair), "--name", "run", "--suffix", "{netG}_ngf{ngf}",
                 "--checkpoints_dir", ck, *CLI_TINY]) == 0
    run_dir = tmp_path / "ck" / "run_resnet_6blocks_ngf4"
    assert (run_dir / "latest_net_G_A.pth").exists()
    saved = run_dir / "train_opt.yaml"
    assert yaml.safe_load(saved.read_text())["name"] == "run_resnet_6blocks_ngf4"
    # The saved options, alone or with the training command's --suffix again: the same run.
    for extra in ([], ["--suffix", "{netG}_ngf{ngf}"]):
        cfg = from_args(parse(["test", "--config", str(saved), *extra]))
        assert cfg.name == "run_resnet_6blocks_ngf4"
    assert main(["test", "--config", str(saved), "--results_dir", results]) == 0
    assert (tmp_path / "results" / "run_resnet_6blocks_ngf4" / "test_latest" / "index.html").exists()


# ---------------------------------------------------------------- 3. --save_by_iter and --load_iter
def test_save_by_iter_writes_iter_weights_instead_of_latest_and_load_iter_tests_them(tiny_cfg, tmp_path):
    cfg = tiny_cfg(name="byiter", save_by_iter=True, save_latest_freq=3, save_epoch_freq=1, keep_checkpoints=10,
                   n_epochs=1, n_epochs_decay=1, **QUICK)
    latest_at_save = []

    class LatestAtSave(Hooks):
        def saved(self, trainer, path):
            latest_at_save.append((trainer.progress.total_iters, (cfg.run_dir / "latest_net_G_A.pth").exists()))
    Trainer(cfg, progress_bar=False, hooks=[LatestAtSave()]).run()
    # Periodic saves at 3 and 6 images write iter_3/iter_6 only; epoch ends write latest and <epoch>.
    assert latest_at_save == [(3, False), (4, True), (6, True), (8, True)]
    for label in ("iter_3", "iter_6", "1", "2", "latest"):
        assert all((cfg.run_dir / f"{label}_net_{n}.pth").exists() for n in ("G_A", "G_B", "D_A", "D_B"))
    assert not (cfg.run_dir / "iter_4_net_G_A.pth").exists()
    # Our full state is still written at every save.
    assert [p.name for p in ckpt.state_files(cfg.run_dir)][::-1] == \
        [f"state_iter{n:010d}.pt" for n in (3, 4, 6, 8)]

    for f in cfg.run_dir.glob("latest_net_*.pth"):
        f.unlink()  # so only iter_3 can be what the test loads
    results = tmp_path / "results"
    assert main(["test", "--dataroot", cfg.dataroot, "--name", "byiter", "--checkpoints_dir", cfg.checkpoints_dir,
                 "--results_dir", str(results), "--load_iter", "3", "--netG", "resnet_6blocks",
                 "--ngf", "4", "--crop_size", "24", "--load_size", "24"]) == 0
    page = results / "byiter" / "test_latest_iter3" / "index.html"
    assert page.exists() and "Epoch = latest" in page.read_text()
    assert len(list(page.parent.glob("images/*.png"))) == 4 * 6  # 4 test images: real, fake, rec both ways


# ---------------------------------------------------------------- 7. saved images as tensor2im writes them
def test_saved_images_are_truncated_like_tensor2im_and_grey_is_saved_as_rgb(tmp_path):
    # (x + 1) / 2 * 255: 127.5 -> 127, 253.725 -> 253, 1.275 -> 1, 191.25 -> 191 (rounding gives 128, 254).
    values = torch.tensor([0.0, 0.99, -0.99, 0.5, -1.0, 1.0])
    rgb = values.reshape(1, 1, 6).repeat(3, 2, 1)
    save_image(rgb, tmp_path / "rgb.png")
    saved = np.asarray(Image.open(tmp_path / "rgb.png"))
    assert saved.shape == (2, 6, 3) and list(saved[0, :, 0]) == [127, 253, 1, 191, 0, 255]

    save_image(values.reshape(1, 1, 6), tmp_path / "grey.png")
    grey = Image.open(tmp_path / "grey.png")
    assert grey.mode == "RGB"
    assert np.array_equal(np.asarray(grey)[0], np.repeat([[127, 253, 1, 191, 0, 255]], 3, axis=0).T)
