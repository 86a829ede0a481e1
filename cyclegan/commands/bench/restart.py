"""``cyclegan bench --restart``: the Ray Train run these options describe, one of its workers killed (SIGKILL)
after the run's third checkpoint, as a lost node's would be: seconds from the kill to the new worker group's
process group, its restore and its first checkpoint (training is seen going on), and the CPU seconds every
process spent meanwhile (from /proc, where there is one). ``cyclegan train`` runs as a user runs it, in a
temporary folder, removed after."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Optional

import yaml

from ...core.config import Config, ConfigError
from ...core.errors import UserError
from ...distributed.ray_internals import TRAIN_CHECKPOINT_LINE, TRAIN_PROCESS_GROUP_LINE, TRAIN_WORKER_PREFIX
from ...distributed.scratch import remove_stale_scratch

# What the run prints, the marks are taken from: Ray's prefix of a worker's lines (with the node's address
# when it is not the driver's), Ray Train's line for each worker's registered checkpoint and for a group's
# process group (Ray's own lines: see ray_internals), and the worker's own line on its restore.
RESTORED = re.compile(r"worker \d+ resumed at epoch")
KILL_AFTER = 3  # checkpoints


def watch(lines: Iterable[tuple[float, str]], workers: int, kill: Callable[[int, Optional[str]], float]) -> dict:
    """From the run's output lines (each with the moment it was read): kill (``kill(pid, ip)``, ip None on
    the driver's node, which returns the moment) the worker whose line completes the ``KILL_AFTER``-th
    checkpoint (each worker prints one per checkpoint), then the seconds from the kill to the restarted
    group's marks, until its first checkpoint."""
    killed: Optional[float] = None
    saved, marks = 0, {}
    for now, line in lines:
        if killed is None:
            worker = TRAIN_WORKER_PREFIX.search(line)
            if TRAIN_CHECKPOINT_LINE in line and worker:
                saved += 1
                if saved >= KILL_AFTER * workers:
                    killed = kill(int(worker.group(1)), worker.group(2))
            continue
        if TRAIN_PROCESS_GROUP_LINE in line:
            marks.setdefault("process_group_s", round(now - killed, 2))
        elif "process_group_s" in marks and RESTORED.search(line):
            marks.setdefault("restored_s", round(now - killed, 2))
        elif "process_group_s" in marks and TRAIN_CHECKPOINT_LINE in line:
            marks["first_checkpoint_s"] = round(now - killed, 2)
            break
    return marks


def parent_pid(pid: int) -> Optional[int]:
    """A process's parent, from /proc (from ps where there is none); None once it is gone."""
    if not os.path.isdir("/proc"):
        found = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True).stdout
        return int(found) if found.strip().isdigit() else None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descends_from(pid: int, root: int) -> bool:
    """Whether ``pid`` is a child, grandchild ... of ``root`` on this host (``root`` itself is not)."""
    seen = {pid}
    while (pid := parent_pid(pid)) not in (None, 0) and pid not in seen:
        if pid == root:
            return True
        seen.add(pid)
    return False


def kill_own_worker(pid: int, ip: Optional[str], run: int) -> float:
    """SIGKILL the worker ``pid`` of the run (process ``run``), and the moment; only a process of that run
    on this host: a pid from the run's output names a process of another node when the line has an ip,
    and any process at all here otherwise (the run joined a cluster it did not start, or a pid was reused)."""
    if ip is not None or not descends_from(pid, run):
        where = f"on {ip}" if ip is not None else "not started by this benchmark's run"
        raise UserError(f"--restart: the worker to kill (pid {pid}) is {where}; it kills only a worker its "
                        f"own run started on this host (give no --address); nothing was killed")
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def cpu_seconds() -> dict[int, tuple[float, str]]:
    """Every process's CPU seconds so far (user and system) and its name, where /proc has them."""
    if not os.path.isdir("/proc"):
        return {}
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            name = (title.split(" (")[0].split() or [f"[{Path(f'/proc/{pid}/comm').read_text().strip()}]"])[0]
            if name.startswith("ray::"):  # an actor's title: its class, then the method it runs now, if any
                name = name.split(".")[0]
            out[int(pid)] = ((int(fields[11]) + int(fields[12])) / tick, Path(name).name)
        except (OSError, ValueError, IndexError):  # gone meanwhile
            pass
    return out


def spent(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per kind of process between two snapshots, largest first (processes started meanwhile
    counted whole; those that ended meanwhile are missing)."""
    by_name: Counter = Counter()
    for pid, (cpu, name) in after.items():
        by_name[name] += cpu - before.get(pid, (0.0, name))[0]
    return {name: round(s, 2) for name, s in by_name.most_common() if s >= 0.05}


def bench_restart(cfg: Config, repeats: int = 3) -> list[dict]:
    """One JSON line per repeat: the marks (``watch``) and the CPU seconds spent from the kill to the
    restarted group's first checkpoint."""
    if cfg.max_workers < 1:
        raise ConfigError("num_workers: --restart kills a Ray Train worker; give --num_workers 1 or more")
    defaults = Config().to_dict()  # the options file holds only what differs: an older cyclegan reads it too
    figures = []
    for repeat in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="cyclegan-bench-restart-"))
        try:
            options = folder / "options.yaml"
            run_cfg = dataclasses.replace(cfg, checkpoints_dir=str(folder / "runs"), storage_path=str(folder / "runs"),
                                          name="restart")
            options.write_text(yaml.safe_dump({k: v for k, v in run_cfg.to_dict().items() if v != defaults.get(k)}))
            env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")  # every worker's lines, at once
            run = subprocess.Popen([sys.executable, "-m", "cyclegan.cli", "train", "--config", str(options)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=folder)  # the cyclegan installed (or on PYTHONPATH), not this folder's
            snapshots = {}

            def kill(pid: int, ip: Optional[str]) -> float:
                snapshots["before"] = cpu_seconds()
                return kill_own_worker(pid, ip, run.pid)
            try:
                marks = watch(((time.monotonic(), line) for line in run.stdout), cfg.max_workers, kill)
                after = cpu_seconds()
            finally:
                run.send_signal(signal.SIGINT)  # the command stops Ray and ends
                try:
                    run.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    run.kill()
                    run.wait()
                run.stdout.close()
                remove_stale_scratch(wait_s=10.0)  # the killed worker's working folder
            line = {"repeat": repeat, "num_workers": cfg.num_workers, "data_ingest": cfg.data_ingest, **marks}
            if "first_checkpoint_s" in marks and "before" in snapshots:
                line["cpu_s"] = spent(snapshots["before"], after)
                line["cpu_s_total"] = round(sum(line["cpu_s"].values()), 2)
            elif "before" not in snapshots:
                line["error"] = f"the run ended before its checkpoint {KILL_AFTER}: give it more epochs"
            else:
                line["error"] = "the run ended before the restarted group's first checkpoint: give it more epochs"
            figures.append(line)
            print(json.dumps(line), flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return figures
