"""`cyclegan train` as a process: the files a run writes follow the umask, and a second writer of a run is
refused. The trainer itself: tests/core/test_training.py."""
import pytest

from cyclegan.core import checkpoint as ckpt
from cyclegan.core.config import from_dict
from cyclegan.core.trainer import Trainer

TINY_RUN = dict(netG="resnet_6blocks", ngf=4, ndf=4, load_size=24, crop_size=24, num_threads=0, tensorboard=False,
                eval_at_end=False, n_epochs=20, n_epochs_decay=0, save_latest_freq=2)


@pytest.mark.slow  # an end-to-end command run
def test_run_files_follow_the_umask(tiny_pair, tmp_path):
    """Checkpoints came out 0600 whatever the umask (a team's shared results folder could not read them)."""
    import os
    import stat
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "cyclegan.cli", "train", "--dataroot", str(tiny_pair), "--name", "umask",
                          "--checkpoints_dir", str(tmp_path), "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4",
                          "--load_size", "24", "--crop_size", "24", "--n_epochs", "1", "--n_epochs_decay", "0",
                          "--num_threads", "0", "--no-tensorboard"],
                         capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o002))
    assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / "umask"
    written = [*ckpt.state_files(folder), folder / "latest_net_G_A.pth", folder / "train_opt.yaml",
               folder / "result.json"]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: "0o664" for p in written}


@pytest.mark.slow  # an end-to-end command run
def test_a_second_writer_of_a_run_is_refused_at_once_naming_the_run_and_the_holder(tiny_pair, tmp_path):
    """Two `cyclegan train` runs with one --name and --checkpoints_dir both ran to exit 0, their states
    interleaved and each pruned the other's checkpoints."""
    import json
    import os
    import subprocess
    import sys

    from tests.helpers.processes import wait_for
    flags = ["--dataroot", str(tiny_pair), "--name", "shared", "--checkpoints_dir", str(tmp_path), "--netG",
             "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "24", "--crop_size", "24",
             "--num_threads", "0", "--no-tensorboard", "--no-eval_at_end", "--save_latest_freq", "2"]
    cli = [sys.executable, "-m", "cyclegan.cli", "train"]
    first = subprocess.Popen([*cli, *flags, "--seed", "1", "--n_epochs", "20", "--n_epochs_decay", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "shared" / ckpt.LOCK_FILE
    try:
        def held():
            try:
                return json.loads(lock.read_text() or "{}").get("pid") == first.pid
            except (OSError, ValueError):
                return False
        wait_for(lambda: held() or first.poll() is not None, 120, "the first run's lock")
        assert first.poll() is None, first.stderr.read()[-2000:]
        # The same run again while the first still runs (a retried job; it logs at another pace): the rerun
        # rule would continue the run, and the lock refuses a second writer.
        second = subprocess.run([*cli, *flags, "--seed", "1", "--n_epochs", "20", "--n_epochs_decay", "0",
                                 "--print_freq", "7"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: name: the run {tmp_path / 'shared'} is being written by another process "
                               f"(pid {first.pid} on ")
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=60)
    # Everything in the run is the first run's: the second wrote nothing.
    saved = [ckpt.load_state(p)["config"]["print_freq"] for p in ckpt.state_files(tmp_path / "shared")]
    assert saved and set(saved) == {100}
    assert "print_freq: 100" in (tmp_path / "shared" / "train_opt.yaml").read_text()
    # The first was killed: its lock went with it, and the next start takes the run over.
    Trainer(from_dict(dict(TINY_RUN, dataroot=str(tiny_pair), checkpoints_dir=str(tmp_path), name="shared",
                           seed=1, continue_train=True)), progress_bar=False).lock.release()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
