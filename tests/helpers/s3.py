"""A local S3 API server (moto's standalone server on 127.0.0.1) and what the tests put in its buckets."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from .processes import owns_port, stop


def new_secret() -> str:
    """A secret key for the loopback S3 server: distinctive, so that a test can search Ray's state, logs and
    the bucket for it (no credential may travel through Ray or reach a file). The session's is the
    ``s3_secret`` fixture's."""
    return f"cg-secret-{uuid.uuid4().hex}"


def answers_s3(endpoint: str) -> bool:
    """Whether an S3 API answers at ``endpoint``: a signed ListBuckets gets a list, or an S3 error such as
    refused credentials (a named error code, not a bare HTTP status from some other server)."""
    import botocore.config
    import botocore.exceptions
    import botocore.session
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))
    try:
        return "Buckets" in client.list_buckets()
    except botocore.exceptions.ClientError as e:
        return not str(e.response.get("Error", {}).get("Code", "")).isdigit()
    except botocore.exceptions.BotoCoreError:
        return False
    finally:
        client.close()


def start_moto_server(log_path: Path, env: Optional[dict] = None, tries: int = 3) -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server on a port it binds itself (port 0), read back from its log; ready when it
    answers an S3 request, and checked to be the process listening there. Returns (process, endpoint);
    the caller owns the process (``helpers.processes.stop``)."""
    last = ""
    for _ in range(tries):
        log = open(log_path, "w")
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        port: Optional[int] = None
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", log_path.read_text())
            if found:
                port = int(found.group(1))
                if answers_s3(f"http://127.0.0.1:{port}") and owns_port(proc.pid, port):
                    return proc, f"http://127.0.0.1:{port}"
            time.sleep(0.2)
        last = log_path.read_text()[-2000:]
        stop(proc)
    raise RuntimeError(f"moto server did not start in {tries} tries:\n{last}")


# ---------------------------------------------------------------- datasets in a bucket
def upload_pair(s3, local_root: Path, bucket_prefix: str) -> None:
    for path in sorted(local_root.rglob("*.png")):
        s3.put(str(path), f"{bucket_prefix}/{path.relative_to(local_root)}")


def put_bad_objects(s3, prefix: str) -> None:
    """Three unreadable images, a file that is no image by name, and two odd but usable ones (RGBA, 16-bit)."""
    import io

    import numpy as np
    from PIL import Image

    def png(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    bad = {"zero.png": b"", "readme.png": b"these are not images\n", "labels.csv": b"not listed: no image name\n",
           "corrupt.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4,
           "rgba.png": png(Image.new("RGBA", (30, 30), (10, 200, 30, 128))),
           "sixteen.png": png(Image.fromarray(np.full((30, 30), 30000, np.uint16)))}
    for name, data in bad.items():
        s3.pipe(f"{prefix}/{name}", data)
