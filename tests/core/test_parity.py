"""Parity with the public reference code's finer points: what a user who knows it would check, in the core
(what the commands add, --suffix, --load_iter and the saved images, is checked in tests/commands/test_parity.py)."""
import collections
import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from cyclegan.core import checkpoint as ckpt
from cyclegan.core.config import ConfigError, from_dict
from cyclegan.core.data import BadImageWarning, list_files, resolve_dataroot
from cyclegan.core.datasets import UnalignedDataset
from cyclegan.core.trainer import Hooks, Trainer

from tests.helpers.images import write_images, write_mixed_pair

# Short runs: epochs of 4 images, nothing but the checkpoints written.
QUICK = dict(max_dataset_size=4, tensorboard=False, eval_at_end=False)


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
def test_identity_loss_with_different_channel_counts_is_refused_when_the_options_load():
    with pytest.raises(ConfigError) as e:
        from_dict({"input_nc": 1, "output_nc": 3, "lambda_identity": 0.5})
    assert "lambda_identity: 0.5 needs input_nc == output_nc (got input_nc 1, output_nc 3)" in str(e.value)
    assert from_dict({"input_nc": 1, "output_nc": 3, "lambda_identity": 0}).input_nc == 1


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
def test_non_image_files_never_count_against_max_dataset_size_or_the_epoch(tmp_path):
    write_mixed_pair(tmp_path)
    listed = [Path(p).name for p in list_files(tmp_path / "trainA", max_size=3)]
    assert listed == ["A0.JPG", "a1.png", "a2.Png"]  # images first, then the first max_dataset_size
    # (the object-store listing's same rule: tests/distributed/test_streams.py)

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


def test_BtoA_reads_folder_A_with_output_nc_and_folder_B_with_input_nc(tmp_path):
    write_images(tmp_path / "trainA", ["a0.png"])
    write_images(tmp_path / "trainB", ["b0.png", "b1.png"])
    cfg = from_dict(dict(dataroot=str(tmp_path), load_size=28, crop_size=24, direction="BtoA", input_nc=1,
                         output_nc=3, lambda_identity=0))
    item = UnalignedDataset(cfg)[0]
    assert Path(item["A_paths"]).parent.name == "trainB" and item["A"].shape[0] == 1
    assert Path(item["B_paths"]).parent.name == "trainA" and item["B"].shape[0] == 3


# ---------------------------------------------------------------- 8. one home for the built-in dataroot
def test_no_dataroot_gives_the_builtin_pair_written_once(tmp_path):
    cfg = from_dict(dict(checkpoints_dir=str(tmp_path), builtin="fruit", builtin_size=8, builtin_count=2))
    root = Path(resolve_dataroot(cfg))
    assert root == tmp_path / "_builtin" / "fruit_8px_2" and len(list_files(root / "trainA")) == 2
    stamp = (root / "pair.json").stat().st_mtime_ns
    assert resolve_dataroot(cfg) == str(root) and (root / "pair.json").stat().st_mtime_ns == stamp
    assert resolve_dataroot(dataclasses.replace(cfg, dataroot="/data/h2z")) == "/data/h2z"
