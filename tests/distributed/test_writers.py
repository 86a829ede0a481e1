"""One driver per Ray run and per sweep, with their storage in a bucket: the lease object on the loopback
S3 server, conditional writes included, and the commands' refusal before Ray starts."""
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from cyclegan.core.lease import LEASE_FILE, Lease
from cyclegan.core.storage import Storage

from tests.core.test_lease import OTHER_HOST, Driver, here, race
from tests.distributed.test_sweep import experiment


def put_lease(s3, key, **holder):
    s3.pipe(key, json.dumps({"holder": "another-driver", "since": "2026-12-04 09:00:00", "seconds": 1, "renewal": 1,
                             **holder}).encode())


def test_in_a_bucket_one_of_many_drivers_holds_a_run_and_a_vanished_ones_lease_lapses(s3):
    s3.mkdir("leases")
    store = Storage.from_options()
    assert len(race(store, "s3://leases/run")) == 1
    assert not s3.exists(f"leases/run/{LEASE_FILE}")  # the holder let go at its end
    held = Driver(store, "s3://leases/run", seconds=1, **OTHER_HOST)  # a live driver on a machine this one cannot see
    held.acquire()
    try:
        assert race(store, "s3://leases/run") == []  # seen renewing: refused
    finally:
        held.release()
    put_lease(s3, f"leases/run/{LEASE_FILE}", host="spot-node-7", pid=4242)
    assert len(race(store, "s3://leases/run")) == 1  # unchanged for its period: its node is gone, taken over
    with Lease(store, "s3://leases/run", seconds=4) as lease:
        first = json.loads(s3.cat(f"leases/run/{LEASE_FILE}"))["renewal"]
        from tests.helpers.processes import wait_for
        wait_for(lambda: json.loads(s3.cat(f"leases/run/{LEASE_FILE}"))["renewal"] > first, 10, "a renewal")
        assert lease.thread.is_alive()


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_second_driver_of_a_run_or_sweep_in_a_bucket_is_refused_before_ray_starts(s3, tmp_path, command):
    bucket = f"held-{command}"
    s3.mkdir(bucket)
    if command == "train":
        folder = f"{bucket}/runs/mine"
        args = ["train", "--num_workers", "2", "--storage_path", f"s3://{bucket}/runs", "--name", "mine"]
    else:
        folder = f"{bucket}/sweeps/sw"
        # Where the store is comes from the experiment file (the driver's environment names no endpoint).
        data = experiment(tmp_path, datasets=["seasons"], storage_path=f"s3://{bucket}/sweeps",
                          storage_options={"endpoint_url": os.environ["AWS_ENDPOINT_URL"], "region": "us-east-1"})
        (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
        args = ["sweep", str(tmp_path / "exp.yaml")]
    # A driver alive on this machine (this test's process stands in for it) holds it.
    put_lease(s3, f"{folder}/{LEASE_FILE}", **here(), pid=os.getpid(), seconds=120)
    env = {k: v for k, v in os.environ.items() if command == "train" or k != "AWS_ENDPOINT_URL"}
    done = subprocess.run([sys.executable, "-m", "cyclegan.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    what = "run" if command == "train" else "sweep"
    assert last.startswith(f"error: name: the {what} s3://{folder} is being written by another driver (pid "
                           f"{os.getpid()} on {socket.gethostname()}, since 2026-12-04 09:00:00; it runs on this "
                           "machine); ")
    assert "Ray" not in done.stdout + done.stderr  # refused before a Ray instance started
    assert s3.ls(folder, refresh=True) == [f"{folder}/{LEASE_FILE}"]  # nothing else written
    assert json.loads(s3.cat(f"{folder}/{LEASE_FILE}"))["holder"] == "another-driver"  # and the lease kept
