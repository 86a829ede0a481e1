"""A run folder's lock file (core/checkpoint.py's RunLock): held by one writer, and never a way to write
through a link planted in its place."""
import pytest

from cyclegan.core import checkpoint as ckpt
from cyclegan.core.errors import UserError


def test_a_lock_planted_as_a_link_is_refused_and_its_target_left_whole(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's file")
    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.LOCK_FILE).symlink_to(precious)
    with pytest.raises(UserError, match=rf"name: {run / ckpt.LOCK_FILE} is a symbolic link, not the run's lock"):
        ckpt.RunLock(run).acquire()
    assert precious.read_text() == "the user's file"


def test_the_lock_is_created_and_names_its_holder(tmp_path):
    import json
    import os
    lock = ckpt.RunLock(tmp_path / "run")
    lock.acquire()
    try:
        assert json.loads((tmp_path / "run" / ckpt.LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
