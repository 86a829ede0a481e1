"""A Ray cluster of separate nodes on this machine, as on a cloud: a head (`ray start --head`, no CPUs,
the `driver` resource) and a worker node (`ray start --address`) with its own working folder, temp
folder and Ray folder; jobs submitted through the Jobs API or drivers in a third folder; data and
results in the loopback S3 server.

Each node has its own disk here as on a cluster: whatever a run leaves in a node's folders would be lost
with the node. The test proves that a training run and a sweep leave everything in the bucket and
nothing on the nodes, that an elastic run takes the workers the cluster has, that a local dataroot is
refused on several nodes, that --use_gpu asks the cluster for GPUs, and that no credential travels
through Ray (state, logs, files)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import ray_autoscaler
from tests.helpers.events import read_events
from tests.helpers.leaks import places_holding
from tests.helpers.processes import processes_mentioning, stop, stop_processes_mentioning, wait_for
from tests.helpers.ray_nodes import DRAIN_S, start_blocking_ray_node, start_ray_node
from tests.helpers.s3 import put_bad_objects, upload_pair

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]

TINY = ["--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24",
        "--seed", "3", "--cpus_per_worker", "0.5", "--num_threads", "0"]
GENERATOR = ["--netG", "resnet_6blocks", "--ngf", "4", "--crop_size", "24", "--cpus_per_worker", "0.5"]  # translate's


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Head and worker node, each with its own folders (short paths: Ray's socket paths are limited)."""
    root = Path(tempfile.mkdtemp(prefix="cg-mn-"))
    folders = {name: root / name for name in ("node_work", "node_tmp", "driver_work", "driver_tmp", "caches")}
    for folder in folders.values():
        folder.mkdir()
    # The Train run state (what the dashboard serves while a run lives) is kept, to be searched too;
    # torch's kernel cache (which it makes in the temp folder of any process that builds an optimizer)
    # is the node's, not a run's: it has its own folder.
    state = dict(os.environ, RAY_TRAIN_ENABLE_STATE_TRACKING="1", TORCHINDUCTOR_CACHE_DIR=str(folders["caches"]))
    head = start_ray_node("cg-hd-", args=("--num-cpus", "0", "--resources", '{"driver": 1}'), env=state)
    node = None
    try:
        node = start_ray_node("cg-nd-", head=head.gcs, cwd=folders["node_work"],
                              args=("--num-cpus", "2", "--resources", '{"trainnode": 2}'),
                              env=dict(state, TMPDIR=str(folders["node_tmp"])))
        yield {"gcs": head.gcs, "dashboard": head.dashboard, "ray_folders": [head.temp, node.temp], **folders}
    finally:
        for temp in (node and node.temp, head.temp):
            if temp:
                stop_ray_node(temp)
                shutil.rmtree(temp, ignore_errors=True)
                assert not processes_mentioning(temp)
        shutil.rmtree(root, ignore_errors=True)


def stop_ray_node(temp: str) -> None:
    """Every process of the node whose temp folder is ``temp``, in `ray stop`'s order: the raylet, then the
    other processes, the GCS last. A head's processes stopped all at once outlive their SIGTERM (its
    raylet and autoscaler wait for the GCS that went with them), and were only SIGKILLed 10 s later."""
    def program(pid: int) -> str:
        try:
            return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
        except OSError:
            return ""
    for stage in (lambda name: name == "raylet", lambda name: name != "gcs_server"):
        pids = [pid for pid in processes_mentioning(temp) if stage(program(pid))]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not set(pids) & set(processes_mentioning(temp)), 10, f"processes of {temp} to end")
    stop_processes_mentioning(temp)  # the GCS, and whatever is left (SIGKILLed after 10 s)


def driver(cluster, *args, timeout=600):
    """``cyclegan ARGS`` as a driver process in its own folder, joined to the cluster."""
    return drivers(cluster, args, timeout=timeout)[0]


def drivers(cluster, *runs, timeout=600) -> list[subprocess.CompletedProcess]:
    """``driver`` for each of ``runs`` (argument lists), as processes running at the same time."""
    procs = [start_driver(cluster, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in runs]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
        return [subprocess.CompletedProcess(proc.args, proc.returncode, *output) for proc, output in zip(procs, outputs)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def start_driver(cluster, *args, stdout, stderr) -> subprocess.Popen:
    """``driver`` started: its output (text) goes to ``stdout`` and ``stderr``."""
    env = dict(os.environ, RAY_AUTH_MODE="token", TMPDIR=str(cluster["driver_tmp"]),
               RAY_TRAIN_ENABLE_STATE_TRACKING="1", TORCHINDUCTOR_CACHE_DIR=str(cluster["caches"]))
    return subprocess.Popen([sys.executable, "-m", "cyclegan.cli", *args, "--address", cluster["gcs"]],
                            cwd=cluster["driver_work"], env=env, stdout=stdout, stderr=stderr, text=True)


def left_on(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def submit_job(cluster, job_id: str, *args) -> str:
    """``ray job submit`` of ``cyclegan ARGS`` with the project as the job's working dir (as the README's
    `ray job submit --working-dir .`), followed to its end; returns its logs (asserted successful)."""
    return follow_job(cluster, start_job(cluster, job_id, *args))


def start_job(cluster, job_id: str, *args) -> str:
    """``submit_job`` without following it: returns the job's id."""
    ray = str(Path(sys.executable).parent / "ray")
    env = dict(os.environ, RAY_ADDRESS=cluster["dashboard"], TMPDIR=str(cluster["driver_tmp"]))
    runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", ".git", "checkpoints", "results", "sweeps",
                                                          "reports", "tests", "**/__pycache__"]}
    submit = subprocess.run([ray, "job", "submit", "--submission-id", job_id, "--no-wait", "--runtime-env-json",
                             json.dumps(runtime_env), "--", sys.executable, "-m", "cyclegan.cli", *args],
                            env=env, cwd=cluster["driver_work"], capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr[-2000:]
    return job_id


def follow_job(cluster, job_id: str) -> str:
    """A submitted job followed to its end, as `ray job logs --follow` and `ray job status` do (with their
    SDK client, in this process: no CLI processes importing Ray); returns its logs (asserted successful)."""
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient
    client = JobSubmissionClient(cluster["dashboard"])

    async def follow() -> str:
        return "".join([lines async for lines in client.tail_job_logs(job_id)])  # ends when the job ends
    logs = asyncio.run(asyncio.wait_for(follow(), 600))
    status = client.get_job_status(job_id)
    assert status == JobStatus.SUCCEEDED, (status, logs[-3000:])
    return logs


def test_runs_and_sweeps_keep_everything_in_storage_and_nothing_on_the_nodes(cluster, s3, s3_secret, tiny_pair):
    s3.mkdir("mn-bucket")
    upload_pair(s3, tiny_pair, "mn-bucket/seasons")
    put_bad_objects(s3, "mn-bucket/seasons/trainA")

    # Training as a job (its driver on the head): 1 to 3 workers, of which the worker node's 2 CPUs hold
    # 2 (0.75 each) beside the data tasks, so the run goes ahead with 2; data with unreadable objects in
    # the bucket, everything the run writes to the bucket. Followed once the refusals below are checked.
    job = start_job(cluster, f"cyclegan-mn-{os.getpid()}", "train", "--dataroot", "s3://mn-bucket/seasons",
                    "--name", "run", "--num_workers", "1-3", "--worker_resources", '{"trainnode": 1}',
                    "--n_epochs", "1", "--n_epochs_decay", "0", "--save_latest_freq", "4",
                    "--storage_path", "s3://mn-bucket/runs", *TINY, "--cpus_per_worker", "0.75")

    # Meanwhile, a local dataroot: every node has its own disk, so it is refused before anything starts. So
    # is a local folder of images to translate on the cluster (tasks on the other node read them). Two
    # drivers at once.
    refused, refused_translate = drivers(
        cluster, ["train", "--dataroot", str(tiny_pair), "--name", "local", "--num_workers", "1",
                  "--storage_path", "s3://mn-bucket/runs", *TINY],
        ["translate", "--generator", "s3://mn-bucket/none/latest_net_G.pth", "--input", str(tiny_pair / "testA"),
         "--output", "s3://mn-bucket/translated", "--num_workers", "1", *GENERATOR])
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"dataroot: '{tiny_pair}' is a local folder, and this Ray cluster has 2 nodes" in refused.stderr
    assert "cyclegan data upload" in refused.stderr and "--shared_filesystem" in refused.stderr
    refused = refused_translate
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"input: '{tiny_pair / 'testA'}' is a local folder, and this Ray cluster has 2 nodes" in refused.stderr

    logs = follow_job(cluster, job)
    assert "skipped 3 unreadable file(s)" in logs
    result = json.loads([line for line in logs.splitlines() if line.startswith('{"epochs"')][-1])
    # 12 A images (10 + RGBA + 16-bit) and 10 B: an epoch of 12 samples, 6 per worker; read from the bucket.
    assert result["skipped_images"] == 3 and result["total_iters"] == 6 and result["world_size"] == 2
    run = "mn-bucket/runs/run"
    for name in ("train_opt.yaml", "result.json", "latest_net_G_A.pth", "latest_net_D_B.pth", "cyclegan_config.yaml"):
        assert s3.exists(f"{run}/{name}"), name
    assert torch.load(io.BytesIO(s3.cat(f"{run}/latest_net_G_B.pth")), weights_only=True)
    assert s3.glob(f"{run}/tensorboard/events.out.tfevents.*")
    states = sorted(s3.glob(f"{run}/checkpoint_*/state.pt"))
    assert 1 <= len(states) <= 3  # keep_checkpoints
    state = torch.load(io.BytesIO(s3.cat(states[-1])), weights_only=True)
    # Each worker saved its own image pools and random streams beside the shared state.
    assert state["progress"]["epoch"] == 2 and "ranks" not in state
    for rank in (0, 1):
        own = torch.load(io.BytesIO(s3.cat(states[-1].replace("state.pt", f"rank_{rank}.pt"))), weights_only=True)
        assert set(own) == {"pools", "gp_rng", "rng"}
    reported = json.loads(s3.cat(f"{run}/checkpoint_manager_snapshot.json"))["checkpoint_results"][-1]["metrics"]
    assert {"loss_G_A", "loss_D_B", "loss_cycle_A", "lr", "total_iters"} <= set(reported)
    for folder in ("node_work", "node_tmp", "driver_work"):
        assert left_on(cluster[folder]) == [], folder

    # A sweep whose trials drive Ray Train runs: the trial drivers can only run on the head (the only
    # node with "driver"), their workers on the worker node; a built-in pair, results in the bucket.
    experiment = {"name": "mnsweep", "storage_path": "s3://mn-bucket/sweeps", "datasets": ["fruit"],
                  "base": {"netG": "resnet_6blocks", "ngf": 4, "ndf": 4, "builtin_size": 24, "builtin_count": 8,
                           "load_size": 28, "crop_size": 24, "n_epochs": 1, "n_epochs_decay": 0,
                           "num_threads": 0, "num_workers": "1", "cpus_per_worker": 0.5,
                           "worker_resources": '{"trainnode": 1}'},
                  "space": {"lambda_cycle": {"loguniform": [1, 30]}},
                  "search": {"num_samples": 1, "max_concurrent_trials": 1, "scheduler": "none", "eval_images": 4,
                             "grid_images": 1}}
    (cluster["driver_tmp"] / "exp.yaml").write_text(yaml.safe_dump(experiment))

    # Meanwhile --use_gpu asks the cluster for GPUs (an autoscaler would start GPU nodes): the demand is
    # visible. (The sweep asks for no GPU, and a pending demand holds no resources.)
    env = dict(os.environ, RAY_AUTH_MODE="token", TMPDIR=str(cluster["driver_tmp"]))
    gpu_run = subprocess.Popen([sys.executable, "-m", "cyclegan.cli", "train", "--dataroot", "s3://mn-bucket/seasons",
                                "--name", "gpu", "--num_workers", "1", "--use_gpu", "--storage_path",
                                "s3://mn-bucket/runs", "--address", cluster["gcs"], *TINY],
                               cwd=cluster["driver_work"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        sweep_run = start_driver(cluster, "sweep", str(cluster["driver_tmp"] / "exp.yaml"), stdout=out, stderr=err)
        try:
            try:
                wait_for(lambda: gpu_demand(cluster["gcs"]), 180, "a pending demand for a GPU")
            finally:
                stop(gpu_run)
            sweep_run.wait(timeout=600)
        finally:
            if sweep_run.poll() is None:
                sweep_run.kill()
                sweep_run.wait()
        err.seek(0)
        swept = subprocess.CompletedProcess(sweep_run.args, sweep_run.returncode, "", err.read())
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert "sweep 'mnsweep': starting in s3://mn-bucket/sweeps/mnsweep" in swept.stderr
    sweep = "mn-bucket/sweeps/mnsweep"
    trials = [p for p in s3.ls(sweep, refresh=True) if p.rsplit("/", 1)[-1].startswith("fruit_")]
    assert len(trials) == 1
    trial = trials[0]
    results = [json.loads(line) for line in s3.cat(f"{trial}/result.json").decode().splitlines() if line.strip()]
    assert results[-1]["total_iters"] == 8 and "l1" in results[-1]  # reported through Train to Tune
    assert json.loads(s3.cat(f"{trial}/params.json"))["pair"] == "fruit"
    # The trial's TensorBoard run, written by the Train worker on the worker node, read back from the bucket.
    events = cluster["driver_tmp"] / "events"
    events.mkdir()
    for path in s3.glob(f"{trial}/events.out.tfevents.*"):
        s3.get(path, str(events / path.rsplit("/", 1)[-1]))
    found = read_events(events)
    shutil.rmtree(events)
    assert "hparams/l1" in found["scalars"] and {"test/AtoB", "test/BtoA"} <= found["images"] and found["hparams"]
    states = s3.glob(f"{trial}/train/checkpoint_*/state.pt")
    assert states and all(s3.exists(state.replace("state.pt", "sweep.json")) for state in states)
    assert torch.load(io.BytesIO(s3.cat(states[-1])), weights_only=True)["progress"]["total_iters"] == 8
    assert s3.exists(f"{sweep}/experiment.yaml") and s3.glob(f"{sweep}/_builtin/fruit_24px_8/pair.json")
    # A RayJob's retry (backoffLimit) submits the same entrypoint again: the sweep continues, nothing of
    # the finished trial is run or reported again.
    logs = submit_job(cluster, f"cyclegan-mn-retry-{os.getpid()}", "sweep", str(cluster["driver_tmp"] / "exp.yaml"))
    (cluster["driver_tmp"] / "exp.yaml").unlink()
    assert "sweep 'mnsweep': continuing in s3://mn-bucket/sweeps/mnsweep (the same experiment)" in logs
    assert [p for p in s3.ls(sweep, refresh=True) if p.rsplit("/", 1)[-1].startswith("fruit_")] == [trial]
    assert [json.loads(line) for line in s3.cat(f"{trial}/result.json").decode().splitlines() if line.strip()] \
        == results
    for folder in ("node_work", "node_tmp", "driver_work"):
        assert left_on(cluster[folder]) == [], folder

    # `cyclegan cluster watch-preemption --provider kubernetes` (a preStop hook, for pods whose container
    # does not run `ray start --block`) drains the node through Ray (reason preemption): the node is
    # draining (nothing new is placed there), or already gone when nothing ran on it.
    from ray.autoscaler.v2.sdk import get_cluster_status
    from ray.util.state import list_nodes
    node = [n for n in list_nodes(address=cluster["dashboard"], detail=True) if not n.is_head_node][0]
    drained = subprocess.run([sys.executable, "-m", "cyclegan.cli", "cluster", "watch-preemption", "--provider",
                              "kubernetes", "--address", cluster["gcs"], "--node_id", node.node_id,
                              "--grace_period_s", "20"], env=dict(os.environ, RAY_AUTH_MODE="token"),
                             capture_output=True, text=True, timeout=120)
    assert drained.returncode == 0 and "preemption notice: pod termination" in drained.stdout, drained.stderr[-2000:]

    def drained():
        status = get_cluster_status(cluster["gcs"])
        statuses = {n.node_id: n.node_status for n in status.active_nodes + status.idle_nodes}
        return statuses.get(node.node_id, "DEAD") in ("DRAINING", "DEAD")
    wait_for(drained, 60, "the node to be drained")

    # No credential anywhere: the secret key is in no Ray state, log or file, and in no object.
    hits = places_holding(s3_secret, folders=[*cluster["ray_folders"], cluster["node_tmp"], cluster["driver_tmp"]],
                          s3=s3, buckets=["mn-bucket"], dashboard=cluster["dashboard"])
    assert hits == []


def gpu_demand(gcs: str) -> bool:
    """Whether the cluster has a pending resource demand that asks for a GPU (what an autoscaler serves):
    the "Demands:" of `ray status` (the autoscaler's last report in the GCS, formatted by the function
    `ray status` uses), read in this process: a `ray status` process per poll would take the CPUs from
    the sweep running meanwhile."""
    return "GPU" in ray_autoscaler.demand_report(gcs)


def test_a_pods_sigterm_drains_its_node_and_the_run_checkpoints_before_it_goes(cluster, s3, tiny_pair):
    """KubeRay's worker container runs `ray start --block`; Kubernetes stops a pod (its spot node reclaimed,
    an eviction) with SIGTERM, and Ray 2.60 then drains the node itself, reason preemption, for up to
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S. Ray Train's workers see that drain as a preemption notice:
    they write a checkpoint at once, registered before the node goes. So the manifests need no preStop
    hook, only a drain timeout and a termination grace period that fit a checkpoint."""
    import time

    s3.mkdir("mn-pod")
    upload_pair(s3, tiny_pair, "mn-pod/seasons")
    state = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cluster["caches"]),
                 RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=str(DRAIN_S))
    pod, temp = start_blocking_ray_node("cg-pod-", cluster["gcs"], cluster["dashboard"], "podnode",
                                        args=("--num-cpus", "2", "--resources", '{"podnode": 2}'), env=state)
    env = dict(os.environ, RAY_AUTH_MODE="token", TMPDIR=str(cluster["driver_tmp"]))
    run = subprocess.Popen([sys.executable, "-m", "cyclegan.cli", "train", "--dataroot", "s3://mn-pod/seasons",
                            "--name", "pod", "--num_workers", "2", "--worker_resources", '{"podnode": 1}',
                            "--n_epochs", "40", "--n_epochs_decay", "0", "--save_epoch_freq", "1",
                            "--save_latest_freq", "1000", "--notice_check_secs", "0.5", "--storage_path",
                            "s3://mn-pod/runs", "--address", cluster["gcs"], *TINY], cwd=cluster["driver_work"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def registered():
        try:
            return json.loads(s3.cat("mn-pod/runs/pod/checkpoint_manager_snapshot.json"))["checkpoint_results"]
        except (FileNotFoundError, ValueError, KeyError):
            return []
    try:
        wait_for(lambda: registered() or run.poll() is not None, 300, "the run's first checkpoint")
        assert run.poll() is None, "the run ended before its node was stopped"
        sent = time.monotonic()
        pod.send_signal(signal.SIGTERM)  # what Kubernetes sends the container
        wait_for(lambda: any(c["metrics"].get("preemption_notice") for c in registered()), DRAIN_S + 10,
                 "a checkpoint written on the drain's notice")
        checkpointed = time.monotonic() - sent
        assert pod.poll() is None  # still draining: the checkpoint came inside the drain
        print(f"SIGTERM -> notice checkpoint registered {checkpointed:.1f} s (drain timeout {DRAIN_S} s)")
        assert checkpointed < DRAIN_S
        # Ray then holds the node until the drain times out (Ray Train keeps the group on a preempted node
        # until it goes: BENCHMARKS.md); Kubernetes' SIGKILL at the grace period's end is all that is left,
        # to every process of the container (`ray start --block`, the raylet, the workers).
        for pid in processes_mentioning(temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        stop(run)
        stop(pod)
        stop_processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
