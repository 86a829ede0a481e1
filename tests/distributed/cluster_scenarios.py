"""Node loss and spot preemption on a multi-node Ray cluster simulated on this machine.

Run as a script (never imported) by tests/distributed/test_distributed.py (a test session keeps one Ray instance
in its own process, so the multi-node cluster lives in this child process and is shut down here), with the
repository root on PYTHONPATH (for tests.helpers):

    PYTHONPATH=. python tests/distributed/cluster_scenarios.py CONFIG_JSON OUT_JSON

The training workers ask for a 'trainnode' resource that only the worker node has, so removing
that node takes them all; a replacement node with the same resource lets the run continue.
First a spot reclaim, announced: nobody drains the node by hand: the node's preemption watcher
(``cyclegan cluster watch-preemption``) reads a fake EC2 metadata service on 127.0.0.1 that
announces, mid-run, that the instance terminates in two minutes. Then the replacement node is
lost without notice.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.metadata import FakeInstanceMetadata  # the repository root is on PYTHONPATH
from tests.helpers.processes import stop, wait_for
from tests.helpers.ray_train import registered_results


def main(config_path: str, out_path: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from cyclegan.core.config import from_dict
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
    started = time.time()
    report: dict = {"timeline": {}}

    def mark(what: str) -> None:  # seconds since the run started, to see where a slow scenario spends them
        report["timeline"][what] = round(time.time() - started, 1)
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        # 1. The cloud announces the spot reclaim; the node's watcher drains it through Ray; the workers
        #    write a checkpoint at once; the node goes; a replacement comes and the run resumes.
        metadata = FakeInstanceMetadata()
        watcher = subprocess.Popen(
            [sys.executable, "-m", "cyclegan.cli", "cluster", "watch-preemption", "--provider", "aws",
             "--metadata_url", metadata.url, "--address", cluster.address, "--node_id", node.node_id,
             "--poll_s", "0.5"], env=dict(os.environ, RAY_AUTH_MODE="token"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: (storage_run / "train_opt.yaml").exists(), 240, "training to start")
            mark("training")
            metadata.reclaim(in_seconds=120)
            wait_for(lambda: watcher.poll() is not None, 60, "the watcher to drain the node")
            mark("drained")
            report["watcher"] = {"code": watcher.returncode, "output": watcher.stdout.read()[-2000:]}
            wait_for(lambda: [c for c in registered_results(storage_run) if c["metrics"]["preemption_notice"]],
                     60, "the checkpoint after the notice")
            mark("notice checkpoint")
        finally:
            stop(watcher)
            metadata.close()
        report["at_reclaim"] = [c["metrics"] for c in registered_results(storage_run)]
        cluster.remove_node(node, allow_graceful=False)
        mark("reclaimed")
        node = cluster.add_node(num_cpus=2, resources={"trainnode": 2})
        mark("replacement added")

        # 2. The replacement is lost without notice once the resumed run has registered a checkpoint.
        def resumed() -> list:
            return [c for c in registered_results(storage_run) if c["metrics"]["resumed_from_iters"] >= 0]
        wait_for(resumed, 240, "a checkpoint of the resumed run")
        report["at_loss"] = [c["metrics"] for c in registered_results(storage_run)]
        cluster.remove_node(node, allow_graceful=False)
        mark("lost")
        cluster.add_node(num_cpus=2, resources={"trainnode": 2})
        mark("second replacement added")
        thread.join(timeout=400)
        mark("finished")
        report["finished"] = not thread.is_alive()
        report.update(outcome)
        report["history"] = [c["metrics"] for c in registered_results(storage_run)]
    finally:
        Path(out_path).write_text(json.dumps(report, default=str))
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
