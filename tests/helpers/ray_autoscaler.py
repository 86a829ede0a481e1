"""Ray's autoscaler code that the tests drive to check the shipped cluster files: what `ray up` makes of a
file, which node types Ray's v1 and v2 autoscalers launch for a demand, and what a node's start commands
get from the autoscaler. None of it is Ray's public API, so it is kept here, in one place, and
tests/distributed/test_ray_internals.py checks that every name below still exists in the installed Ray.

Each function imports Ray's module when called (the test files import this one cheaply)."""
from __future__ import annotations

import copy
import functools
from typing import Any, Callable

# Ray's modules and the names the functions below take from them, for the internals test.
NAMES = {
    "ray.autoscaler._private.util": ("prepare_config", "validate_config", "with_head_node_ip", "LoadMetricsSummary",
                                     "get_demand_report"),
    "ray._private.ray_constants": ("DEBUG_AUTOSCALING_STATUS",),
    "ray._raylet": ("GcsClient",),
    "ray.autoscaler._private.resource_demand_scheduler": ("ResourceDemandScheduler", "get_nodes_for"),
    "ray.autoscaler._private.node_provider_availability_tracker": ("NodeProviderAvailabilityTracker",),
    "ray.autoscaler._private.commands": ("_set_up_config_for_head_node",),
    "ray.autoscaler._private.readonly.node_provider": ("ReadOnlyNodeProvider",),
    "ray.autoscaler._private.constants": ("RESOURCES_ENVIRONMENT_VARIABLE",),
    "ray.autoscaler.v2.instance_manager.config": ("AutoscalingConfig",),
    "ray.autoscaler.v2.scheduler": ("ResourceDemandScheduler", "SchedulingRequest"),
    "ray.autoscaler.v2.utils": ("ResourceRequestUtil",),
}


def prepared(config: dict) -> dict:
    """A cluster file as `ray up` prepares it (defaults filled in), leaving ``config`` as it was."""
    from ray.autoscaler._private.util import prepare_config
    return prepare_config(copy.deepcopy(config))


def validate(config: dict) -> None:
    """Raises where the prepared file breaks Ray's cluster schema."""
    from ray.autoscaler._private.util import validate_config
    validate_config(prepared(config))


def launched_v2(config: dict, bundle: dict) -> list[str]:
    """The node types Ray's v2 autoscaler launches for one pending ``bundle``."""
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
    from ray.autoscaler.v2.utils import ResourceRequestUtil
    autoscaling = AutoscalingConfig(copy.deepcopy(config), skip_content_hash=True)
    request = SchedulingRequest(
        disable_launch_config_check=True, node_type_configs=autoscaling.get_node_type_configs(),
        max_num_nodes=autoscaling.get_max_num_worker_nodes(),
        resource_requests=ResourceRequestUtil.group_by_count([ResourceRequestUtil.make(bundle)]),
        cloud_resource_availabilities={}, recoverable_resource_availabilities={})
    return [launch.instance_type for launch in ResourceDemandScheduler().schedule(request).to_launch
            for _ in range(launch.count)]


def launched_v1(config: dict, bundle: dict, summary: Any) -> dict:
    """The node types Ray's v1 autoscaler launches for one pending ``bundle``, with the scorer that
    RAY_AUTOSCALER_UTILIZATION_SCORER names and Ray's record of failed launches (``summary``)."""
    from ray.autoscaler._private.resource_demand_scheduler import ResourceDemandScheduler, get_nodes_for
    ready = prepared(config)
    scheduler = ResourceDemandScheduler(None, ready["available_node_types"], ready["max_workers"],
                                        ready["head_node_type"], ready["upscaling_speed"])
    scorer = functools.partial(scheduler.utilization_scorer, node_availability_summary=summary)
    added, _ = get_nodes_for(ready["available_node_types"], {}, ready["head_node_type"], 10, [bundle], scorer)
    return dict(added)


def availability_tracker(timer: Callable[[], float], ttl: float) -> Any:
    """Ray's v1 record of failed launches by node type (what the autoscaler keeps when a cloud refuses one)."""
    from ray.autoscaler._private.node_provider_availability_tracker import NodeProviderAvailabilityTracker
    return NodeProviderAvailabilityTracker(timer=timer, ttl=ttl)


def head_bootstrap_config(config: dict) -> Any:
    """The config file `ray up` writes on the head (Ray's own function), for Ray's read-only provider: the
    head's autoscaler runs with the file's node types and cannot reach a cloud. A temporary file object,
    to be used as a context manager."""
    from ray.autoscaler._private.commands import _set_up_config_for_head_node
    from ray.autoscaler._private.readonly.node_provider import ReadOnlyNodeProvider
    local = dict(copy.deepcopy(config), provider={"type": "readonly"})
    _, written = _set_up_config_for_head_node(local, ReadOnlyNodeProvider(local["provider"], "cyclegan"), False)
    return written


def node_start_environment(resources: dict) -> dict:
    """The variables the autoscaler's node updater gives a node's start commands: its node type's resources."""
    from ray.autoscaler._private.constants import RESOURCES_ENVIRONMENT_VARIABLE
    return {RESOURCES_ENVIRONMENT_VARIABLE: resources}


def with_head_ip(commands: list[str], head_ip: str) -> list[str]:
    """A worker's start commands as the autoscaler runs them: with the head's address (RAY_HEAD_IP)."""
    from ray.autoscaler._private.util import with_head_node_ip
    return with_head_node_ip(commands, head_ip)


def demand_report(gcs: str) -> str:
    """The "Demands:" part of `ray status`: the autoscaler's last report in the GCS at ``gcs``, formatted by
    the function `ray status` uses, read in this process ('' before the autoscaler's first report)."""
    import json

    from ray._private import ray_constants
    from ray._raylet import GcsClient
    from ray.autoscaler._private.util import LoadMetricsSummary, get_demand_report
    status = GcsClient(address=gcs).internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS.encode(), None)
    report = json.loads(status).get("load_metrics_report") if status else None
    return get_demand_report(LoadMetricsSummary(**report)) if report else ""
