"""Tiny Tune trainables of the sweep tests, in a module of their own that imports Ray alone.

Ray pickles a module-level function by reference: every trial actor imports the module that defines it.
Defined in a test module, each actor would import that module's imports too (the package, torch), seconds
of CPU per trial for functions that only report a value."""
from __future__ import annotations

import os


def report_session_token(config):
    from ray import tune
    tune.report({"token": os.environ.get("AWS_SESSION_TOKEN", "")})


def meet_the_others(config):
    import ray
    from ray import tune
    meeting = ray.get_actor(config["meeting"])
    tune.report({"met": ray.get(meeting.arrive.remote()), "gpus": [str(g) for g in ray.get_gpu_ids()]})


def epochs_at_score(config):
    from ray import tune
    for epoch in range(1, 5):
        tune.report({"epochs": epoch, "score": float(config["x"])})
