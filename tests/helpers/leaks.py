"""The credential-leak search: where a secret appears in files, bucket objects, and Ray's and Ray Train's
state. (Not named secrets.py, which would shadow the standard library's module wherever this folder is
on sys.path.)"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


def places_holding(secret: str, folders=(), s3=None, buckets=(), dashboard: Optional[str] = None) -> list[str]:
    """Where ``secret`` appears: in any file below ``folders``, any object of ``buckets`` (an s3fs
    filesystem), and, with a dashboard URL, Ray's state (jobs, actors, tasks) and Ray Train's run state
    (the run settings, train_loop_config included). Returns the places; the runs' state must be non-empty."""
    needle = secret.encode()
    hits = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            try:
                data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            except OSError:
                continue  # a file removed meanwhile
            at = data.find(needle)
            if at >= 0:  # the place and what surrounds it, to see what leaked it
                hits.append(f"{path}: ...{data[max(0, at - 150):at + 40].decode(errors='replace')}...")
    if buckets:
        s3.invalidate_cache()  # a listing cached earlier may name objects deleted since (old checkpoints)
    for bucket in buckets:
        for key in s3.find(bucket):
            try:
                if needle in s3.cat(key):
                    hits.append(f"s3://{key}")
            except FileNotFoundError:
                pass  # a folder marker (listed as a file, readable under "key/" only)
    if dashboard:
        import urllib.request

        from ray.util.state import list_actors, list_jobs, list_tasks
        for name, listing in (("jobs", list_jobs), ("actors", list_actors), ("tasks", list_tasks)):
            rows = listing(address=dashboard, detail=True, limit=10_000, raise_on_missing_output=False)
            text = json.dumps([getattr(r, "__dict__", r) for r in rows], default=str)
            if secret in text:
                at = text.find(secret)
                hits.append(f"ray state: {name}: ...{text[max(0, at - 300):at + 40]}...")
        request = urllib.request.Request(f"{dashboard}/api/train/v2/runs/v1",
                                         headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
        runs = urllib.request.urlopen(request, timeout=30).read().decode()
        assert "train_loop_config" in runs, f"no Train run state to search: {runs[:300]}"
        if secret in runs:
            hits.append("ray train run state")
    return hits
