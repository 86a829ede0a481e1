"""Node loss and spot preemption on a multi-node Ray cluster simulated on this machine.

Run as a script (never imported) by tests/test_distributed.py (a test session keeps one Ray instance in its own
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

from helpers import checkpoint_states, registered, wait_for  # this script's folder is on sys.path


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
