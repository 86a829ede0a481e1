"""Ray Train's checkpoints as a run leaves them in storage (its checkpoint manager's snapshot)."""
from __future__ import annotations

import json
from pathlib import Path


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
