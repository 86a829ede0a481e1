"""What each option is for, as its declaration in ``config.Config`` says it: which commands take it, its
``Role`` (whether a rerun must keep it, what a sweep does with it, whether it is of the process rather
than of a run), the networks it shapes, whether population-based training changes it mid-run, and its
test-time default. ``role_problems`` finds a field that leaves one out."""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

from .schema import setting

# Which commands take an option (as a flag): a command's parser and --help list only its own.
TRAINING = ("train", "bench")  # bench times training iterations (and Ray runs) as train describes them
RUN = TRAINING + ("test", "eval")  # a run under <checkpoints_dir>/<name> and its dataset
ANY = RUN + ("translate", "export")  # what shapes a generator and preprocesses its images
RAY = TRAINING + ("translate",)  # what places work on a Ray cluster
STORAGE = RAY + ("export",)  # object storage settings
TEST_TIME = ("test", "eval", "translate", "export")  # how a trained generator runs

# What a sweep does with an option: searches it if asked | sets it itself | lets its base options set it.
SEARCH, FIXED, BASE = "search", "fixed", "base"


@dataclass(frozen=True)
class Role:
    """What an option is for, as a rerun, a sweep and a stored run see it."""
    what: str
    rerun: bool  # a rerun must keep it: it decides what is trained (core/rerun.py refuses another value)
    sweep: str  # SEARCH, FIXED or BASE
    process: bool = False  # of the process that runs the command: a stored run's options never set it (stored.py)


TRAINED = Role("decides what a run trains: data, networks, objective, schedule, seed, numerics", True, SEARCH)
DATA = Role("which data a run trains on: a sweep sets it for each pair", True, FIXED)
CARRIED = Role("how a run is carried out, logged and saved, or how its results are made", False, SEARCH)
WHICH = Role("which run or checkpoint: a sweep names its trials itself", False, FIXED)
PLACED = Role("what a run's workers are placed on: a sweep's base options may set it for every trial", False, BASE)
PROCESS = Role("of the process (its local folders, the cluster it joins): a sweep's base options may set it",
               False, BASE, process=True)
PROCESS_PER_TRIAL = Role("of the process (where its results go, the store, what it continues): a sweep sets it "
                         "for each trial", False, FIXED, process=True)
NETWORKS = "GD"  # what ``shapes`` may name: the generators, the discriminators


def opt(default, role: Role, help: str, *, commands: tuple[str, ...], shapes: str = "", scheduled: bool = False,
        test: Any = MISSING, **limits):
    """An option: its ``role``; the ``commands`` that take it as a flag; the networks whose shape it sets
    (``shapes``: G, D or GD); ``scheduled``: population-based training may change it in a running trial
    (the trainer reads it at every step); ``test``: its default at test time (the reference's
    test_options.py); ``limits``: schema.setting's choices and bounds."""
    return setting(default, help, role=role, commands=commands, shapes=shapes, scheduled=scheduled, test=test,
                   **limits)


def role_problems(cls: type) -> list[str]:
    """What the fields of a dataclass of options leave undeclared or contradict: each names its Role and
    the commands that take it; only an option a rerun must keep shapes a network; only one a sweep may
    search and a rerun must keep is changed mid-run."""
    problems = []
    for f in dataclasses.fields(cls):
        meta, name = f.metadata, f.name
        role = meta.get("role")
        if not isinstance(role, Role):
            problems.append(f"{name}: no role (declare it with opt(default, ROLE, help, ...))")
            continue
        if role.sweep not in (SEARCH, FIXED, BASE):
            problems.append(f"{name}: its role's sweep {role.sweep!r} is not {SEARCH}, {FIXED} or {BASE}")
        if not meta.get("commands") or not set(meta["commands"]) <= set(ANY):
            problems.append(f"{name}: commands {meta.get('commands')!r} are not some of {', '.join(ANY)}")
        if not isinstance(meta.get("shapes"), str) or set(meta["shapes"]) - set(NETWORKS):
            problems.append(f"{name}: shapes {meta.get('shapes')!r} is not some of {NETWORKS}")
        elif meta["shapes"] and not role.rerun:
            problems.append(f"{name}: shapes a network, so a rerun must keep it")
        if meta.get("scheduled") and not (role.rerun and role.sweep == SEARCH):
            problems.append(f"{name}: changed mid-run by a sweep, so it is searched and a rerun keeps it")
    return problems


