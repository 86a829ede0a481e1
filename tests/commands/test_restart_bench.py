"""``cyclegan bench --restart``'s reading of a run's output and its CPU account (the run itself is a benchmark:
its figures are in BENCHMARKS.md, with the command)."""
import os
import signal
import subprocess
import sys

import pytest

from cyclegan.commands.bench.restart import cpu_seconds, descends_from, kill_own_worker, spent, watch
from cyclegan.core.errors import UserError

COLOR, RESET = "\x1b[36m", "\x1b[0m"  # Ray's colouring of a worker's prefix


def worker(pid, text):
    return f"{COLOR}(RayTrainWorker pid={pid}){RESET} {text}"


def test_the_worker_that_completes_the_third_checkpoint_is_killed_and_the_restart_is_timed_from_then():
    saved = "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)"
    lines = [worker(11, "Setting up process group for: env:// [rank=0, world_size=2]")]
    for _ in range(3):  # two workers, one line each per checkpoint
        lines += [worker(11, saved), worker(12, saved)]
    lines += [f"{COLOR}(TrainController pid=9){RESET} A worker health check failed.",
              worker(21, "Setting up process group for: env:// [rank=0, world_size=2]"),
              worker(22, "Setting up process group for: env:// [rank=1, world_size=2]"),
              worker(21, "worker 0 resumed at epoch 2, image 3"),
              "epoch 2/20:  60%|######    | 3/5",
              worker(21, saved), worker(22, saved), "never read"]
    killed = []

    def kill(pid, ip):  # at the moment of the line read last, the 7th (each line read a second after the last)
        killed.append((pid, ip))
        return 6.0
    marks = watch(enumerate(lines), workers=2, kill=kill)
    assert killed == [(12, None)]
    assert marks == {"process_group_s": 2.0, "restored_s": 4.0, "first_checkpoint_s": 6.0}


def test_a_run_that_ends_early_gives_the_marks_it_reached():
    saved = worker(11, "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)")
    assert watch(enumerate([saved] * 2), workers=1, kill=lambda pid, ip: 0.0) == {}


def test_the_cpu_account_counts_this_process_and_new_ones_whole():
    before = cpu_seconds()
    assert os.getpid() in before
    sum(i * i for i in range(3_000_000))  # some CPU in this process
    after = dict(cpu_seconds())
    after[-1] = (0.5, "newcomer")  # a process started meanwhile
    account = spent(before, after)
    assert account["newcomer"] == 0.5
    mine = after[os.getpid()][1]
    assert account.get(mine, 0) > 0


def test_only_a_worker_of_the_benchs_own_run_on_this_host_is_killed(tmp_path):
    """The pid in a worker's line was SIGKILLed whatever it named: a process of another node (its line has
    ``ip=``), or any process here. Only a descendant of the run the bench started is killed now."""
    saved = "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)"
    # The bench's run (as `cyclegan train` is): it starts a worker of its own and says its pid.
    run = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; w = subprocess.Popen(['sleep', '600']); "
                            "print(w.pid, flush=True); w.wait()"], stdout=subprocess.PIPE, text=True)
    unrelated = subprocess.Popen(["sleep", "600"])  # this test's own: no part of the run
    own = None
    try:
        own = int(run.stdout.readline())

        def lines(*texts):
            return enumerate(texts * 3)  # one worker, a line per checkpoint
        with pytest.raises(UserError, match=rf"pid {unrelated.pid}\) is not started by this benchmark's run"):
            watch(lines(worker(unrelated.pid, saved)), 1, lambda pid, ip: kill_own_worker(pid, ip, run.pid))
        remote = f"{COLOR}(RayTrainWorker pid={unrelated.pid}, ip=10.0.0.9){RESET} {saved}"
        with pytest.raises(UserError, match=rf"pid {unrelated.pid}\) is on 10.0.0.9; it kills only"):
            watch(lines(remote), 1, lambda pid, ip: kill_own_worker(pid, ip, run.pid))
        with pytest.raises(UserError, match=r"not started by this benchmark's run"):
            kill_own_worker(run.pid, None, run.pid)  # the run itself is no worker
        assert unrelated.poll() is None and run.poll() is None
        watch(lines(worker(own, saved)), 1, lambda pid, ip: kill_own_worker(pid, ip, run.pid))
        assert run.wait(timeout=60) == 0  # its worker was killed: the run's wait ended
    finally:
        if own and descends_from(own, run.pid):  # still the run's worker: stopped before the run
            os.kill(own, signal.SIGKILL)
        for proc in (unrelated, run):
            proc.kill()
            proc.wait()
        run.stdout.close()
