"""Ray itself, as every part of the Ray layer starts it: the connection, Ray Data's output, resources, and
the checks that refuse before anything starts what a cluster cannot do."""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

from ..core.config import Config, ConfigError
from ..core.storage import Storage, is_remote
from .streams import LOAD_TASK_CPUS

log = logging.getLogger("cyclegan")


def init_ray(address: Optional[str], num_cpus: Optional[int] = None) -> None:
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")  # set for jobs submitted to a cluster
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 configure_logging=False, log_to_driver=True)


def quiet_data() -> None:
    """Ray Data's per-dataset progress bars would print one per epoch and worker."""
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def parse_resources(text: Optional[str]) -> dict:
    """``--worker_resources``: a JSON object of custom resource names and amounts."""
    if not text:
        return {}
    try:
        resources = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"worker_resources: {text!r} is not a JSON object ({e.msg})") from None
    if not isinstance(resources, dict) or not all(isinstance(v, (int, float)) and v >= 0
                                                  for v in resources.values()):
        raise ConfigError(f"worker_resources: {text!r} must map resource names to amounts >= 0")
    return resources


def check_no_secrets(store: Storage) -> None:
    """Keys would have to travel to other nodes: refused before Ray starts."""
    if store.secrets:
        raise ConfigError("storage_options: access_key, secret_key and session_token are used by this process "
                          "only and never sent to Ray workers; give every node its own credentials (an instance "
                          "role, IRSA or workload identity, or the AWS_* variables) and keep endpoint_url and "
                          "region in --storage_options")


def check_cluster(cfg: Config, store: Storage, paths: dict[str, Optional[str]]) -> None:
    """Refuse, before anything starts, what would silently go wrong on a cluster: local paths (``paths``: option -> path) when the nodes have their own disks."""
    import ray
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or cfg.shared_filesystem:
        return
    for key, path in paths.items():
        if path and not is_remote(path):
            hint = (f"upload it (cyclegan data upload {path} s3://<bucket>/<prefix>) and give that URI"
                    if key == "dataroot" else "give an s3:// or gs:// URI")
            raise ConfigError(f"{key}: {path!r} is a local folder, and this Ray cluster has {len(nodes)} nodes, "
                              f"each with its own disk: {hint}, or pass --shared_filesystem if every node "
                              f"mounts {path!r} (NFS, EFS, Filestore)")


def check_data_room(cfg: Config) -> None:
    """Ray Data's tasks read and decode the images on CPUs beside the workers'. Workers that would take
    every CPU of the cluster would start and then wait for data forever: refused before anything starts
    on a Ray instance of this process's own; on a cluster given by address (which an autoscaler may
    grow for the data tasks) a warning says the same."""
    import math

    import ray
    total = ray.cluster_resources().get("CPU", 0.0)
    per_worker = cfg.cpus_per_worker
    fit = cfg.max_workers if per_worker <= 0 else min(cfg.max_workers, math.floor(total / per_worker + 1e-9))
    workers = max(cfg.min_workers, fit)
    taken = workers * per_worker
    if taken > total or total - taken >= LOAD_TASK_CPUS - 1e-9:
        return  # the workers wait for capacity (an autoscaler's), or data tasks have room beside them
    room = math.floor((total - LOAD_TASK_CPUS) / workers * 4) / 4  # in quarter CPUs
    change = (f"give --cpus_per_worker {room:g}" if room > 0 else "give fewer --num_workers") + \
        " (or more CPUs: --address of a larger cluster)"
    message = (f"num_workers {cfg.num_workers}: {workers} workers x cpus_per_worker {per_worker:g} = {taken:g} "
               f"of the cluster's {total:g} CPUs leave {total - taken:g} for the data tasks that read and "
               f"decode the images (each needs {LOAD_TASK_CPUS:g}): the workers would start and wait for "
               f"data forever; {change}")
    if cfg.address or os.environ.get("RAY_ADDRESS"):
        log.warning("%s, unless an autoscaler adds nodes for the data tasks", message)
    else:
        raise ConfigError(message)
