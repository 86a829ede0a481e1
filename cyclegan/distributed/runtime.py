"""Ray itself, as every part of the Ray layer starts it: the connection, Ray Data's output, resources."""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

from ..config import ConfigError


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
