"""Ray nodes started with ``ray start`` on 127.0.0.1, each with its own temp folder: a head, and nodes
joining it. The caller owns what it started (the ``RayNode`` returned), and stops it by its temp folder."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .processes import free_port, stop_processes_mentioning

DRAIN_S = 20  # the KubeRay manifests' RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (a pod's node drains this long)


@dataclass(frozen=True)
class RayNode:
    temp: str  # the node's own temp folder: every process of the node names it on its command line
    gcs: str  # the cluster's GCS address (a head's own, read from ``ray start``; "" if it printed none)
    dashboard: Optional[str] = None  # a head's dashboard URL; None for a node joining a head


def start_ray_node(temp_prefix: str, head: Optional[str] = None, args: tuple = (), env: Optional[dict] = None,
                   cwd: Optional[Path] = None, tries: int = 4) -> RayNode:
    """``ray start`` on 127.0.0.1 with its own temp folder: a head (``head`` None) or a node joining the
    head at GCS address ``head``. Ray picks the GCS port (``--port 0``) and its other ports where it can;
    the agents' ports are ones free a moment ago, so a try whose port was taken meanwhile fails, is
    stopped, and the next try takes new ports. ``env``/``cwd``: the node's own environment and working
    folder (its workers inherit both)."""
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
                return RayNode(temp=temp, gcs=head)
            gcs = re.search(r"--address='([0-9.]+:\d+)'", started.stdout + started.stderr)
            return RayNode(temp=temp, gcs=gcs.group(1) if gcs else "", dashboard=f"http://127.0.0.1:{dashboard}")
        failure = (started.stdout + started.stderr)[-3000:]
        stop_processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
    raise RuntimeError(f"ray start failed {tries} times; last output:\n{failure}")


def start_blocking_ray_node(temp_prefix: str, head: str, dashboard: str, resource: str, args: tuple = (),
                            env: Optional[dict] = None, cwd: Optional[Path] = None, tries: int = 4
                            ) -> tuple[subprocess.Popen, str]:
    """``ray start --address HEAD --block`` as a pod's container runs it (the process stays, and its SIGTERM
    handler drains the node), with its own temp folder, joined once the cluster lists a live node with
    the custom ``resource`` (which only it has). Returns the process and its temp folder; the caller
    stops both (``stop_processes_mentioning(temp)``)."""
    from ray.util.state import list_nodes

    from .processes import wait_for
    ray = str(Path(sys.executable).parent / "ray")
    env = dict(env or os.environ, RAY_AUTH_MODE="token")
    failure = ""
    for _ in range(tries):
        temp = tempfile.mkdtemp(prefix=temp_prefix)
        ports = {"--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                 "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
        command = [ray, "start", "--address", head, "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", temp,
                   "--disable-usage-stats", *[str(x) for kv in ports.items() for x in kv], *args]
        with open(Path(temp) / "ray-start.log", "w") as log:  # the node's own output, beside its files
            proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

        def joined() -> bool:
            nodes = list_nodes(address=dashboard, detail=True, raise_on_missing_output=False)
            return proc.poll() is not None or any(n.state == "ALIVE" and resource in (n.resources_total or {})
                                                  for n in nodes)
        wait_for(joined, 120, f"a node with {resource!r} to join")
        if proc.poll() is None:
            return proc, temp
        failure = (Path(temp) / "ray-start.log").read_text()[-3000:]
        stop_processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
    raise RuntimeError(f"ray start --block failed {tries} times; last output:\n{failure}")
