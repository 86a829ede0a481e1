"""What a command does with a name that already has a run (or a sweep): one rule for train (in this
process or on Ray) and sweep, said in each command's first lines of output.

- Nothing under the name: it starts.
- The same options (a sweep: the same experiment): it continues from its last checkpoint. So a job that
  a scheduler runs again (a KubeRay RayJob's backoffLimit, a restarted pod, a user's second submit)
  picks up where the first left off, and a finished one ends at once.
- Other options: refused before anything is written, naming each difference. Options that change only
  how a run is carried out (workers, devices, logging, save intervals ...) may differ; those that decide
  what is trained (data, networks, objective, schedule, seed, numerics) may not: ``config.RUN_KEYS``, the
  options whose declared role says a rerun must keep them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from .config import RUN_KEYS, Config, ConfigError, shown
from .storage import is_remote

log = logging.getLogger("cyclegan")


def _dataroot(value: Optional[str]) -> Optional[str]:
    return value if not value or is_remote(value) else str(Path(value).resolve())


def run_differences(saved: dict, cfg: Config) -> list[str]:
    """The options of ``cfg`` that decide what is trained and differ from a run's saved ones, as
    ``key: <saved> in the run, <now> now``. A built-in pair's data is compared by its settings (its folder
    is made where the run keeps it)."""
    now = cfg.to_dict()
    found = []
    for key in RUN_KEYS:
        if key not in saved:
            continue
        before, after = saved[key], now[key]
        if key == "dataroot":
            if cfg.dataroot is None:
                continue  # the built-in pair: its builtin_* settings decide
            before, after = _dataroot(before), _dataroot(after)
        if key.startswith("builtin") and cfg.dataroot is not None:
            continue  # not used with a dataroot
        if before != after:  # YAML's 1 and 1.0, .inf and inf compare equal
            found.append(f"{key}: {shown(key, before)} in the run, {shown(key, after)} now")
    return found


def rerun_run(cfg: Config, where: str, saved: Optional[dict], explicit: bool) -> bool:
    """The rule for a training run at ``where`` whose options file held ``saved`` (None: no run to continue):
    says what happens, and whether the run continues. ``explicit``: --continue_train or --resume, which
    continue with the options given now."""
    if saved is None:
        log.info("run %r: starting in %s", cfg.name, where)
        return False
    if not explicit:
        check_rerun("run", where, run_differences(saved, cfg),
                    "give another --name, or --continue_train to continue it with the options given now")
    log.info("run %r: continuing from its last checkpoint in %s (%s)", cfg.name, where,
             "as asked" if explicit else "the same options")
    return True


def check_rerun(what: str, where: str, differences: list[str], ways_out: str) -> None:
    """Refuse continuing ``what`` at ``where`` with other options, naming each difference."""
    if differences:
        raise ConfigError(f"name: the {what} at {where} exists with other options ({'; '.join(differences)}); "
                          f"{ways_out}")


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def experiment_differences(saved: dict, now: dict) -> list[str]:
    """What differs between a sweep's stored experiment and the one given now (both as stored: YAML
    values), by key (``search.num_samples``, ``space.lr``, ``pairs`` ...). Where the store is
    (``storage_options``) may differ: it is not what is searched."""
    before, after = _flat(saved, ""), _flat(now, "")
    keys = [k for k in dict.fromkeys([*before, *after]) if not k.startswith("storage_options")]
    return [f"{k}: {_listed(k, before.get(k))} in the sweep, {_listed(k, after.get(k))} now"
            for k in keys if before.get(k) != after.get(k)]


def _listed(key: str, value: Any) -> str:
    """A search space's entry, a pair list: shown as JSON, shortened (names are checked elsewhere)."""
    if isinstance(value, (list, tuple)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 80 else text[:77] + "..."
    return shown(key, value)
