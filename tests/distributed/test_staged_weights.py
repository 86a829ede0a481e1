"""A sweep's staged FID Inception weights (``<storage_path>/_weights/``) are checked where they are read:
against the SHA-256 the sweep's driver took from its own copy, which reaches every trial with the
experiment, never from the storage the file is in. A file replaced there was scored with, silently
skewing every FID/KID ranking."""
import hashlib
import io

import pytest
import torch

from cyclegan.core.errors import UserError
from cyclegan.core.experiment import parse_experiment
from cyclegan.core.metrics import INCEPTION_FILE, INCEPTION_SHA256, load_inception_weights
from cyclegan.core.storage import Storage
from cyclegan.distributed.sweep import stage_inception_weights
from cyclegan.distributed.trial import staged_weights


def saved(weights: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return buffer.getvalue()


def test_a_staged_weights_file_replaced_in_the_bucket_is_refused_by_the_trial_and_the_driver(
        tmp_path, s3, monkeypatch):
    s3.mkdir("staged-weights")
    exp = parse_experiment({"name": "sw", "storage_path": "s3://staged-weights/sweeps", "datasets": ["seasons"],
                            "base": {"n_epochs": 1, "n_epochs_decay": 0}, "space": {"lr": [0.0002]},
                            "search": {"metric": "fid", "num_samples": 1}})
    key = f"staged-weights/sweeps/_weights/{INCEPTION_FILE}"
    # A stand-in for the 91 MB published file, as this machine's copy.
    weights = {"Conv2d_1a_3x3.conv.weight": torch.randn(32, 3, 3, 3)}
    (tmp_path / "inception.pth").write_bytes(saved(weights))
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "inception.pth"))
    store = Storage.from_options()
    stage_inception_weights(exp, store)
    mine = hashlib.sha256((tmp_path / "inception.pth").read_bytes()).hexdigest()
    assert exp.inception_sha256 == mine and s3.cat(key) == (tmp_path / "inception.pth").read_bytes()
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "nowhere.pth"))  # a trial's node: no copy
    read = load_inception_weights(stored=(store, staged_weights(exp)))
    assert torch.equal(read["Conv2d_1a_3x3.conv.weight"], weights["Conv2d_1a_3x3.conv.weight"])

    s3.pipe(key, saved({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}))  # replaced in the bucket
    with pytest.raises(UserError, match=rf"{INCEPTION_FILE}: its SHA-256 is [0-9a-f]{{64}}, not {mine} \(the "
                                        r"Inception weights the sweep was staged with"):
        load_inception_weights(stored=(store, staged_weights(exp)))
    # Without a hash from the driver the file must be the published one; a driver with no copy of its
    # own expects that too, and one with its copy expects that copy: each refuses the replaced file.
    with pytest.raises(UserError, match=f"not {INCEPTION_SHA256}"):
        load_inception_weights(stored=(store, exp.inception_weights_uri))
    with pytest.raises(UserError, match=f"not {INCEPTION_SHA256}"):
        stage_inception_weights(exp, store)
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "inception.pth"))
    with pytest.raises(UserError, match=f"not {mine}"):
        stage_inception_weights(exp, store)
