"""Fixtures shared by every folder of tests (core/, distributed/, commands/, project/): tiny configs and
tiny built-in datasets written once per session, a loopback S3 API server and one local Ray instance.
Helpers the tests import are in tests/helpers/, by topic."""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import pytest
import torch

from cyclegan.core.config import from_dict
from cyclegan.core.synth import write_pair

from tests.helpers.processes import stop
from tests.helpers.s3 import new_secret, start_moto_server

SCRATCH = pytest.StashKey[str]()  # the session's scratch folder, kept in the pytest config's stash


def pytest_configure(config):
    """The process's settings for the whole run, before any test module is imported."""
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    # Whatever the run writes to temporary folders (Ray's sessions and workers, sweep trials' scratch,
    # Inductor's cache, the processes the tests start) lands below one folder, removed when the session
    # ends: a run leaves nothing in /tmp. Short, as Ray's socket paths must stay under 108 bytes.
    # pytest's own tmp_path folders stay where they were (it keeps only failing tests', see pyproject.toml).
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    scratch = config.stash[SCRATCH] = tempfile.mkdtemp(prefix="cg-tests-")
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    # Every Ray the tests start or join (in-process, `ray start` heads and nodes, drivers, the CLI) uses this
    # session's own token: nothing is read from or written to ~/.ray, whatever the machine had before.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray Train's controller polls its workers every 2 s, and a worker's next report waits for that poll:
    # the tests' runs save every few steps, so each save would cost 2 s. Polled every 0.1 s here.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"


def pytest_unconfigure(config):
    """The very end of the run (after Ray and the S3 server stopped), also after --collect-only."""
    scratch = config.stash.get(SCRATCH, None)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


# Small enough for CPU tests, large enough for every layer (3 halvings in the PatchGAN, 2 in G).
TINY = dict(netG="resnet_6blocks", ngf=4, ndf=4, load_size=28, crop_size=24, num_threads=0, print_freq=4,
            image_log_freq=8, n_epochs=1, n_epochs_decay=1, lambda_identity=0.5, pool_size=4,
            save_latest_freq=1000, save_epoch_freq=1, seed=3)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A 24 px 'seasons' pair: 10 training and 4 test images per domain."""
    return write_pair("seasons", tmp_path_factory.mktemp("data") / "seasons", size=24, n_train=10, n_test=4)


@pytest.fixture
def tiny_cfg(tiny_pair, tmp_path):
    def make(**overrides):
        values = dict(TINY, dataroot=str(tiny_pair), checkpoints_dir=str(tmp_path / "checkpoints"), name="tiny")
        values.update(overrides)
        return from_dict(values)
    return make


# ---------------------------------------------------------------- services for the distributed tests
@pytest.fixture(scope="session")
def s3_secret():
    """The loopback S3 server's secret key, distinctive, so that a test can search Ray's state, logs and the
    bucket for it (no credential may travel through Ray or reach a file)."""
    return new_secret()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, s3_secret):
    """A real S3 API server (moto's standalone server) on 127.0.0.1, as s3fs's own tests use.
    The AWS_* variables point at it for the whole session (every Ray node started afterwards finds its
    credentials there, as a cloud node finds its instance role's); the server is stopped by its pid."""
    proc, endpoint = start_moto_server(tmp_path_factory.mktemp("moto") / "server.log")
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=s3_secret,
                      AWS_DEFAULT_REGION="us-east-1")
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    stop(proc)


@pytest.fixture(scope="session")
def s3(s3_server, s3_secret):
    import s3fs
    return s3fs.S3FileSystem(key="testing", secret=s3_secret, client_kwargs={"endpoint_url": s3_server},
                             skip_instance_cache=True)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory, s3_server):
    """One local Ray instance for the whole test session, on loopback, with its own temp folder. Started
    after the S3 server, so its processes have the credentials in their environment (a node's own), and
    with Ray Train's run state kept (what the dashboard serves while a run lives)."""
    import ray
    temp = tmp_path_factory.mktemp("ray")
    os.environ["RAY_TRAIN_ENABLE_STATE_TRACKING"] = "1"
    # One GPU declared (this machine has none; Ray only counts it): sweeps that share a GPU are scheduled
    # as on a GPU node. Nothing here asks for a GPU and then runs CUDA on it.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=True, dashboard_host="127.0.0.1", _temp_dir=str(temp),
             configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- the quick tier
# Tests that start Ray, the S3 server or a Ray head (tens of seconds each) are `slow`, and so are the
# end-to-end command runs marked by hand (a CLI training, an export of each architecture), so
# `./run.sh test -m "not slow"` is the edit-test loop, in under a minute; CI runs everything.
SLOW_FIXTURES = frozenset({"ray_session", "s3_server", "s3"})


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
