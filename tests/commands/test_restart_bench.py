"""``cyclegan bench --restart``'s reading of a run's output and its CPU account (the run itself is a benchmark:
its figures are in BENCHMARKS.md, with the command)."""
import os

from cyclegan.commands.bench.restart import cpu_seconds, spent, watch

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

    def kill(pid):  # at the moment of the line read last, the 7th (each line read a second after the last)
        killed.append(pid)
        return 6.0
    marks = watch(enumerate(lines), workers=2, kill=kill)
    assert killed == [12]
    assert marks == {"process_group_s": 2.0, "restored_s": 4.0, "first_checkpoint_s": 6.0}


def test_a_run_that_ends_early_gives_the_marks_it_reached():
    saved = worker(11, "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)")
    assert watch(enumerate([saved] * 2), workers=1, kill=lambda pid: 0.0) == {}


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
