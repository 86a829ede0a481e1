"""Parity with the public reference code's finer points: what a user who knows it would check."""
import collections
import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cyclegan.cli import build_parser, main
from cyclegan.commands.options import from_args
from cyclegan.commands.test import save_image
from cyclegan.core import checkpoint as ckpt
from cyclegan.core.config import TEST_DEFAULTS, ConfigError, from_dict
from cyclegan.core.data import BadImageWarning, list_files, resolve_dataroot
from cyclegan.core.datasets import UnalignedDataset
from cyclegan.core.storage import Storage
from cyclegan.core.trainer import Hooks, Trainer

# Short runs: epochs of 4 images, nothing but the checkpoints written.
QUICK = dict(max_dataset_size=4, tensorboard=False, eval_at_end=False)
CLI_TINY = ["--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24",
            "--num_threads", "0", "--max_dataset_size", "4", "--n_epochs", "1", "--n_epochs_decay", "0",
            "--no-tensorboard", "--no-eval_at_end"]


def parse(argv):
    return build_parser().parse_args(argv)


class Crash(RuntimeError):
    pass


class SavedPositions(Hooks):
    """(epoch, epoch_iter, total_iters) of every save, as its full state records it; a crash after the
    ``crash_after``-th."""

    def __init__(self, crash_after=None):
        self.crash_after, self.seen = crash_after, []

    def saved(self, trainer, path):
        p = ckpt.load_state(path)["progress"]
        self.seen.append((p["epoch"], p["epoch_iter"], p["total_iters"]))
        if self.crash_after is not None and len(self.seen) == self.crash_after:
            raise Crash(f"simulated crash after {path.name}")


def saved_positions(trainer_cfg, hooks=(), crash_after=None):
    """Run and return (epoch, epoch_iter, total_iters) of every save, as its full state records it."""
    positions = SavedPositions(crash_after)
    seen = positions.seen
    trainer = Trainer(trainer_cfg, progress_bar=False, hooks=[*hooks, positions])
    try:
        trainer.run()
    except Crash:
        pass
    return seen, trainer


# ---------------------------------------------------------------- 1. identity loss and channels
def test_identity_loss_with_different_channel_counts_is_refused_when_the_options_load(capsys):
    with pytest.raises(ConfigError) as e:
        from_dict({"input_nc": 1, "output_nc": 3, "lambda_identity": 0.5})
    assert "lambda_identity: 0.5 needs input_nc == output_nc (got input_nc 1, output_nc 3)" in str(e.value)
    assert from_dict({"input_nc": 1, "output_nc": 3, "lambda_identity": 0}).input_nc == 1
    # From the command line it stops before any dataset is looked at (this folder does not exist).
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


# ---------------------------------------------------------------- 4. saves asked for on an epoch's last step
def test_a_latest_save_due_on_the_last_image_of_an_epoch_is_written_at_the_epoch_end(tiny_cfg):
    cfg = tiny_cfg(name="edge", save_latest_freq=4, save_epoch_freq=5, n_epochs=1, n_epochs_decay=1, **QUICK)
    seen, _ = saved_positions(cfg)
    assert seen == [(2, 0, 4), (3, 0, 8)]  # once per crossing, at the start of the next epoch
    assert (cfg.run_dir / "latest_net_G_A.pth").exists() and not (cfg.run_dir / "1_net_G_A.pth").exists()


class NoticeOnLastStep(Hooks):
    """A preemption notice (what the Ray layer's hook reports) on the last step of epoch 1."""

    def notice(self, trainer):
        return trainer.progress.epoch == 1 and trainer.progress.epoch_iter == trainer.epoch_length()


@pytest.mark.parametrize("save_epoch_freq", [1, 5])
def test_a_preemption_notice_on_the_last_step_of_an_epoch_is_saved_once_at_its_end(tiny_cfg, save_epoch_freq):
    cfg = tiny_cfg(name="notice", save_latest_freq=1000, save_epoch_freq=save_epoch_freq, n_epochs=1,
                   n_epochs_decay=1, **QUICK)
    seen, _ = saved_positions(cfg, [NoticeOnLastStep()])
    assert seen == [(2, 0, 4), (3, 0, 8)]  # the notice's save, merged with the epoch save when one is due


def test_a_time_based_save_comes_when_its_seconds_have_passed(tiny_cfg):
    # --save_latest_secs this small is due after every step: a mid-epoch save at each, and the one due on
    # an epoch's last step merged into the epoch's save.
    cfg = tiny_cfg(name="timed", save_latest_freq=1000, save_epoch_freq=1, save_latest_secs=1e-6, n_epochs=1,
                   n_epochs_decay=1, **QUICK)
    seen, _ = saved_positions(cfg)
    assert seen == [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 0, 4), (2, 1, 5), (2, 2, 6), (2, 3, 7), (3, 0, 8)]
    never = tiny_cfg(name="untimed", save_latest_freq=1000, save_epoch_freq=1, n_epochs=1, n_epochs_decay=1, **QUICK)
    assert saved_positions(never)[0] == [(2, 0, 4), (3, 0, 8)]


def test_a_run_resumed_from_a_save_deferred_to_the_epoch_end_is_bit_identical(tiny_cfg):
    base = dict(save_latest_freq=4, save_epoch_freq=5, n_epochs=1, n_epochs_decay=1, **QUICK)
    _, full = saved_positions(tiny_cfg(name="full", **base))
    seen, _ = saved_positions(tiny_cfg(name="cut", **base), crash_after=1)
    assert seen == [(2, 0, 4)]
    resumed = Trainer(tiny_cfg(name="cut", continue_train=True, **base), progress_bar=False)
    assert (resumed.progress.epoch, resumed.progress.epoch_iter) == (2, 0)
    resumed.run()
    for name, net in full.model.networks().items():
        other = resumed.model.networks()[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in net.state_dict().items()), name


# ---------------------------------------------------------------- 5. image listing
def write_images(folder, names, size=(30, 30), green=90):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (20 * i, green, 160)).save(folder / name, format="PNG")


def test_non_image_files_never_count_against_max_dataset_size_or_the_epoch(tmp_path):
    for split in ("trainA", "trainB"):
        write_images(tmp_path / split, ["A0.JPG", "a1.png", "a2.Png", "a3.tiff"])
        for name, data in {"README.txt": b"about", "Thumbs.db": b"\0\1", "labels.csv": b"x,y\n",
                           ".DS_Store": b"\0", "broken.png": b"not a png"}.items():
            (tmp_path / split / name).write_bytes(data)
    listed = [Path(p).name for p in list_files(tmp_path / "trainA", max_size=3)]
    assert listed == ["A0.JPG", "a1.png", "a2.Png"]  # images first, then the first max_dataset_size

    from cyclegan.distributed.streams import list_objects  # the object-store listing: the same rule
    assert [Path(p).name for p in list_objects(str(tmp_path / "trainA"), Storage.from_options(), max_size=3)] == listed

    cfg = from_dict(dict(dataroot=str(tmp_path), load_size=28, crop_size=24))
    with pytest.warns(BadImageWarning, match=r"skipped 2 unreadable file\(s\)") as record:
        ds = UnalignedDataset(cfg)
    assert ds.epoch_length == 4 and ds.skipped == 2  # broken.png in each folder: an image name that fails
    assert "README" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        capped = UnalignedDataset(dataclasses.replace(cfg, max_dataset_size=2))
    assert [Path(p).name for p in capped.A.paths] == ["A0.JPG", "a1.png"]


# ---------------------------------------------------------------- 6. BtoA pairing
def test_BtoA_cycles_folder_A_and_draws_folder_B_then_swaps(tmp_path):
    write_images(tmp_path / "trainA", [f"a{i}.png" for i in range(2)])
    write_images(tmp_path / "trainB", [f"b{i}.png" for i in range(6)])
    cfg = from_dict(dict(dataroot=str(tmp_path), load_size=28, crop_size=24, direction="BtoA", seed=1))
    ds = UnalignedDataset(cfg)
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        pairs = [(Path(ds[i]["A_paths"]).name, Path(ds[i]["B_paths"]).name) for i in range(len(ds))]
        assert len(pairs) == 6
        # The model's A images come from folder trainB, its B images from trainA ...
        assert all(a.startswith("b") and b.startswith("a") for a, b in pairs)
        # ... and trainA is the cycled folder: index % |A| over a permutation of the epoch, so each of
        # its 2 images is used exactly 3 times, while trainB is drawn at random.
        assert collections.Counter(b for _, b in pairs) == {"a0.png": 3, "a1.png": 3}
    serial = UnalignedDataset(dataclasses.replace(cfg, serial_batches=True))
    assert [(Path(serial[i]["A_paths"]).name, Path(serial[i]["B_paths"]).name) for i in range(6)] == \
        [(f"b{i}.png", f"a{i % 2}.png") for i in range(6)]


@pytest.mark.slow
def test_a_BtoA_ray_stream_serves_the_same_pairs_as_the_local_dataset(ray_session, tmp_path):
    from cyclegan.distributed.streams import epoch_batches, scan_domains
    write_images(tmp_path / "trainA", [f"a{i}.png" for i in range(2)], green=90)
    write_images(tmp_path / "trainB", [f"b{i}.png" for i in range(6)], green=200)  # every image its own colour
    cfg = from_dict(dict(dataroot=str(tmp_path), load_size=28, crop_size=24, direction="BtoA", seed=1))
    local = UnalignedDataset(cfg)
    store = Storage.from_options()
    domains = scan_domains(cfg, store)
    for epoch in (1, 2):
        local.set_epoch(epoch)
        streamed = list(epoch_batches(domains, cfg, store, epoch, 0, rank=0, world_size=1))
        assert len(streamed) == 6
        for i, batch in enumerate(streamed):
            assert torch.equal(batch["A"][0], local[i]["A"]) and torch.equal(batch["B"][0], local[i]["B"]), i


def test_BtoA_reads_folder_A_with_output_nc_and_folder_B_with_input_nc(tmp_path):
    write_images(tmp_path / "trainA", ["a0.png"])
    write_images(tmp_path / "trainB", ["b0.png", "b1.png"])
    cfg = from_dict(dict(dataroot=str(tmp_path), load_size=28, crop_size=24, direction="BtoA", input_nc=1,
                         output_nc=3, lambda_identity=0))
    item = UnalignedDataset(cfg)[0]
    assert Path(item["A_paths"]).parent.name == "trainB" and item["A"].shape[0] == 1
    assert Path(item["B_paths"]).parent.name == "trainA" and item["B"].shape[0] == 3


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


# ---------------------------------------------------------------- 8. one home for the built-in dataroot
def test_no_dataroot_gives_the_builtin_pair_written_once(tmp_path):
    cfg = from_dict(dict(checkpoints_dir=str(tmp_path), builtin="fruit", builtin_size=8, builtin_count=2))
    root = Path(resolve_dataroot(cfg))
    assert root == tmp_path / "_builtin" / "fruit_8px_2" and len(list_files(root / "trainA")) == 2
    stamp = (root / "pair.json").stat().st_mtime_ns
    assert resolve_dataroot(cfg) == str(root) and (root / "pair.json").stat().st_mtime_ns == stamp
    assert resolve_dataroot(dataclasses.replace(cfg, dataroot="/data/h2z")) == "/data/h2z"
