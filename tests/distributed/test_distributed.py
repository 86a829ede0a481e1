"""The Ray layer: Ray Train workers, Ray Data streams from a real S3 API server, checkpoints in the bucket."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from cyclegan.core.config import from_dict
from cyclegan.core.data import DataError
from cyclegan.core.storage import Storage

from tests.helpers.processes import kill_driver_when, stop, wait_for
from tests.helpers.ray_train import registered, registered_results
from tests.helpers.s3 import put_bad_objects, start_moto_server, upload_pair

pytestmark = pytest.mark.slow

TINY_FLAGS = ["--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24",
              "--seed", "3", "--cpus_per_worker", "0.5"]


@pytest.fixture(scope="module")
def bucket(s3, tiny_pair):
    s3.mkdir("cyclegan-test")
    upload_pair(s3, tiny_pair, "cyclegan-test/seasons")
    put_bad_objects(s3, "cyclegan-test/seasons/trainA")
    return "cyclegan-test"


def test_an_image_missing_on_the_node_that_reads_it_is_not_taken_for_a_bad_image(ray_session, tiny_pair,
                                                                                  tmp_path, monkeypatch):
    """A local dataroot on a cluster: the driver lists files that another node's disk does not have."""
    from cyclegan.distributed import streams
    listed = streams.list_with_versions
    monkeypatch.setattr(streams, "list_with_versions", lambda uri, store, max_size: listed(uri, store, max_size)
                        + [(str(tmp_path / "on-another-disk.png"), 100, 0)])
    cfg = from_dict(dict(FT, dataroot=str(tiny_pair), name="missing", checkpoints_dir=str(tmp_path)))
    with pytest.raises(DataError, match=r"on-another-disk.png: listed by the driver but not found on node .*"
                                        r"upload it with 'cyclegan data upload'.*--shared_filesystem"):
        streams.scan_domains(cfg, Storage.from_options())


def test_a_scan_is_kept_as_a_manifest_and_reused_until_the_listing_changes(ray_session, tiny_pair, tmp_path,
                                                                          monkeypatch):
    import ray.data

    from cyclegan.distributed import streams
    data = tmp_path / "data"
    shutil.copytree(tiny_pair, data)
    (data / "trainA" / "broken.png").write_bytes(b"not an image")
    cfg = from_dict(dict(FT, dataroot=str(data), name="scan", checkpoints_dir=str(tmp_path)))
    store, manifests = Storage.from_options(), str(tmp_path / "storage")
    first = streams.scan_domains(cfg, store, manifests)
    assert first.skipped == 1 and len(list((tmp_path / "storage" / "_scans").glob("*.json"))) == 2
    with monkeypatch.context() as m:  # no Ray Data job this time: both domains come from their manifests
        m.setattr(ray.data, "from_items", lambda *a, **k: pytest.fail("scanned again"))
        again = streams.scan_domains(cfg, store, manifests)
    assert again == first
    shutil.copy(data / "trainA" / sorted(p.name for p in (data / "trainA").glob("*.png"))[0], data / "trainA" / "new.png")
    changed = streams.scan_domains(cfg, store, manifests)  # another listing: scanned, a manifest of its own
    assert len(changed.A.paths) == len(first.A.paths) + 1 and changed.skipped == 1
    assert len(list((tmp_path / "storage" / "_scans").glob("*.json"))) == 3


def test_an_empty_prefix_and_a_missing_bucket_fail_naming_the_uri(ray_session, s3, bucket):
    from cyclegan.distributed.streams import list_objects
    with pytest.raises(DataError, match=rf"s3://{bucket}/nothing-here: no (objects under this prefix|such)"):
        list_objects(f"s3://{bucket}/nothing-here", Storage.from_options())
    with pytest.raises(DataError, match=r"s3://no-such-bucket/data: "):
        list_objects("s3://no-such-bucket/data", Storage.from_options())


def test_workers_that_would_take_every_cpu_fail_at_start_naming_the_numbers(ray_session, bucket, tmp_path,
                                                                           monkeypatch, capsys):
    """The newcomer's command on this 2-core machine (`cyclegan train --dataroot s3://... --num_workers 2`,
    1 CPU per worker by default) used to start both workers and wait for data forever."""
    from cyclegan.cli import main
    # The command in this process, on the session's Ray: like the local Ray the command starts without
    # --address (2 CPUs on the 2-core machine), one of this process's own, so the check refuses.
    cpus = int(ray_session.cluster_resources()["CPU"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main(["train", "--dataroot", f"s3://{bucket}/seasons", "--num_workers", str(cpus),
                 "--checkpoints_dir", str(tmp_path)])
    stderr = capsys.readouterr().err
    assert code == 2, stderr[-3000:]
    assert (f"{cpus} workers x cpus_per_worker 1 = {cpus} of the cluster's {cpus} CPUs leave 0 for the data tasks"
            in stderr), stderr[-3000:]
    assert f"give --cpus_per_worker {(cpus - 0.25) / cpus * 4 // 1 / 4:g}" in stderr


# ---------------------------------------------------------------- fault tolerance

# Each worker its own ordered stream (--data_ingest exact): what makes a restarted run's weights equal
# to the uninterrupted run's, bit for bit.
FT = dict(netG="resnet_6blocks", ngf=4, ndf=4, load_size=28, crop_size=24, seed=3, num_workers=2,
          cpus_per_worker=0.5, n_epochs=4, n_epochs_decay=2, save_latest_freq=2, save_epoch_freq=1,
          keep_checkpoints=3, tensorboard=False, notice_check_freq=2, notice_check_secs=0.2, data_ingest="exact")


def ft_cfg(tiny_pair, tmp_path, name, **kw):
    return from_dict(dict(FT, dataroot=str(tiny_pair), name=name, checkpoints_dir=str(tmp_path / "ck"),
                          storage_path=str(tmp_path / "storage"), **kw))


def final_weights(cfg):
    run = Path(cfg.storage_path) / cfg.name  # a Ray run's reference weights are in its storage
    return {n: torch.load(run / f"latest_net_{n}.pth", weights_only=True) for n in ("G_A", "G_B", "D_A", "D_B")}


def assert_same_weights(a, b):
    for net in a:
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"


@pytest.fixture(scope="module")
def uninterrupted_run(ray_session, tiny_pair, tmp_path_factory):
    from cyclegan.distributed.train import run
    # Saved at epoch ends only: how often a run saves leaves its weights as they are (the runs compared with
    # this one save at other steps, and at other counts of steps), and each save costs a report to Ray Train.
    cfg = ft_cfg(tiny_pair, tmp_path_factory.mktemp("uninterrupted"), "whole", save_latest_freq=1000)
    result = run(cfg, progress_bar=False)
    assert result["resumed_from"] is None and result["total_iters"] == 30  # 6 epochs x 5 samples per worker
    return cfg


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return final_weights(uninterrupted_run)


def test_an_error_in_the_users_input_found_by_the_workers_ends_the_run_as_one_error(uninterrupted_run):
    """Workers that find the user's input wrong (here: other networks than the checkpoint's they restore)
    end the run at once, and the driver raises the user's error: a failure would be retried --max_failures
    times and reach the user as a Ray traceback. The stored run is left as it was."""
    from cyclegan.core.config import ConfigError
    from cyclegan.distributed.train import fit
    before = final_weights(uninterrupted_run)
    options = Path(uninterrupted_run.storage_path) / "whole" / "cyclegan_config.yaml"
    saved = options.read_text()
    with pytest.raises(ConfigError, match=r"^ngf: 8 differs from the checkpoint's 4; a run resumes only with"):
        fit(from_dict({**uninterrupted_run.to_dict(), "ngf": 8}), progress_bar=False)
    assert_same_weights(final_weights(uninterrupted_run), before)
    assert options.read_text() == saved  # the run's options are still its own


def test_a_ray_run_started_again_with_other_options_is_refused_naming_them(uninterrupted_run):
    """The rerun rule for Ray runs (the same options continue: the killed-driver test reruns its run)."""
    from cyclegan.core.config import ConfigError
    from cyclegan.distributed.train import run
    where = f"{uninterrupted_run.storage_path}/whole"
    with pytest.raises(ConfigError, match=rf"^name: the run at {where} exists with other options \(lr: 0\.0002 in "
                                          r"the run, 0\.001 now\); give another --name, or --continue_train"):
        run(from_dict({**uninterrupted_run.to_dict(), "lr": 0.001, "num_workers": "1"}), progress_bar=False)


@pytest.mark.parametrize("flags, message", [
    (["--amp", "fp16"], "amp: 'fp16' needs a CUDA device (device 'auto' is cpu); use amp bf16 or none; on Ray "
                        "workers, --use_gpu gives each a GPU"),
    (["--cudnn_benchmark"], "cudnn_benchmark: True needs a CUDA device"),
    (["--device", "cuda"], "device: 'cuda' on Ray workers needs --use_gpu"),
    (["--storage_options", '{"secret_key": "s3cr3t-k3y"}'], "storage_options: access_key, secret_key and "
                                                            "session_token are used by this process only"),
])
def test_what_the_workers_could_not_do_is_refused_before_ray_starts(tiny_pair, tmp_path, flags, message,
                                                                    monkeypatch, capsys, caplog):
    import cyclegan.distributed.train
    from cyclegan.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started or joined before the refusal")
    monkeypatch.setattr(cyclegan.distributed.train, "init_ray", no_ray)  # a training run's one way into Ray
    code = main(["train", "--dataroot", str(tiny_pair), "--name", "x", "--checkpoints_dir", str(tmp_path),
                 "--num_workers", "2", *flags])
    out, err = capsys.readouterr()
    assert code == 2, err[-3000:]
    lines = err.strip().splitlines()  # one line, and no log record: nothing started before it
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), err[-3000:]
    assert not caplog.records, caplog.text[-3000:]
    assert not out and "s3cr3t" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def alive_actors(class_name: str, other_jobs: bool = False) -> list:
    """Live actors of a class; ``other_jobs``: only those of other drivers than this test session."""
    import ray
    from ray.util.state import list_actors
    # This session's Ray by its address: another Ray on the machine (a second suite, a user's) is not asked.
    found = list_actors(address=ray.get_runtime_context().gcs_address,
                        filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])
    return [a for a in found if a.job_id != ray.get_runtime_context().get_job_id()] if other_jobs else found


def worker_killed_and_replaced(storage_run: Path, killed: dict, after: int = 2) -> bool:
    """Kills a worker once ``after`` checkpoints are registered (only those survive a hard kill: one
    reported just before may not be), then holds once the replaced group has registered its own."""
    if "worker" not in killed:
        if len(registered(storage_run)) >= after and (workers := alive_actors("RayTrainWorker")):
            os.kill(workers[-1].pid, signal.SIGKILL)
            killed["worker"] = workers[-1].pid
        return False
    attempts = {c["metrics"]["resumed_from_iters"] for c in registered_results(storage_run)}
    if not attempts:  # the snapshot read while Ray Train rewrote it: asked again at the next poll
        return False
    killed["resumed"] = max(attempts)
    return max(attempts) > 0


def test_a_killed_worker_then_a_killed_driver_and_the_run_still_ends_with_the_same_weights(
        uninterrupted, ray_session, tiny_pair, tmp_path):
    """One run, two failures: a worker is killed (Ray Train replaces the group and resumes from the
    latest registered checkpoint), then the driver is killed (the run is resumed by hand with --resume)."""
    from cyclegan.distributed.train import run
    address = ray_session.get_runtime_context().gcs_address
    storage_run = tmp_path / "storage" / "faults"
    flags = ["--dataroot", str(tiny_pair), "--name", "faults", "--checkpoints_dir", str(tmp_path / "ck"),
             "--storage_path", str(tmp_path / "storage"), "--address", address, "--no-tensorboard"]
    for key, value in FT.items():
        if key != "tensorboard":
            flags += [f"--{key}", str(value)]
    killed: dict = {}
    kill_driver_when(["train", *flags], lambda: worker_killed_and_replaced(storage_run, killed), 300,
                     "a killed worker's run to go on")
    wait_for(lambda: not alive_actors("RayTrainWorker") and not alive_actors("TrainController", other_jobs=True),
             60, "Ray to end the dead driver's controller and workers")
    cfg = from_dict({"resume": str(storage_run), "address": address, "checkpoints_dir": str(tmp_path / "ck")})
    result = run(cfg, given={"address", "checkpoints_dir"}, progress_bar=False)
    assert result["resumed_from"]["total_iters"] >= killed["resumed"] > 0 and result["total_iters"] == 30
    resumed = from_dict(dict(FT, name="faults", storage_path=str(tmp_path / "storage")))
    assert_same_weights(final_weights(resumed), uninterrupted)


def test_a_spot_reclaim_then_a_node_lost_without_notice_and_the_run_ends_with_the_same_weights(
        uninterrupted, tiny_pair, tmp_path):
    # One machine: every simulated node has the same disk. Regular saves only at epoch ends (every 5
    # steps), so the checkpoint written on the notice is the run's own doing.
    values = dict(FT, dataroot=str(tiny_pair), name="spot", checkpoints_dir=str(tmp_path / "ck"),
                  storage_path=str(tmp_path / "storage"), worker_resources='{"trainnode": 1}',
                  keep_checkpoints=100, shared_filesystem=True, save_latest_freq=1000)
    (tmp_path / "config.json").write_text(json.dumps(values))
    script = Path(__file__).parent / "cluster_scenarios.py"
    ray_tmp = tempfile.mkdtemp(prefix="cg-ray-")  # short: Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(Path(__file__).parents[2]))  # tests.helpers
    env.pop("RAY_TRAIN_ENABLE_STATE_TRACKING", None)  # the session's Ray keeps run state; this cluster has no dashboard
    # Ray Train looks for drained nodes every 5 s by default: the notice would reach the workers up to 5 s late
    # (and late in a short run). Its own variable, carried from the driver to the controller.
    env["RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"] = "0.2"
    try:
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / "config.json"), str(tmp_path / "out.json")],
                              env=env, capture_output=True, text=True, timeout=800)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (tmp_path / "out.json").exists(), proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    print(f"spot, then node loss: {report['timeline']}")
    assert report.get("finished") and "error" not in report, (report, proc.stderr[-3000:])

    # The watcher read the notice and drained the node; the workers wrote a checkpoint on it.
    assert report["watcher"]["code"] == 0, report["watcher"]
    assert "preemption notice: spot instance-action terminate" in report["watcher"]["output"]
    notice = [c for c in report["at_reclaim"] if c["preemption_notice"]]
    assert notice and 0 < notice[0]["total_iters"] < 30
    # Each restart began at the newest checkpoint registered when its node went: nothing lost.
    history = report["history"]
    attempts = sorted({c["resumed_from_iters"] for c in history})
    assert len(attempts) == 3, attempts  # the start, after the reclaim, after the loss
    assert attempts[1] >= max(c["total_iters"] for c in report["at_reclaim"]) >= notice[0]["total_iters"]
    assert attempts[2] >= max(c["total_iters"] for c in report["at_loss"]) > attempts[1]
    result = report["result"]
    assert result["resumed_from"]["total_iters"] == attempts[2] and result["total_iters"] == 30
    # Every epoch end has its checkpoint.
    assert {5, 10, 15, 20, 25, 30} <= {c["total_iters"] for c in history}
    assert_same_weights(final_weights(from_dict(values)), uninterrupted)


def test_after_a_killed_worker_ray_trains_split_resumes_at_the_checkpoints_count(ray_session, tiny_pair, tmp_path):
    """--data_ingest train: the replaced group's first worker says where it starts (the checkpoint's
    position), Ray Train splits only what is left, and every worker takes its steps to the run's end."""
    from cyclegan.distributed.train import run
    storage_run = tmp_path / "storage" / "split"
    cfg = ft_cfg(tiny_pair, tmp_path, "split", data_ingest="train", n_epochs=2, n_epochs_decay=1, eval_at_end=False)
    # The driver in this process (nothing kills it), on the session's Ray; the test's thread kills a worker.
    outcome: dict = {}

    def drive():
        try:
            outcome["result"] = run(cfg, progress_bar=False)
        except BaseException as e:  # said by the assertion below
            outcome["error"] = e
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    killed: dict = {}
    wait_for(lambda: worker_killed_and_replaced(storage_run, killed, after=1) or not driver.is_alive(), 300,
             "a killed worker's run to go on")
    driver.join(timeout=300)
    assert not driver.is_alive() and "error" not in outcome and "worker" in killed, outcome
    result = json.loads((storage_run / "result.json").read_text())
    resumed = result["resumed_from"]
    assert result["total_iters"] == 15 and resumed["total_iters"] >= killed["resumed"] > 0
    # The last group started where its checkpoint left off: 5 samples per worker per epoch.
    start = json.loads((storage_run / "ingest_start.json").read_text())
    nonce = start.pop("nonce")
    assert start == {"epoch": resumed["epoch"], "epoch_iter": resumed["epoch_iter"], "world_size": 2}
    assert json.loads((storage_run / "ingest_start.json.taken").read_text()) == {"nonce": nonce}  # split from it
    assert resumed["total_iters"] == 5 * (resumed["epoch"] - 1) + resumed["epoch_iter"]


def test_a_state_from_two_workers_resumes_on_one(tiny_cfg):
    # Elastic restarts re-split the epoch: 3 samples done by each of 2 workers = 6 done in all.
    from cyclegan.core.trainer import Trainer
    trainer = Trainer(tiny_cfg(name="split"), progress_bar=False)
    state = trainer.state()
    state["progress"].update(epoch_iter=3, world_size=2)
    trainer.restore(state)
    assert trainer.progress.epoch_iter == 6


def test_a_population_based_sweeps_clone_takes_its_own_hyperparameters_at_once(tiny_cfg):
    """A clone goes on from another trial's state with its own base rate and pool size: the core restores the
    state as saved, then the sweep's hook gives it the clone's (a plateau schedule's reduced rate follows the
    new base rate; the pools keep at most the new size)."""
    from cyclegan.core.trainer import Trainer
    from cyclegan.distributed.trial import SweepHooks
    from cyclegan.distributed.worker import restore_from
    donor = Trainer(tiny_cfg(name="donor", lr_policy="plateau", pool_size=4), progress_bar=False)
    donor.run()
    state = donor.state()
    for name in ("optimizer_G", "optimizer_D"):
        for group in state["model"][name]["param_groups"]:
            group["lr"] = donor.cfg.lr * 0.2  # as after one plateau step
    assert len(donor.model.fake_B_pool.images) == 4
    clone = Trainer(tiny_cfg(name="clone", lr_policy="plateau", pool_size=1, lr=donor.cfg.lr * 3), progress_bar=False,
                    hooks=[SweepHooks({"metric": "l1", "store": Storage.from_options()})])
    restore_from(clone, None, (state, None, lambda name: None))  # a checkpoint without the trial's files
    assert clone.model.optimizer_G.param_groups[0]["lr"] == pytest.approx(donor.cfg.lr * 0.2 * 3)
    assert clone.model.optimizer_D.param_groups[0]["lr"] == pytest.approx(donor.cfg.lr * 0.2 * 3)
    assert clone.model.fake_B_pool.pool_size == 1 and len(clone.model.fake_B_pool.images) == 1
    assert torch.equal(clone.model.fake_B_pool.images[0], donor.model.fake_B_pool.images[0])
    clone.lock.release()


def test_scratch_of_an_ended_process_is_removed_and_a_live_ones_kept():
    # Ray ends stopped trials and failed workers without their cleanup; the next process on the node,
    # or the sweep's end, removes what they left, and never a folder whose process still runs.
    from cyclegan.distributed.scratch import node_scratch, remove_stale_scratch
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        left = [Path(tempfile.mkdtemp(prefix=f"cyclegan-{kind}-{ended.pid}-")) for kind in ("run", "trial")]
        live = Path(tempfile.mkdtemp(prefix=f"cyclegan-trial-{running.pid}-"))
        other = Path(tempfile.mkdtemp(prefix=f"cyclegan-download-{ended.pid}-"))  # not a scratch folder
        with node_scratch("run") as mine:
            assert mine.is_dir() and not any(f.exists() for f in left) and live.is_dir() and other.is_dir()
        assert not mine.exists() and remove_stale_scratch() == 0
    finally:
        running.communicate(b"")
        shutil.rmtree(other)
    assert remove_stale_scratch(wait_s=5) == 1 and not live.exists()


def test_the_sweeps_scratch_cleanup_is_bounded_when_a_node_does_not_answer(ray_session):
    """The cleanup after a sweep sends a task to every node; a node being drained or terminated never
    answers. A stand-in: a folder whose process lives, and a task that would wait a minute for it."""
    import time

    from cyclegan.distributed.scratch import remove_stale_scratch_everywhere
    running = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    live = Path(tempfile.mkdtemp(prefix=f"cyclegan-trial-{running.pid}-"))
    try:
        started = time.monotonic()
        assert remove_stale_scratch_everywhere(wait_s=60, timeout_s=1) == 0
        assert time.monotonic() - started < 30  # not the minute the task would have waited
        assert live.is_dir()  # a live process's folder is never removed
    finally:
        running.communicate(b"")
        shutil.rmtree(live, ignore_errors=True)


@pytest.fixture
def s3_server_with_auth(tmp_path):
    """A second S3 API server on 127.0.0.1 that checks credentials (moto's IAM auth on from the first call)."""
    proc, endpoint = start_moto_server(tmp_path / "moto-auth.log", env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0"))
    try:
        yield endpoint
    finally:
        stop(proc)


def test_refused_credentials_fail_naming_the_variables(s3_server_with_auth):
    from cyclegan.distributed.streams import list_objects
    options = {"endpoint_url": s3_server_with_auth, "access_key": "AKIDWRONG", "secret_key": "not-the-secret"}
    with pytest.raises(DataError) as e:
        list_objects("s3://private-bucket/horse2zebra/trainA", Storage.from_options(options))
    message = str(e.value)
    assert "s3://private-bucket/horse2zebra/trainA: access denied" in message
    assert "AWS_ACCESS_KEY_ID" in message and "not-the-secret" not in message


def test_poll_secs_reaches_ray_trains_controller_through_its_own_variable(monkeypatch, tiny_cfg):
    """Each report waits for the controller's next poll of the workers (Ray's default: every 2 s), so the
    run sets the interval through the variable Ray Train carries from the driver to its controller."""
    from cyclegan.distributed.ray_internals import train_propagated_variables as get_env_vars_to_propagate
    from cyclegan.distributed.train import controller_poll
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    with controller_poll(tiny_cfg(poll_secs=0.3)):
        assert get_env_vars_to_propagate()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.3"
        with controller_poll(tiny_cfg(poll_secs=1.0)):  # a value already set (the user's) is kept
            assert get_env_vars_to_propagate()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.3"
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.3"  # and left as it was found
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in os.environ  # the run's own value goes when it ends
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "5")
    with controller_poll(tiny_cfg(poll_secs=0.3)):
        assert get_env_vars_to_propagate()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "5"
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "5"


def test_the_ingest_start_is_used_once_and_only_by_the_group_that_wrote_it(tmp_path):
    """--data_ingest train hands a worker group's start position to Ray Train's DataConfig.configure
    through a file, relying on configure being called on the first worker's shard request. A stale file
    (an earlier group's) or a changed call order fails loudly instead of splitting from the wrong place."""
    from cyclegan.core.storage import Storage
    from cyclegan.distributed.ingest import START_FILE, check_taken, take_start
    store, start = Storage.from_options(), str(tmp_path / START_FILE)
    store.write_text(start, json.dumps({"nonce": "group-1", "epoch": 2, "epoch_iter": 3, "world_size": 2}))
    assert take_start(store, start)["epoch_iter"] == 3
    check_taken(store, start, "group-1")  # the split came from what this group wrote
    with pytest.raises(RuntimeError, match="already used by an earlier worker group"):
        take_start(store, start)  # the next group asked before writing its own
    with pytest.raises(RuntimeError, match="split from another start than this worker group's"):
        check_taken(store, start, "group-2")  # configure ran before group 2 wrote its start


def test_an_elastic_run_saves_on_a_clock_unless_told_otherwise(tiny_cfg):
    """Ray Train grows an elastic group by restarting it from the last checkpoint: image-count saves alone
    could lose a whole --save_latest_freq at each upsize."""
    from cyclegan.distributed.train import ELASTIC_SAVE_SECS, elastic_saves
    assert elastic_saves(tiny_cfg(num_workers="1-2")).save_latest_secs == ELASTIC_SAVE_SECS
    assert elastic_saves(tiny_cfg(num_workers="1-2", save_latest_secs=30)).save_latest_secs == 30
    assert elastic_saves(tiny_cfg(num_workers="2")).save_latest_secs == 0
