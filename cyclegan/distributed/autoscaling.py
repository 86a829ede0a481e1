"""Spot first, on-demand only when spot cannot be had: how Ray's autoscaler picks a node type for the
cluster files (``cluster/aws-spot.yaml``, ``cluster/gcp-spot.yaml``).

Ray 2.60's autoscaler v2 (the default of ``ray up``) ranks node types by fit, then by ``priority``, and
demotes a type only after one of its instances was granted but never joined (``ALLOCATION_TIMEOUT``, an
hour by default): a spot launch the cloud refuses outright (AWS ``InsufficientInstanceCapacity``, a GCE
stockout) is asked for again as spot, round after round, and the on-demand group never starts. The v1
autoscaler records every refused launch (``NodeProviderAvailabilityTracker``, for 30 minutes) and hands
that record to its utilisation scorer, which its ``RAY_AUTOSCALER_UTILIZATION_SCORER`` setting names;
Ray's default scorer ignores the record. The launcher files run the v1 autoscaler with this scorer:
Ray's own score, behind it whether the type's last launch worked, and the node type's ``priority`` to
break ties (spot 10, on-demand 0), read from the cluster config Ray keeps on the head.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

from .ray_internals import default_utilization_scorer, last_launch_worked

SCORER = f"{__name__}.spot_first_scorer"  # what RAY_AUTOSCALER_UTILIZATION_SCORER names
CONFIG_VARIABLE = "CYCLEGAN_AUTOSCALING_CONFIG"  # default: where `ray up` puts the cluster config on the head
DEFAULT_CONFIG = "~/ray_bootstrap_config.yaml"


@functools.lru_cache(maxsize=4)
def node_priorities(path: str) -> dict[str, int]:
    """Each node type's ``priority`` (0 when it has none) in a cluster config."""
    import yaml
    try:
        with open(os.path.expanduser(path)) as f:
            config = yaml.safe_load(f) or {}
    except OSError:
        return {}
    return {name: int(spec.get("priority", 0) or 0) for name, spec in (config.get("available_node_types") or {}).items()}


def spot_first_scorer(node_resources: dict, resources: list, node_type: str, *, node_availability_summary
                      ) -> Optional[tuple]:
    """Ray's score of ``node_type`` for ``resources``, put behind every type whose launches work when its
    last launch was refused, and ahead of equals when its priority is higher."""
    score = default_utilization_scorer(node_resources, resources, node_type,
                                       node_availability_summary=node_availability_summary)
    if score is None:
        return None
    launches = last_launch_worked(node_availability_summary, node_type)
    priority = node_priorities(os.environ.get(CONFIG_VARIABLE, DEFAULT_CONFIG)).get(node_type, 0)
    return (launches, *score, priority)
