"""`cyclegan report` reads a sweep folder, which may come from anywhere: its names are data (issue 22: 2)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cyclegan.cli import main
from cyclegan.core.experiment import EXPERIMENT_FILE, load_experiment, save_experiment
from cyclegan.core.storage import Storage

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("hostile", ["../../../escaped_pair", "x'><img src=x onerror=alert(1)>"])
def test_a_stored_pair_name_that_is_no_folder_name_is_refused_and_nothing_is_written(tmp_path, capsys, hostile):
    """A pair named ../../../escaped_pair made the report write weights, train_opt.yaml and trial.json outside
    report/; one named x'><img ...> went unescaped into the page's href and src."""
    exp = load_experiment(ROOT / "experiments" / "sweep_tiny.yaml")
    sweep = tmp_path / "sweeps" / "deep" / "sw"
    exp = type(exp)(**{**exp.__dict__, "storage_path": str(sweep.parent), "name": "sw"})
    save_experiment(exp, Storage.from_options())
    stored = yaml.safe_load((sweep / EXPERIMENT_FILE).read_text())
    stored["pairs"][0]["name"] = hostile
    (sweep / EXPERIMENT_FILE).write_text(yaml.safe_dump(stored))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["report", str(sweep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {sweep}/{EXPERIMENT_FILE}: pairs[0].name ") and "is not a folder name" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, inside or out


UNREACHABLE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
               "AWS_DEFAULT_REGION": "us-east-1"}  # port 1 on loopback: nothing listens, refused at once


@pytest.mark.slow  # an end-to-end command run
def test_an_unreachable_store_is_one_error_line_not_a_traceback(tmp_path):
    """report s3://... and translate --output s3://... against an unreachable endpoint printed a raw pyarrow
    OSError traceback (issue 22: 11)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, **UNREACHABLE}
    report = subprocess.run([sys.executable, "-m", "cyclegan.cli", "report", "s3://b/sweeps/sw", "--out",
                             str(tmp_path / "rep")], capture_output=True, text=True, timeout=120, env=env)
    assert report.returncode == 2 and "Traceback" not in report.stderr
    assert report.stderr.strip().splitlines()[-1].startswith(
        "error: s3://b/sweeps/sw/experiment.yaml: cannot read (") and "127.0.0.1:1" in report.stderr
