"""``cyclegan cluster watch-preemption``: a cloud's spot notice, turned into Ray's own drain of the node.

Ray does not read the clouds' notices itself. This watcher runs beside Ray on every spot node (the
cluster files start it): it polls the instance metadata service, and when the instance is about to
be reclaimed it drains the node through Ray (``ray drain-node``, reason preemption, with the time
left as the deadline). Ray Train sees the draining node, ``ray.train.get_preemption_info()`` fires in
the workers, every worker writes a checkpoint at the same step, and the run resumes from it on the
nodes that remain or replace it.

Notices read:
- AWS: ``/latest/meta-data/spot/instance-action`` (IMDSv2; 404 until a reclaim is scheduled, then
  ``{"action": "terminate", "time": ...}``, two minutes ahead) and the rebalance recommendation
  ``/latest/meta-data/events/recommendations/rebalance`` (an elevated risk, no deadline: logged, and
  drained only with ``--drain_on_rebalance``);
- GCE: ``/computeMetadata/v1/instance/preempted`` (``TRUE`` once preempted; 30 seconds left);
- Kubernetes: the pod's termination (a reclaimed spot node evicts its pods). The worker container's
  preStop hook runs ``watch-preemption --provider kubernetes``: it drains at once with the pod's
  termination grace period as the deadline, then holds Ray up (``--hold_s``) while the workers write
  their checkpoint, before Kubernetes sends SIGTERM to Ray.
On any provider, a SIGTERM to the watcher itself (the instance shutting down) drains the node too.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from . import COMMANDS

log = logging.getLogger("cyclegan")

METADATA_URLS = {"aws": "http://169.254.169.254", "gcp": "http://metadata.google.internal"}
GCE_NOTICE_S = 30  # what GCE gives a preempted instance
IMDS_TOKEN_TTL_S = 21600


@dataclass
class Notice:
    what: str  # for the drain message and the log
    deadline: Optional[float]  # seconds since the epoch; None: no deadline (a rebalance recommendation)


def _get(url: str, headers: dict, timeout: float, method: str = "GET") -> Optional[str]:
    """The body, or None for a 404 (no notice); other failures raise OSError."""
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def aws_notice(base: str, timeout: float = 2.0) -> Optional[Notice]:
    """The spot interruption notice (or a rebalance recommendation) of this EC2 instance, through IMDSv2."""
    token = _get(f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)},
                 timeout, method="PUT")
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    action = _get(f"{base}/latest/meta-data/spot/instance-action", headers, timeout)
    if action:
        body = json.loads(action)
        return Notice(f"spot instance-action {body.get('action', '?')}", _time(body["time"]))
    rebalance = _get(f"{base}/latest/meta-data/events/recommendations/rebalance", headers, timeout)
    if rebalance:
        return Notice(f"rebalance recommendation at {json.loads(rebalance).get('noticeTime', '?')}", None)
    return None


def gcp_notice(base: str, timeout: float = 2.0) -> Optional[Notice]:
    preempted = _get(f"{base}/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"}, timeout)
    if preempted and preempted.strip().upper() == "TRUE":
        return Notice("GCE preemption", time.time() + GCE_NOTICE_S)
    return None


POLLERS: dict[str, Callable[[str], Optional[Notice]]] = {"aws": aws_notice, "gcp": gcp_notice}


def drain(notice: Notice, address: Optional[str], node_id: Optional[str]) -> bool:
    """Ray's own ``ray drain-node`` (the call the autoscaler makes for a preempted node): reason
    preemption, with the seconds left. Without ``node_id``, the node this runs on."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    command = [ray, "drain-node", "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", notice.what]
    if address:
        command += ["--address", address]
    if node_id:
        command += ["--node-id", node_id]
    if notice.deadline is not None:
        command += ["--deadline-remaining-seconds", str(max(0, int(notice.deadline - time.time())))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        log.error("ray drain-node failed: %s", (done.stdout + done.stderr).strip()[-2000:])
        return False
    log.warning("node drained for preemption (%s)", notice.what)
    return True


def watch(provider: str, address: Optional[str] = None, node_id: Optional[str] = None,
          metadata_url: Optional[str] = None, poll_s: float = 5.0, grace_period_s: float = 25.0,
          hold_s: Optional[float] = None, drain_on_rebalance: bool = False,
          stop: Optional[threading.Event] = None) -> Optional[Notice]:
    """Wait for a notice (polled, or a SIGTERM; ``kubernetes``: now), drain the node, return the notice.
    ``hold_s``: then wait this long (Kubernetes: keep Ray up while the checkpoint is written)."""
    stop = stop or threading.Event()
    received: list[Notice] = []

    def on_sigterm(signum, frame):  # the instance or pod is going: the grace period is what is left
        received.append(Notice("SIGTERM", time.time() + grace_period_s))
        stop.set()
    if provider == "kubernetes":
        received.append(Notice("pod termination", time.time() + grace_period_s))
    elif threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    poll = POLLERS.get(provider)
    base = (metadata_url or METADATA_URLS.get(provider, "")).rstrip("/")
    reported: set = set()
    if poll is not None:
        log.info("watching %s for preemption notices every %.1f s", base, poll_s)
    while poll is not None and not received and not stop.is_set():
        try:
            notice = poll(base)
        except (OSError, ValueError, KeyError) as e:  # metadata briefly unreachable or odd: try again
            notice = None
            if type(e) not in reported:
                log.warning("instance metadata at %s: %s", base, e)
                reported.add(type(e))
        if notice is not None and (notice.deadline is not None or drain_on_rebalance):
            received.append(notice)
            break
        if notice is not None and notice.what not in reported:
            log.warning("%s: not draining (--drain_on_rebalance drains on it)", notice.what)
            reported.add(notice.what)
        stop.wait(poll_s)
    if not received:
        return None
    drain(received[0], address, node_id)
    if hold_s:
        time.sleep(hold_s)
    return received[0]


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help=COMMANDS["cluster"], description=__doc__)
    cluster_sub = p.add_subparsers(dest="cluster_command", required=True)
    w = cluster_sub.add_parser("watch-preemption", help="drain this Ray node (reason: preemption, with the time left) "
                                                        "when the cloud announces that it will be reclaimed")
    w.add_argument("--provider", required=True, choices=("aws", "gcp", "kubernetes"),
                   help="aws/gcp: poll the instance metadata; kubernetes: drain now (the worker pod's preStop hook)")
    w.add_argument("--address", help="the Ray cluster (default: the one this node belongs to)")
    w.add_argument("--node_id", help="the Ray node to drain, in hex (default: the one on this machine)")
    w.add_argument("--metadata_url", help="instance metadata service (default: the cloud's own)")
    w.add_argument("--poll_s", type=float, default=5.0, help="seconds between polls (default: 5)")
    w.add_argument("--grace_period_s", type=float, default=25.0,
                   help="seconds left after a SIGTERM or a pod termination (default: 25)")
    w.add_argument("--hold_s", type=float, default=None,
                   help="after draining, wait this long before returning (kubernetes: Ray stays up meanwhile)")
    w.add_argument("--drain_on_rebalance", action="store_true",
                   help="AWS: drain on a rebalance recommendation too, not only on the interruption notice")
    w.set_defaults(run=run_watch_preemption)


def run_watch_preemption(args: argparse.Namespace) -> int:
    notice = watch(args.provider, address=args.address, node_id=args.node_id, metadata_url=args.metadata_url,
                   poll_s=args.poll_s, grace_period_s=args.grace_period_s, hold_s=args.hold_s,
                   drain_on_rebalance=args.drain_on_rebalance)
    print(f"preemption notice: {notice.what}" if notice else "stopped without a notice")
    return 0
