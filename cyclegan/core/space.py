"""The search space of an experiment file (``space:``): which options a sweep may search and how each
is drawn, the first points to try, and what population-based training may change in a running trial.
Each value a space can give is checked as an option before any trial starts."""
from __future__ import annotations

import difflib
from typing import Any

from .config import FIELDS, NOT_SEARCHABLE, SCHEDULED_KEYS, ConfigError, from_dict

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
TIED_LAMBDA = "lambda_cycle"  # one value for lambda_A and lambda_B
TIED = ("lambda_A", "lambda_B")  # what it sets
# What population-based training may change in a running trial: what the trainer reads at every step
# (config.SCHEDULED_KEYS: the optimizers' base rate, the objective's weights, the pools' size), and
# lambda_cycle when both it sets are. Everything else (the networks, the data) is drawn once per trial:
# a clone takes it from the trial it copies.
MUTABLE = tuple(key for key in (TIED_LAMBDA, *SCHEDULED_KEYS) if set(TIED if key == TIED_LAMBDA else [key])
                <= set(SCHEDULED_KEYS))


def targets(key: str) -> list[str]:
    """The training options a searched key sets."""
    return list(TIED) if key == TIED_LAMBDA else [key]


def check_value(key: str, value: Any, base: dict, what: str) -> None:
    try:
        from_dict({**base, **{k: value for k in targets(key)}}, source="experiment")
    except ConfigError as e:
        raise ConfigError(f"space.{key}: {what} {value!r} is rejected: {e}") from None


def parse_space(space: Any, base: dict) -> dict[str, tuple[str, list]]:
    """Each key of ``space:`` as (distribution, its arguments), every value it can give checked with the
    base options."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("space: needs at least one option to search, e.g. lambda_cycle: {loguniform: [3, 30]}")
    if TIED_LAMBDA in space and (set(TIED) & set(space)):
        raise ConfigError(f"space.{TIED_LAMBDA}: sets lambda_A and lambda_B together; do not also search them")
    return {key: _entry(key, spec, base) for key, spec in space.items()}


def _entry(key: str, spec: Any, base: dict) -> tuple[str, list]:
    if key not in FIELDS and key != TIED_LAMBDA:
        close = difflib.get_close_matches(key, list(FIELDS) + [TIED_LAMBDA], n=1)
        raise ConfigError(f"space.{key}: unknown option" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"space.{key}: not searchable (the sweep sets it per pair and trial)")
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"space.{key}: {spec!r} must be a list of choices or one of "
                          f"{{choice: [...]}}, {{uniform: [low, high]}}, {{loguniform: [low, high]}}, "
                          f"{{randint: [low, high]}}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}: {kind} needs a non-empty list, got {args!r}")
    if kind == "choice":
        for value in args:
            check_value(key, value, base, "choice")
        return kind, args
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"space.{key}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high and not (kind == "randint" and low == high):
        raise ConfigError(f"space.{key}: empty range [{low}, {high}] (low must be below high)")
    field_type = "float" if key == TIED_LAMBDA else FIELDS[key].type
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"space.{key}: randint needs integer bounds, got {args!r}")
    if kind in ("uniform", "loguniform") and "int" in str(field_type):
        raise ConfigError(f"space.{key}: an integer option: use randint or choice, not {kind}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"space.{key}: loguniform needs low > 0, got {low}")
    for value in (low, high):
        check_value(key, value, base, "bound")
    return kind, [low, high]


def check_points(points: list, space: dict, base: dict) -> None:
    """``search.points_to_evaluate``: each a value for every key of the space, inside it."""
    for i, point in enumerate(points):
        where = f"search.points_to_evaluate[{i}]"
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"{where}: {point!r} must be a mapping of space keys to values")
        missing = [key for key in space if key not in point]
        if missing:  # Optuna's warm start takes whole points
            raise ConfigError(f"{where}: no value for space.{missing[0]} (a point gives every key of the space)")
        for key, value in point.items():
            if key not in space:
                raise ConfigError(f"{where}.{key}: not a key of space ({', '.join(space)})")
            kind, args = space[key]
            inside = value in args if kind == "choice" else (
                isinstance(value, (int, float)) and not isinstance(value, bool) and args[0] <= value <= args[1])
            if not inside:
                raise ConfigError(f"{where}.{key}: {value!r} is outside space.{key} ({kind} {args})")
            check_value(key, value, base, where + " value")


def mutations(search: Any, space: dict) -> list[str]:
    """The space keys population-based training changes mid-run: those ``search`` (an experiment.Search)
    names in hyperparam_mutations, or else every key of the space that may change."""
    if search.hyperparam_mutations is not None:
        return list(search.hyperparam_mutations)
    return [key for key in space if key in MUTABLE]
