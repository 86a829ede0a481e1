"""Node loss and spot preemption on a multi-node Ray cluster simulated on this machine.

Run as a script by tests/test_distributed.py (a test session keeps one Ray instance in its own
process, so the multi-node cluster lives in this child process and is shut down here):

    python tests/cluster_scenarios.py node|spot CONFIG_JSON OUT_JSON

The training workers ask for a 'trainnode' resource that only the worker node has, so removing
that node takes them all; a replacement node with the same resource lets the run continue.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def kill_driver_when(args: list[str], ready, timeout: float, what: str, log_path=None) -> None:
    """Run ``python -m cyclegan.cli ARGS`` as a driver joined to a running Ray, SIGKILL it once ``ready()``
    holds, and reap it (killed as well if waiting failed)."""
    import os
    import signal
    import subprocess
    env = dict(os.environ, RAY_AUTH_MODE="token")  # the CLI joins a token-protected cluster
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        driver = subprocess.Popen([sys.executable, "-m", "cyclegan.cli", *args], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_for(ready, timeout, what)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
    finally:
        if log_path:
            log.close()


def checkpoint_states(storage_run: Path) -> list[dict]:
    import torch
    out = []
    for path in sorted(storage_run.glob("checkpoint_*/state.pt")):
        try:
            p = torch.load(path, weights_only=True)["progress"]
            out.append({"dir": path.parent.name, **{k: p[k] for k in ("epoch", "epoch_iter", "total_iters")}})
        except Exception:
            pass  # being written
    return out


def registered(storage_run: Path) -> set[str]:
    """Checkpoints Ray Train has registered (a just-reported one may not be yet: see ray-2.60 notes)."""
    try:
        snapshot = json.loads((storage_run / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return set()
    return {c["checkpoint_dir_name"] for c in snapshot.get("checkpoint_results", [])}


def main(scenario: str, config_path: str, out_path: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from cyclegan.config import from_dict
    from cyclegan.distributed.train import run

    values = json.loads(Path(config_path).read_text())
    cfg = from_dict(values)
    storage_run = Path(cfg.storage_path) / cfg.name
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=2, resources={"trainnode": 2})
    ray.init(address=cluster.address)
    outcome: dict = {}

    def train():
        try:
            outcome["result"] = run(cfg, progress_bar=False)
        except BaseException as e:  # reported to the test
            outcome["error"] = repr(e)
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    report = {}
    try:
        if scenario == "node":
            wait_for(lambda: len(registered(storage_run)) >= 2, 240, "two registered checkpoints")
            done = registered(storage_run)
            report["before_loss"] = [c for c in checkpoint_states(storage_run) if c["dir"] in done]
            cluster.remove_node(node, allow_graceful=False)
        else:  # spot: the autoscaler's notice, a deadline, then the node goes
            from ray.core.generated import autoscaler_pb2
            wait_for(lambda: (Path(cfg.checkpoints_dir) / cfg.name / "train_opt.yaml").exists(), 240,
                     "training to start")
            time.sleep(2)
            before = {c["dir"] for c in checkpoint_states(storage_run)}
            gcs = ray._raylet.GcsClient(address=cluster.address)
            accepted, _ = gcs.drain_node(node.node_id,
                                         autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                         "spot instance reclaimed", int(time.time() * 1000) + 20_000)
            report["drain_accepted"] = bool(accepted)
            wait_for(lambda: registered(storage_run) - before, 60, "the checkpoint after the notice")
            new = registered(storage_run) - before
            report["notice_checkpoint"] = [c for c in checkpoint_states(storage_run) if c["dir"] in new][0]
            cluster.remove_node(node, allow_graceful=False)
        cluster.add_node(num_cpus=2, resources={"trainnode": 2})
        thread.join(timeout=400)
        report["finished"] = not thread.is_alive()
        report.update(outcome)
        report["history"] = checkpoint_states(storage_run)
    finally:
        Path(out_path).write_text(json.dumps(report, default=str))
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
