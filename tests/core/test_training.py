"""Training: the learning-rate schedule, exact resumption, checkpoint fallback, the golden loss curve."""
import json
import os
import time
from pathlib import Path

import pytest
import torch

from cyclegan.core import checkpoint as ckpt
from cyclegan.core.config import from_dict
from cyclegan.core.model import CycleGAN
from cyclegan.core.schedules import lr_factor
from cyclegan.core.trainer import Hooks, Trainer

GOLDEN = Path(__file__).parent / "golden" / "loss_curve.json"


class Crash(RuntimeError):
    pass


class crash_after(Hooks):
    """A run that dies right after its n-th save."""

    def __init__(self, n_saves):
        self.n_saves, self.seen = n_saves, []

    def saved(self, trainer, path):
        self.seen.append(path)
        if len(self.seen) == self.n_saves:
            raise Crash(f"simulated crash after {path.name}")


def weights(trainer):
    return {f"{n}.{k}": v.clone() for n, net in trainer.model.networks().items() for k, v in net.state_dict().items()}


def test_linear_lr_is_exact_at_every_epoch():
    cfg = from_dict({"n_epochs": 3, "n_epochs_decay": 4})
    assert [lr_factor(cfg, e) for e in range(1, 8)] == pytest.approx([1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    assert lr_factor(cfg, 8) == pytest.approx(0.0)  # zero only after the last decay epoch


def test_step_and_cosine_schedules():
    step = from_dict({"lr_policy": "step", "lr_decay_iters": 2, "n_epochs": 3, "n_epochs_decay": 3})
    assert [lr_factor(step, e) for e in range(1, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = from_dict({"lr_policy": "cosine", "n_epochs": 2, "n_epochs_decay": 2})
    assert [lr_factor(cos, e) for e in range(1, 5)] == pytest.approx([1, 0.8535534, 0.5, 0.1464466])


def test_epoch_count_continues_the_schedule():
    cfg = from_dict({"n_epochs": 2, "n_epochs_decay": 3, "lr": 0.01, "ngf": 4, "ndf": 4, "netG": "resnet_6blocks"})
    model = CycleGAN(cfg)
    assert [round(model.set_epoch_lr(e), 6) for e in (1, 2, 3, 4, 5)] == [0.01, 0.01, 0.0075, 0.005, 0.0025]
    assert model.optimizer_D.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_resume_mid_epoch_is_bit_identical(tiny_cfg):
    # 10 images per epoch, 2 epochs; a latest save every 4 images: crash after the save at image 8.
    full = Trainer(tiny_cfg(name="full", save_latest_freq=4), progress_bar=False)
    full.run()
    cfg = tiny_cfg(name="resumed", save_latest_freq=4)
    with pytest.raises(Crash):
        Trainer(cfg, progress_bar=False, hooks=[crash_after(2)]).run()
    saved = ckpt.load_latest_state(cfg.run_dir)[1]["progress"]
    assert (saved["epoch"], saved["epoch_iter"], saved["total_iters"]) == (1, 8, 8)
    resumed = Trainer(tiny_cfg(name="resumed", save_latest_freq=4, continue_train=True), progress_bar=False)
    assert resumed.progress.epoch_iter == 8
    resumed.run()
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for opt in ("optimizer_G", "optimizer_D"):
        sa, sb = getattr(full.model, opt).state_dict()["state"], getattr(resumed.model, opt).state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert torch.equal(torch.cat(full.model.fake_B_pool.images), torch.cat(resumed.model.fake_B_pool.images))


def test_resume_at_an_epoch_boundary_keeps_the_schedule(tiny_cfg):
    base = dict(n_epochs=1, n_epochs_decay=2, lr_policy="plateau")
    full = Trainer(tiny_cfg(name="full", **base), progress_bar=False)
    full.run()
    with pytest.raises(Crash):
        Trainer(tiny_cfg(name="boundary", **base), progress_bar=False, hooks=[crash_after(1)]).run()
    resumed = Trainer(tiny_cfg(name="boundary", continue_train=True, **base), progress_bar=False)
    assert (resumed.progress.epoch, resumed.progress.epoch_iter) == (2, 0)
    resumed.run()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.model.plateau.state_dict()["best"] == resumed.model.plateau.state_dict()["best"]


def test_checkpoints_are_atomic_rotated_and_in_reference_format(tiny_cfg):
    cfg = tiny_cfg(name="files", save_latest_freq=2, keep_checkpoints=2, save_by_iter=True)
    Trainer(cfg, progress_bar=False).run()
    run = cfg.run_dir
    states = ckpt.state_files(run)
    assert [p.name for p in states] == ["state_iter0000000020.pt", "state_iter0000000018.pt"]
    assert not list(run.rglob("*.tmp"))
    for label in ("latest", "1", "2", "iter_4"):
        for net in ("G_A", "G_B", "D_A", "D_B"):
            sd = torch.load(run / f"{label}_net_{net}.pth", weights_only=True)
            assert all(isinstance(v, torch.Tensor) for v in sd.values())
    state = ckpt.load_state(states[0])
    assert set(state["model"]) >= {"nets", "optimizer_G", "optimizer_D", "scheduler", "pools"}
    assert set(state["rng"]) >= {"python", "numpy", "torch"} and state["config"]["name"] == "files"


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_cfg):
    cfg = tiny_cfg(name="corrupt", save_latest_freq=4)
    with pytest.raises(Crash):
        Trainer(cfg, progress_bar=False, hooks=[crash_after(3)]).run()  # saves at 4, 8, then epoch end (10)
    newest = ckpt.state_files(cfg.run_dir)[0]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])  # truncated mid-write by a crash
    with pytest.warns(RuntimeWarning, match=r"state_iter0000000010.pt: unreadable checkpoint.*falling back"):
        resumed = Trainer(tiny_cfg(name="corrupt", save_latest_freq=4, continue_train=True), progress_bar=False)
    assert (resumed.progress.epoch, resumed.progress.epoch_iter) == (1, 8)


def test_checkpoint_files_are_never_unpickled(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    path = tmp_path / "state" / "state_iter0000000001.pt"
    path.parent.mkdir()
    torch.save({"format": ckpt.FORMAT, "evil": Payload()}, path)
    with pytest.raises(ckpt.CheckpointError, match="unreadable checkpoint"):
        ckpt.load_state(path)
    assert not (tmp_path / "pwned").exists()


def test_resuming_with_other_networks_is_refused(tiny_cfg):
    Trainer(tiny_cfg(name="arch"), progress_bar=False).run()
    from cyclegan.core.config import ConfigError
    with pytest.raises(ConfigError, match=r"ngf: 8 differs from the checkpoint's 4"):
        Trainer(tiny_cfg(name="arch", ngf=8, continue_train=True), progress_bar=False)


# The CPU kernels the golden run may use, fixed so that every x86-64 machine computes the same numbers:
# ATen's and oneDNN's kernels are picked per CPU (AVX2, AVX-512 ...) and sum in different orders, and
# this tiny GAN amplifies a 1e-7 difference to 1e-3 within a few steps (seen between two machines).
# MKL, torch's BLAS, picks its code path by CPU too (by vendor as well as by ISA): its COMPATIBLE branch is
# the one that gives the same results on every x86-64 CPU (an Intel and an AMD CI machine parted at step 7).
GOLDEN_ENV = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE",
              "OMP_NUM_THREADS": "1"}
GOLDEN_RUN = """
import json, sys
import torch
torch.set_num_threads(1)
from cyclegan.core.config import from_dict
from cyclegan.core.trainer import Trainer
trainer = Trainer(from_dict(json.loads(sys.argv[1])), progress_bar=False, keep_history=True)
trainer.run()
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "steps": trainer.progress.history}))
"""


def recorded_with() -> dict:
    """The versions that decide a CPU run's floating-point results (all pinned by the lock), and the kernels."""
    import numpy
    import PIL
    return {"torch": torch.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__, **GOLDEN_ENV}


def test_golden_loss_curve(tiny_cfg):
    """Per-iteration losses of a tiny seeded CPU run. Any numerical change to the objective shows here.
    The curve belongs to the lock: it is recorded with the versions of requirements/lock-*.txt, in a
    process whose CPU kernels are pinned (GOLDEN_ENV), so it holds on any x86-64 machine.
    After an intended change, or a new lock: CYCLEGAN_UPDATE_GOLDEN=1 ./run.sh test tests/core/test_training.py -k golden"""
    import subprocess
    import sys
    cfg = tiny_cfg(name="golden", n_epochs=1, n_epochs_decay=1, gan_mode="lsgan")
    child = subprocess.run([sys.executable, "-c", GOLDEN_RUN, json.dumps(cfg.to_dict())], capture_output=True,
                           text=True, env={**os.environ, **GOLDEN_ENV}, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    ran = json.loads(child.stdout.strip().splitlines()[-1])
    assert ran["capability"] == "DEFAULT"  # the pin took effect
    curve = ran["steps"]
    assert len(curve) == 20
    if os.environ.get("CYCLEGAN_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"recorded_with": recorded_with(), "steps": curve}, indent=1))
    golden = json.loads(GOLDEN.read_text())
    recorded, running = golden["recorded_with"], recorded_with()
    differs = {k: f"{v} (running {running.get(k)})" for k, v in recorded.items() if running.get(k) != v}
    hint = (f"; the curve was recorded with {differs}: install from the lock (./run.sh test), or after a new "
            f"lock regenerate it with CYCLEGAN_UPDATE_GOLDEN=1 ./run.sh test tests/core/test_training.py -k golden"
            if differs else "")
    assert len(golden["steps"]) == len(curve)
    for step, (want, got) in enumerate(zip(golden["steps"], curve)):
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), f"step {step} loss {name}{hint}"


# ---------------------------------------------------------------- crash-safety loose ends (issue 22: 10)
def test_a_killed_saves_temporaries_are_removed_at_the_next_start(tiny_cfg):
    cfg = tiny_cfg(name="stale", save_latest_freq=4)
    with pytest.raises(Crash):
        Trainer(cfg, progress_bar=False, hooks=[crash_after(1)]).run()
    state_dir = cfg.run_dir / ckpt.STATE_DIR
    stale = [state_dir / ".state_iter0000000008.pt.k1ll3d.tmp", cfg.run_dir / ".latest_net_G_A.pth.x9_z.tmp"]
    for path in stale:  # what a save killed between its write and its rename leaves
        path.write_bytes(b"half a checkpoint")
    keep = cfg.run_dir / "notes.tmp"  # not ours: left alone
    keep.write_text("mine")
    Trainer(tiny_cfg(name="stale", save_latest_freq=4, continue_train=True), progress_bar=False)
    assert not any(p.exists() for p in stale) and keep.exists()


# ---------------------------------------------------------------- TensorBoard across restarts
@pytest.mark.parametrize("how", ["restored into a built trainer", "continue_train"])
def test_a_resumed_run_shows_each_step_once_in_tensorboard(tiny_cfg, how):
    """Ray's restarts and sweep trials restore into a built trainer, --continue_train while it is built:
    either way what the lost attempt logged past the checkpoint is hidden (purged), and what it logged up
    to it stays."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = tiny_cfg(name="resumed", save_latest_freq=4, keep_checkpoints=10, print_freq=2, tensorboard=True)
    Trainer(cfg, progress_bar=False).run()  # the lost attempt: logged to step 20, its states kept
    for later in sorted((cfg.run_dir / ckpt.STATE_DIR).glob("state_iter*.pt"))[2:]:
        later.unlink()  # as if it died after its save at image 8
    if how == "continue_train":
        again = Trainer(tiny_cfg(name="resumed", save_latest_freq=4, print_freq=2, tensorboard=True,
                                 continue_train=True), progress_bar=False)
    else:
        again = Trainer(cfg, progress_bar=False)
        again.restore(ckpt.load_state(cfg.run_dir / ckpt.STATE_DIR / f"state_iter{8:010d}.pt"))
    assert again.progress.total_iters == 8
    again.run()
    events = EventAccumulator(str(cfg.run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/G_A")] == list(range(2, 21, 2))


def test_a_resumed_attempts_events_purge_a_lost_one_of_the_same_second(tmp_path):
    """TensorBoard reads a folder's event files in name order: the second a file was made in, then host,
    pid and a counter compared as text. A lost attempt's file of the same second whose counter sorts after
    the resumed one's ('.9' after '.10') used to be read after the resumed one's purge, so its steps past
    the checkpoint showed twice (a sub-second attempt in one process; seen once in the suite)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from cyclegan.core.events import events_writer
    lost = SummaryWriter(str(tmp_path))
    for step in range(2, 21, 2):
        lost.add_scalar("loss/G_A", 1.0, step)
    lost.close()
    (made,) = tmp_path.iterdir()
    host_pid = made.name.split(".")[4:-1]  # this second, a counter that sorts after any the writer will take
    made.rename(tmp_path / ".".join(["events.out.tfevents", str(int(time.time())), *host_pid, "99999999"]))
    resumed = events_writer(tmp_path, purge=9)
    for step in range(10, 21, 2):
        resumed.add_scalar("loss/G_A", 2.0, step)
    resumed.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/G_A")] == [(s, 1.0 if s < 10 else 2.0)
                                                                      for s in range(2, 21, 2)]


def test_a_continued_run_beside_a_future_dated_events_file_finishes(tiny_cfg, caplog):
    """An events file named for a far-future second (another host's fast clock, a copied folder) cannot be
    outwaited: --continue_train used to wait for that second to come (years), and now waits no more than
    a second or two and says why."""
    import threading
    cfg = tiny_cfg(name="future", save_latest_freq=4, print_freq=2, tensorboard=True)
    Trainer(cfg, progress_bar=False).run()
    future = cfg.run_dir / "tensorboard" / f"events.out.tfevents.{int(time.time()) + 10 * 365 * 86400}.otherhost.1.0"
    future.write_bytes(b"")
    again = Trainer(tiny_cfg(name="future", save_latest_freq=4, print_freq=2, tensorboard=True, continue_train=True,
                             n_epochs_decay=2), progress_bar=False)
    runner = threading.Thread(target=again.run, daemon=True)
    runner.start()
    runner.join(timeout=60)  # a bound on the test, not a figure: the run takes seconds
    assert not runner.is_alive(), "the continued run is still waiting"
    assert again.progress.epoch > cfg.total_epochs
    assert "ahead of this clock" in caplog.text


def test_a_checkpoint_resumes_on_another_kind_of_device(tiny_cfg):
    """A CPU-written checkpoint resumed with --device cuda failed 'RNG state is wrong size' at the
    gradient-penalty generator (a CUDA generator's state is 16 bytes, a CPU one's 5056). On this CPU, the
    other direction: a state in the CUDA form resumes, reseeded from the saved state, the same way each time;
    a state of the same kind goes back exactly."""
    def trainer(name):  # one run folder each: a trainer holds its run until it has run
        return Trainer(tiny_cfg(name=name, lambda_gp=1.0, gan_mode="wgangp"), progress_bar=False)
    saved = trainer("saved")
    state, own = saved.state(), saved.rank_state()
    cuda_form = torch.arange(16, dtype=torch.uint8)  # what torch.Generator("cuda").get_state() holds
    moved = {**state, "model": {**state["model"], "gp_rng": cuda_form}}
    draws = []
    for name in ("moved1", "moved2"):
        resumed = trainer(name)
        with pytest.warns(UserWarning, match="saved on another kind of device"):
            resumed.restore(moved, {**own, "gp_rng": cuda_form})
        draws.append(torch.rand(4, generator=resumed.model.gp_rng))
    assert torch.equal(draws[0], draws[1])
    same = trainer("same")
    same.restore(state, own)
    assert torch.equal(same.model.gp_rng.get_state(), own["gp_rng"])


class CountedNotices(Hooks):
    """A notice that costs a call (as Ray's preemption query, a barrier): how often it is asked."""
    checks_notices = True

    def __init__(self):
        self.asked = []

    def notice(self, trainer):
        self.asked.append(trainer.progress.total_iters)
        return False


@pytest.mark.parametrize("secs, asked", [(60.0, [4]), (0.0, [4, *range(5, 21)])])
def test_notices_are_checked_on_a_clock_after_the_first_check(tiny_cfg, secs, asked):
    """The workers' barrier for a notice and the all-reduce with it ran every 8 images, a host sync each
    time; after the first check (--notice_check_freq images) the next comes --notice_check_secs later, by
    the pace measured since the last: a minute ahead here asks once, no time asks after every step."""
    hook = CountedNotices()
    Trainer(tiny_cfg(name=f"clock{secs:.0f}", notice_check_freq=4, notice_check_secs=secs), progress_bar=False,
            hooks=[hook]).run()
    assert hook.asked == asked


def plateau_donor(tiny_cfg) -> Trainer:
    """A run on the plateau schedule, its rate reduced once, its pools holding 4 images."""
    donor = Trainer(tiny_cfg(name="donor", lr_policy="plateau", pool_size=4), progress_bar=False)
    donor.run()
    for opt in (donor.model.optimizer_G, donor.model.optimizer_D):
        for group in opt.param_groups:
            group["lr"] = donor.cfg.lr * 0.2  # as after one plateau step
    assert len(donor.model.fake_B_pool.images) == 4
    return donor


def test_a_state_is_restored_as_it_was_saved_whatever_the_options_now(tiny_cfg):
    """The core's restore puts back what was saved: a trainer built with another rate and pool size gets the
    saved rate and pools (a population-based sweep's clone takes its own in its hook: see
    tests/distributed/test_distributed.py)."""
    donor = plateau_donor(tiny_cfg)
    clone = Trainer(tiny_cfg(name="clone", lr_policy="plateau", pool_size=1, lr=donor.cfg.lr * 3), progress_bar=False)
    clone.restore(donor.state())
    assert clone.model.optimizer_G.param_groups[0]["lr"] == pytest.approx(donor.cfg.lr * 0.2)
    assert clone.model.optimizer_D.param_groups[0]["lr"] == pytest.approx(donor.cfg.lr * 0.2)
    assert clone.model.fake_B_pool.pool_size == 4 and len(clone.model.fake_B_pool.images) == 4
    assert all(torch.equal(a, b) for a, b in zip(clone.model.fake_B_pool.images, donor.model.fake_B_pool.images))
    a, b = weights(donor), weights(clone)
    assert all(torch.equal(a[k], b[k]) for k in a)
    clone.lock.release()
