"""What a shared bucket holds may have been written by anyone who can write the bucket: a run's or a sweep's
stored files decide what is trained, never where this process connects or writes, and they are read
bounded and without YAML aliases."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from cyclegan.core.config import from_dict

from tests.conftest import TINY

# Seven levels of nine mappings of the level below: a few hundred bytes, millions of keys once expanded.
ALIAS_BOMB = "a: &a {" + ", ".join(f"k{i}: x" for i in range(9)) + "}\n" + "".join(
    f"{k}: &{k} {{{', '.join(f'k{i}: *{p}' for i in range(9))}}}\n" for p, k in zip("abcdef", "bcdefg"))


def test_train_resume_dials_no_address_from_the_stored_options(s3, ray_session, tmp_path):
    """``train --resume`` took ``address`` (and ``checkpoints_dir``, ``shared_filesystem`` ...) from the bucket's
    cyclegan_config.yaml: a planted ``ray://`` address chose the cluster the driver joined. Now the stored
    file says what is trained; this process says where it connects (here: RAY_ADDRESS, as a submitted job
    has it)."""
    s3.mkdir("planted")
    with socket.socket() as listener:  # where the planted address points: it must see no connection
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        planted = dict(from_dict(dict(TINY, dataroot="s3://planted/no-such-data", name="run")).to_dict(),
                       address=f"ray://127.0.0.1:{listener.getsockname()[1]}",
                       checkpoints_dir=str(tmp_path / "planted"))
        s3.pipe("planted/runs/run/cyclegan_config.yaml", yaml.safe_dump(planted).encode())
        env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
        done = subprocess.run([sys.executable, "-m", "cyclegan.cli", "train", "--resume", "s3://planted/runs/run"],
                              env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        try:
            connection, _ = listener.accept()
            connection.close()
            dialed = True
        except BlockingIOError:
            dialed = False
    assert not dialed, "the driver dialed the address planted in the bucket"
    # It went on with the stored run's own options (its data), on the cluster this process was given.
    assert done.returncode == 2 and "s3://planted/no-such-data" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "planted").exists()


def test_a_stored_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path, capsys):
    """Starting a sweep again (a RayJob retry) read the stored experiment.yaml with plain yaml.safe_load:
    559 bytes of aliases took 12 s and printed a 98 MB error."""
    import cyclegan.distributed.sweep  # noqa: F401  (imported before the clock starts: Ray's import is no refusal)
    from cyclegan.cli import main
    from cyclegan.core.experiment import EXPERIMENT_FILE

    from tests.distributed.test_sweep import experiment
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(experiment(tmp_path, name="bombed")))
    stored = tmp_path / "sweeps" / "bombed" / EXPERIMENT_FILE
    stored.parent.mkdir(parents=True)
    stored.write_text(ALIAS_BOMB)
    started = time.perf_counter()
    assert main(["sweep", str(exp_file)]) == 2
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"refused in {elapsed:.3f} s, {len(err)} characters")
    assert "anchors and aliases" in err and str(stored) in err
    assert len(out) + len(err) < 1024, err[:2000]


def test_a_stored_experiment_decides_what_is_searched_not_where_or_with_what(s3, tmp_path, monkeypatch):
    """A sweep's stored experiment.yaml named its own storage_path, name and store (endpoint_url) and the base
    options of the process (address, checkpoints_dir): ``sweep --resume`` and ``report`` followed them, so
    whoever wrote the bucket chose where the sweep went on, which store it reached and which local folder
    the report filled. Now the folder is where it was read, the store this process's."""
    from cyclegan.commands.report import write_report
    from cyclegan.core.experiment import EXPERIMENT_FILE, parse_experiment, resumed_experiment, save_experiment
    from cyclegan.core.storage import Storage

    from tests.distributed.test_sweep import experiment
    s3.mkdir("shared-sweeps")
    store = Storage.from_options()
    exp = parse_experiment(experiment(tmp_path, name="theirs", storage_path="s3://elsewhere/sweeps",
                                      storage_options={"endpoint_url": "http://127.0.0.1:9"}))
    exp.base.update(address="ray://127.0.0.1:9", checkpoints_dir="/root/.ssh")
    exp.name, exp.storage_path = "mine", "s3://shared-sweeps/team"
    save_experiment(exp, store)  # s3://shared-sweeps/team/mine/experiment.yaml ...
    stored = yaml.safe_load(s3.cat(f"shared-sweeps/team/mine/{EXPERIMENT_FILE}"))
    stored.update(name="theirs", storage_path="s3://elsewhere/sweeps")  # ... naming another place
    s3.pipe(f"shared-sweeps/team/mine/{EXPERIMENT_FILE}", yaml.safe_dump(stored).encode())

    resumed = resumed_experiment("s3://shared-sweeps/team/mine", store)
    assert resumed.uri == "s3://shared-sweeps/team/mine" and resumed.storage_options == {}
    assert "address" not in resumed.base and "checkpoints_dir" not in resumed.base
    assert [p.name for p in resumed.pairs] == ["seasons", "fruit"] and resumed.space == exp.space
    monkeypatch.chdir(tmp_path)
    page = write_report("s3://shared-sweeps/team/mine", store=store)
    assert page.parent.resolve() == tmp_path / "reports" / "mine" and not (tmp_path / "reports" / "theirs").exists()


def test_stored_files_too_large_or_too_deep_are_refused_naming_the_file(tmp_path):
    from cyclegan.core.errors import DataError
    from cyclegan.core.storage import Storage
    from cyclegan.core.stored import MAX_JSON_BYTES, read_json, read_yaml
    store = Storage.from_options()
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "big.json").write_text('{"a": "' + "x" * MAX_JSON_BYTES + '"}')
    (tmp_path / "list.yaml").write_text("- 1\n")
    for name, message in [("deep.json", "not valid JSON"), ("big.json", "more than"),
                          ("list.yaml", "holds a list, not a dict")]:
        with pytest.raises((DataError, ValueError), match=message) as caught:
            (read_yaml if name.endswith(".yaml") else read_json)(store, str(tmp_path / name))
        assert str(tmp_path / name) in str(caught.value) and len(str(caught.value)) < 1024
