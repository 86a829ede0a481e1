"""Helpers shared by the tests (fixtures live in conftest.py): waiting, local servers on loopback ports,
a CLI driver killed mid-run, and Ray Train's checkpoints as a run leaves them in storage."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

# The loopback S3 server's secret key: distinctive, so that a test can search Ray's state, logs and the
# bucket for it (no credential may travel through Ray or reach a file).
S3_SECRET = f"cg-secret-{uuid.uuid4().hex}"
RAY: dict = {}  # the test session's Ray (conftest.ray_session): its temp folder and dashboard URL


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------- ports and processes
def free_port() -> int:
    """A port that was free a moment ago: another process may take it before ours binds, so whoever
    starts a server on it must retry with another (see ``start_ray_node``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on 127.0.0.1:``port`` (or on all addresses), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, state, inode = fields[1], fields[3], fields[9]
        host, port_hex = address.split(":")
        if state == "0A" and int(port_hex, 16) == port and host in ("0100007F", "00000000"):
            found.add(inode)
    return found


def owns_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (not some other process)."""
    inodes = listening_inodes(port)
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def stop_processes_mentioning(text: str) -> None:
    """SIGTERM, then SIGKILL, every process whose command line holds ``text`` (a temp folder of ours)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_mentioning(text)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids:
            try:
                wait_for(lambda: not processes_mentioning(text), 10, f"processes of {text} to end")
            except TimeoutError:
                pass


# ---------------------------------------------------------------- a local S3 API server
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
    answers an S3 request, and checked to be the process listening there. Returns (process, endpoint)."""
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


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------- a local Ray head
def start_ray_node(temp_prefix: str, head: Optional[str] = None, args: tuple = (), env: Optional[dict] = None,
                   cwd: Optional[Path] = None, tries: int = 4) -> tuple[str, str]:
    """``ray start`` on 127.0.0.1 with its own temp folder: a head (``head`` None) or a node joining the
    head at GCS address ``head``. Ray picks the GCS port (``--port 0``) and its other ports where it can;
    the agents' ports are ones free a moment ago, so a try whose port was taken meanwhile fails, is
    stopped, and the next try takes new ports. ``env``/``cwd``: the node's own environment and working
    folder (its workers inherit both). Returns (temp folder, dashboard URL or GCS address): for a head,
    the dashboard URL, with the GCS address in ``RAY_NODES[temp]``."""
    ray = str(Path(sys.executable).parent / "ray")
    env = dict(env or os.environ, RAY_AUTH_MODE="token")
    failure = ""
    for _ in range(tries):
        temp = tempfile.mkdtemp(prefix=temp_prefix)  # short: Ray's socket paths must stay under 108 bytes
        ports = {"--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                 "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
        if head is None:
            dashboard = free_port()
            ports.update({"--port": 0, "--dashboard-port": dashboard, "--ray-client-server-port": free_port()})
            role = ["--head", "--dashboard-host", "127.0.0.1"]
        else:
            role = ["--address", head]
        command = [ray, "start", *role, "--node-ip-address", "127.0.0.1", "--temp-dir", temp,
                   "--disable-usage-stats", *[str(x) for kv in ports.items() for x in kv], *args]
        started = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
        if started.returncode == 0:
            if head is not None:
                return temp, head
            gcs = re.search(r"--address='([0-9.]+:\d+)'", started.stdout + started.stderr)
            RAY_NODES[temp] = gcs.group(1) if gcs else ""
            return temp, f"http://127.0.0.1:{dashboard}"
        failure = (started.stdout + started.stderr)[-3000:]
        stop_processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
    raise RuntimeError(f"ray start failed {tries} times; last output:\n{failure}")


RAY_NODES: dict[str, str] = {}  # a started head's temp folder -> its GCS address


# ---------------------------------------------------------------- drivers and checkpoints
def kill_driver_when(args: list[str], ready, timeout: float, what: str, log_path=None) -> None:
    """Run ``python -m cyclegan.cli ARGS`` as a driver joined to a running Ray, SIGKILL it once ``ready()``
    holds, and reap it (killed as well if waiting failed)."""
    env = dict(os.environ, RAY_AUTH_MODE="token")  # the CLI joins a token-protected cluster
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        driver = subprocess.Popen([sys.executable, "-m", "cyclegan.cli", *args], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_for(ready, timeout, what)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
    finally:
        if log_path:
            log.close()


def registered_results(storage_run: Path) -> list[dict]:
    """Checkpoints Ray Train has registered (a just-reported one may not be yet: see ray-2.60 notes), each
    with the metrics reported with it (``checkpoint_dir_name``, ``metrics``)."""
    try:
        snapshot = json.loads((storage_run / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return snapshot.get("checkpoint_results", [])


def registered(storage_run: Path) -> set[str]:
    return {c["checkpoint_dir_name"] for c in registered_results(storage_run)}


# ---------------------------------------------------------------- credentials
def places_holding(secret: str, folders=(), s3=None, buckets=(), dashboard: Optional[str] = None) -> list[str]:
    """Where ``secret`` appears: in any file below ``folders``, any object of ``buckets`` (an s3fs
    filesystem), and, with a dashboard URL, Ray's state (jobs, actors, tasks) and Ray Train's run state
    (the run settings, train_loop_config included). Returns the places; the runs' state must be non-empty."""
    needle = secret.encode()
    hits = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            try:
                data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            except OSError:
                continue  # a file removed meanwhile
            at = data.find(needle)
            if at >= 0:  # the place and what surrounds it, to see what leaked it
                hits.append(f"{path}: ...{data[max(0, at - 150):at + 40].decode(errors='replace')}...")
    if buckets:
        s3.invalidate_cache()  # a listing cached earlier may name objects deleted since (old checkpoints)
    for bucket in buckets:
        for key in s3.find(bucket):
            try:
                if needle in s3.cat(key):
                    hits.append(f"s3://{key}")
            except FileNotFoundError:
                pass  # a folder marker (listed as a file, readable under "key/" only)
    if dashboard:
        import urllib.request

        from ray.util.state import list_actors, list_jobs, list_tasks
        for name, listing in (("jobs", list_jobs), ("actors", list_actors), ("tasks", list_tasks)):
            rows = listing(address=dashboard, detail=True, limit=10_000, raise_on_missing_output=False)
            text = json.dumps([getattr(r, "__dict__", r) for r in rows], default=str)
            if secret in text:
                at = text.find(secret)
                hits.append(f"ray state: {name}: ...{text[max(0, at - 300):at + 40]}...")
        request = urllib.request.Request(f"{dashboard}/api/train/v2/runs/v1",
                                         headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
        runs = urllib.request.urlopen(request, timeout=30).read().decode()
        assert "train_loop_config" in runs, f"no Train run state to search: {runs[:300]}"
        if secret in runs:
            hits.append("ray train run state")
    return hits


# ---------------------------------------------------------------- a cloud's instance metadata
class FakeInstanceMetadata:
    """An EC2 instance metadata service (IMDSv2) on 127.0.0.1: no spot notice (404) until ``reclaim``,
    then ``spot/instance-action`` says terminate at that time, as AWS does two minutes ahead."""

    def __init__(self):
        import http.server
        import threading
        notice: dict = {}
        self.notice = notice

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: str = "") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def do_PUT(self):  # IMDSv2: a session token first
                ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                self._send(200, "imds-token") if ok else self._send(400)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != "imds-token":
                    self._send(401)
                elif self.path == "/latest/meta-data/spot/instance-action" and notice:
                    self._send(200, json.dumps(notice))
                else:
                    self._send(404)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reclaim(self, in_seconds: float) -> None:
        when = time.gmtime(time.time() + in_seconds)
        self.notice.update(action="terminate", time=time.strftime("%Y-%m-%dT%H:%M:%SZ", when))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- datasets and TensorBoard in tests
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


def read_events(folder: Path) -> dict:
    """Scalars, images and HParams summaries of every event file in a (trial) folder."""
    import glob

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    found: dict = {"scalars": set(), "images": set(), "hparams": set(), "hparam_values": {}}
    for path in glob.glob(str(folder / "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    found["hparams"].add(value.tag)
                    if value.tag == "_hparams_/session_start_info":
                        from tensorboard.plugins.hparams import plugin_data_pb2
                        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                        found["hparam_values"] = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                                  for k, v in data.session_start_info.hparams.items()}
                elif plugin == "images" or value.HasField("image"):
                    found["images"].add(value.tag)
                elif plugin == "scalars" or value.HasField("simple_value"):
                    found["scalars"].add(value.tag)
    return found
