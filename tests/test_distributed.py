"""The Ray layer: Ray Train workers, Ray Data streams from a real S3 API server, checkpoints in the bucket."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from cyclegan.config import from_dict
from cyclegan.data import DataError
from cyclegan.storage import Storage

from helpers import kill_driver_when, put_bad_objects, registered, start_moto_server, stop, upload_pair, wait_for

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
    listed = streams.list_objects
    monkeypatch.setattr(streams, "list_objects", lambda uri, store, max_size: listed(uri, store, max_size)
                        + [str(tmp_path / "on-another-disk.png")])
    cfg = from_dict(dict(FT, dataroot=str(tiny_pair), name="missing", checkpoints_dir=str(tmp_path)))
    with pytest.raises(DataError, match=r"on-another-disk.png: listed by the driver but not found on node .*"
                                        r"upload it with 'cyclegan data upload'.*--shared_filesystem"):
        streams.scan_domains(cfg, Storage.from_options())


def test_an_empty_prefix_and_a_missing_bucket_fail_naming_the_uri(ray_session, s3, bucket):
    from cyclegan.distributed.streams import list_objects
    with pytest.raises(DataError, match=rf"s3://{bucket}/nothing-here: no (objects under this prefix|such)"):
        list_objects(f"s3://{bucket}/nothing-here", Storage.from_options())
    with pytest.raises(DataError, match=r"s3://no-such-bucket/data: "):
        list_objects("s3://no-such-bucket/data", Storage.from_options())


# ---------------------------------------------------------------- fault tolerance

FT = dict(netG="resnet_6blocks", ngf=4, ndf=4, load_size=28, crop_size=24, seed=3, num_workers=2,
          cpus_per_worker=0.5, n_epochs=4, n_epochs_decay=2, save_latest_freq=2, save_epoch_freq=1,
          keep_checkpoints=3, tensorboard=False)


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
def uninterrupted(ray_session, tiny_pair, tmp_path_factory):
    from cyclegan.distributed.train import run
    cfg = ft_cfg(tiny_pair, tmp_path_factory.mktemp("uninterrupted"), "whole")
    result = run(cfg, progress_bar=False)
    assert result["resumed_from"] is None and result["total_iters"] == 30  # 6 epochs x 5 samples per worker
    return final_weights(cfg)


def test_a_killed_worker_is_replaced_and_the_run_resumes_exactly(uninterrupted, tiny_pair, tmp_path):
    from ray.util.state import list_actors

    from cyclegan.distributed.train import run
    cfg = ft_cfg(tiny_pair, tmp_path, "killed")
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run(cfg, progress_bar=False)), daemon=True)
    thread.start()
    # Only checkpoints Ray has registered survive a hard kill (one reported just before may not).
    wait_for(lambda: len(registered(tmp_path / "storage" / "killed")) >= 2, 240, "two registered checkpoints")
    workers = [a for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])]
    assert workers, "no training worker found"
    os.kill(workers[-1].pid, signal.SIGKILL)
    thread.join(timeout=400)
    assert not thread.is_alive(), "the run did not finish after the worker was killed"
    result = outcome["result"]
    assert result["resumed_from"] is not None and result["resumed_from"]["total_iters"] > 0
    assert result["total_iters"] == 30
    assert_same_weights(final_weights(cfg), uninterrupted)


def test_after_the_driver_dies_resume_finishes_with_the_same_weights(uninterrupted, ray_session, tiny_pair,
                                                                     tmp_path):
    from cyclegan.distributed.train import run
    address = ray_session.get_runtime_context().gcs_address
    flags = ["--dataroot", str(tiny_pair), "--name", "driver", "--checkpoints_dir", str(tmp_path / "ck"),
             "--storage_path", str(tmp_path / "storage"), "--address", address, "--no-tensorboard"]
    for key, value in FT.items():
        if key != "tensorboard":
            flags += [f"--{key}", str(value)]
    kill_driver_when(["train", *flags], lambda: len(registered(tmp_path / "storage" / "driver")) >= 3, 240,
                     "three registered checkpoints")
    time.sleep(3)  # let Ray reap the dead driver's controller and workers
    cfg = from_dict({"resume": str(tmp_path / "storage" / "driver"), "address": address,
                     "checkpoints_dir": str(tmp_path / "ck")})
    result = run(cfg, given={"address", "checkpoints_dir"}, progress_bar=False)
    assert result["resumed_from"]["total_iters"] > 0 and result["total_iters"] == 30
    resumed = from_dict(dict(FT, name="driver", storage_path=str(tmp_path / "storage")))
    assert_same_weights(final_weights(resumed), uninterrupted)


def run_scenario(scenario, tiny_pair, tmp_path, name, **overrides):
    # One machine: every simulated node has the same disk.
    values = dict(FT, dataroot=str(tiny_pair), name=name, checkpoints_dir=str(tmp_path / "ck"),
                  storage_path=str(tmp_path / "storage"), worker_resources='{"trainnode": 1}',
                  keep_checkpoints=100, shared_filesystem=True)
    values.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps(values))
    script = Path(__file__).parent / "cluster_scenarios.py"
    ray_tmp = tempfile.mkdtemp(prefix="cg-ray-")  # short: Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(Path(__file__).parents[1]))
    env.pop("RAY_TRAIN_ENABLE_STATE_TRACKING", None)  # the session's Ray keeps run state; this cluster has no dashboard
    try:
        proc = subprocess.run([sys.executable, str(script), scenario, str(tmp_path / "config.json"),
                               str(tmp_path / "out.json")], env=env, capture_output=True, text=True, timeout=800)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (tmp_path / "out.json").exists(), proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    print(f"{scenario}: {report['timeline']}")
    assert report.get("finished") and "error" not in report, (report, proc.stderr[-3000:])
    return report, from_dict(values)


def test_losing_the_node_of_the_workers_resumes_on_a_replacement(uninterrupted, tiny_pair, tmp_path):
    report, cfg = run_scenario("node", tiny_pair, tmp_path, "nodeloss")
    result = report["result"]
    assert result["resumed_from"] is not None and result["total_iters"] == 30
    # No completed checkpoint lost: the restart began at one of those taken before the loss ...
    before = {c["total_iters"] for c in report["before_loss"]}
    assert result["resumed_from"]["total_iters"] in before | {c["total_iters"] for c in report["history"]}
    assert result["resumed_from"]["total_iters"] >= max(before)
    # ... and the history has no gap: a checkpoint every save_latest_freq images and at every epoch end.
    totals = sorted({c["total_iters"] for c in report["history"]})
    assert all(b - a <= 2 for a, b in zip(totals, totals[1:])), totals
    assert_same_weights(final_weights(cfg), uninterrupted)


def test_a_spot_notice_from_the_cloud_drains_the_node_and_the_run_resumes_from_its_checkpoint(
        uninterrupted, tiny_pair, tmp_path):
    # No regular saves before the end: the checkpoint after the notice is the one the run resumes from.
    report, cfg = run_scenario("spot", tiny_pair, tmp_path, "spot", save_latest_freq=1000, save_epoch_freq=100)
    assert report["watcher"]["code"] == 0, report["watcher"]
    assert "preemption notice: spot instance-action terminate" in report["watcher"]["output"]
    notice = report["notice_checkpoint"]
    assert 0 < notice["total_iters"] < 30
    assert report["result"]["resumed_from"]["total_iters"] == notice["total_iters"]
    assert report["result"]["total_iters"] == 30
    assert_same_weights(final_weights(cfg), uninterrupted)


def test_elastic_worker_count_trains_on_what_the_cluster_has(ray_session, tiny_pair, tmp_path):
    from cyclegan.distributed.train import run
    # 2 CPUs, 0.75 each: a group of 3 cannot start, 2 can; the run goes ahead with 2.
    cfg = from_dict(dict(FT, dataroot=str(tiny_pair), name="elastic", checkpoints_dir=str(tmp_path / "ck"),
                         storage_path=str(tmp_path / "storage"), num_workers="1-3", cpus_per_worker=0.75,
                         n_epochs=1, n_epochs_decay=0))
    result = run(cfg, progress_bar=False)
    assert result["world_size"] == 2 and result["total_iters"] == 5


def test_a_state_from_two_workers_resumes_on_one(tiny_cfg):
    # Elastic restarts re-split the epoch: 3 samples done by each of 2 workers = 6 done in all.
    from cyclegan.train import Trainer
    trainer = Trainer(tiny_cfg(name="split"), progress_bar=False)
    state = trainer.state()
    state["progress"].update(epoch_iter=3, world_size=2)
    trainer.restore(state)
    assert trainer.progress.epoch_iter == 6


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
