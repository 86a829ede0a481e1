"""The Ray layer: Ray Train workers, Ray Data streams from a real S3 API server, checkpoints in the bucket."""
import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan import checkpoint as ckpt
from cyclegan.cli import main
from cyclegan.config import from_dict
from cyclegan.data import BadImageWarning, DataError

pytestmark = pytest.mark.slow

TINY_FLAGS = ["--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24",
              "--seed", "3", "--cpus_per_worker", "0.5"]


def upload_pair(s3, local_root, bucket_prefix):
    for path in sorted(local_root.rglob("*.png")):
        s3.put(str(path), f"{bucket_prefix}/{path.relative_to(local_root)}")


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bucket(s3, tiny_pair):
    s3.mkdir("cyclegan-test")
    upload_pair(s3, tiny_pair, "cyclegan-test/seasons")
    bad = {"zero.png": b"", "readme.txt": b"these are not images\n",
           "corrupt.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4,
           "rgba.png": png_bytes(Image.new("RGBA", (30, 30), (10, 200, 30, 128))),
           "sixteen.png": png_bytes(Image.fromarray(np.full((30, 30), 30000, np.uint16)))}
    for name, data in bad.items():
        s3.pipe(f"cyclegan-test/seasons/trainA/{name}", data)
    return "cyclegan-test"


def test_two_workers_from_s3_with_checkpoints_in_s3(ray_session, s3, bucket, tmp_path, capsys):
    with pytest.warns(BadImageWarning, match=r"skipped 3 unreadable file\(s\)"):
        code = main(["train", "--dataroot", f"s3://{bucket}/seasons", "--name", "s3run", "--num_workers", "2",
                     "--checkpoints_dir", str(tmp_path / "ck"), "--storage_path", f"s3://{bucket}/runs",
                     "--n_epochs", "1", "--n_epochs_decay", "1", "--save_latest_freq", "4", *TINY_FLAGS])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    # 12 A images (10 + RGBA + 16-bit) and 10 B: epochs of 12 samples, 6 per worker.
    assert result["skipped_images"] == 3 and result["total_iters"] == 12
    states = sorted(s3.glob(f"{bucket}/runs/s3run/checkpoint_*/state.pt"))
    assert 1 <= len(states) <= 3  # keep_checkpoints
    with s3.open(states[-1], "rb") as f:
        state = torch.load(io.BytesIO(f.read()), weights_only=True)
    assert state["progress"]["epoch"] == 3 and len(state["ranks"]) == 2
    assert s3.exists(f"{bucket}/runs/s3run/cyclegan_config.yaml")
    assert (tmp_path / "ck" / "s3run" / "latest_net_G_A.pth").exists()  # rank 0's reference weights


def test_an_empty_prefix_and_a_missing_bucket_fail_naming_the_uri(ray_session, s3, bucket):
    from cyclegan.distributed.streams import list_objects
    with pytest.raises(DataError, match=rf"s3://{bucket}/nothing-here: no (objects under this prefix|such)"):
        list_objects(f"s3://{bucket}/nothing-here", {})
    with pytest.raises(DataError, match=r"s3://no-such-bucket/data: "):
        list_objects("s3://no-such-bucket/data", {})
