"""cyclegan translate: a trained generator over whole folders and bucket prefixes, in this process and on
Ray Data; the pixels of `cyclegan test`, bad inputs skipped and listed, finished outputs never redone."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.cli import main
from cyclegan.core.config import from_dict
from cyclegan.core.storage import Storage

from tests.helpers.processes import wait_for
from tests.helpers.s3 import put_bad_objects


@pytest.fixture(scope="module")
def trained(tiny_pair, tmp_path_factory) -> Path:
    """A run folder of a tiny model trained for two epochs."""
    from cyclegan.core.trainer import Trainer
    checkpoints = tmp_path_factory.mktemp("deploy")
    Trainer(from_dict(dict(netG="resnet_6blocks", ngf=4, ndf=4, load_size=28, crop_size=24, num_threads=0,
                           n_epochs=1, n_epochs_decay=1, seed=3, dataroot=str(tiny_pair),
                           checkpoints_dir=str(checkpoints), name="g", tensorboard=False, eval_at_end=False)),
            progress_bar=False).run()
    return checkpoints / "g"


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def opened(path: Path) -> tuple[str, tuple[int, int]]:
    with Image.open(path) as img:
        return img.format, img.size


def translate_cli(generator, inputs, outputs, *flags) -> dict:
    assert main(["translate", "--generator", str(generator), "--input", str(inputs), "--output", str(outputs),
                 "--crop_size", "24", *flags]) == 0
    return json.loads((Path(outputs) / "_translate_report.json").read_text())


def test_translate_gives_cyclegan_tests_pixels_skips_bad_inputs_and_finishes_only_what_is_left(
        trained, tiny_pair, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(tiny_pair / "testA", inputs)
    stems = sorted(p.stem for p in inputs.glob("*.png"))
    (inputs / "nested").mkdir()
    shutil.copy(inputs / f"{stems[0]}.png", inputs / "nested" / "again.png")
    (inputs / "broken.png").write_bytes(b"not an image")
    assert main(["test", "--model", "test", "--model_suffix", "_A", "--dataroot", str(tiny_pair / "testA"),
                 "--name", "g", "--checkpoints_dir", str(trained.parent), "--results_dir", str(tmp_path / "results"),
                 "--netG", "resnet_6blocks", "--ngf", "4", "--crop_size", "24", "--num_test", "100"]) == 0

    report = translate_cli(trained, inputs, tmp_path / "out")
    assert report["translated"] == len(stems) + 1 and report["already_done"] == 0
    assert report["skipped"] == 1 and report["bad_inputs"][0]["input"] == "broken.png"
    for stem in stems:  # the same generator, image and preprocessing: cyclegan test's very pixels
        expected = pixels(tmp_path / "results" / "g" / "test_latest" / "images" / f"{stem}_fake.png")
        assert np.array_equal(pixels(tmp_path / "out" / f"{stem}.png"), expected), stem
    assert np.array_equal(pixels(tmp_path / "out" / "nested" / "again.png"), pixels(tmp_path / "out" / f"{stems[0]}.png"))

    # Again, with one output gone: only that one is made; the others are not touched.
    (tmp_path / "out" / f"{stems[-1]}.png").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.png")}
    again = translate_cli(trained, inputs, tmp_path / "out")
    assert again["already_done"] == len(stems) and again["translated"] == 1 and again["skipped"] == 1
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in before.items())

    jpeg = translate_cli(trained, inputs, tmp_path / "jpeg", "--translate_format", "jpeg", "--jpeg_quality", "90",
                         "--batch_size", "3")
    assert jpeg["translated"] == len(stems) + 1
    assert opened(tmp_path / "jpeg" / f"{stems[0]}.jpg") == ("JPEG", (24, 24))


def test_a_published_weights_file_takes_its_architecture_from_the_flags(trained, tiny_pair, tmp_path, capsys):
    weights = tmp_path / "g_pretrained" / "latest_net_G.pth"
    weights.parent.mkdir()
    shutil.copy(trained / "latest_net_G_A.pth", weights)
    report = translate_cli(weights, tiny_pair / "testA", tmp_path / "out", "--netG", "resnet_6blocks", "--ngf", "4")
    assert report["translated"] == 4
    for p in (tiny_pair / "testA").glob("*.png"):
        assert opened(tmp_path / "out" / p.name) == ("PNG", (24, 24))
    capsys.readouterr()
    assert main(["translate", "--generator", str(weights), "--input", str(tiny_pair / "testA"), "--netG",
                 "resnet_6blocks", "--ngf", "4", "--output", str(tiny_pair / "testA" / "out")]) == 2
    assert "is inside the input" in capsys.readouterr().err
    # The default architecture (resnet_9blocks, ngf 64) does not fit the file: a clear error, exit 2.
    assert main(["translate", "--generator", str(weights), "--input", str(tiny_pair / "testA"),
                 "--output", str(tmp_path / "wrong")]) == 2
    assert f"{weights}: does not fit this network" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()


@pytest.mark.slow
def test_translate_on_ray_from_and_to_s3_with_bad_objects_as_in_this_process(ray_session, s3, trained, tiny_pair,
                                                                             tmp_path):
    from cyclegan.commands.translate import translate
    from cyclegan.core.config import TEST_DEFAULTS
    from cyclegan.distributed.translate import translate_on_ray
    s3.mkdir("deploy")
    for p in (tiny_pair / "testA").glob("*.png"):
        s3.put(str(p), f"deploy/in/{p.name}")
    put_bad_objects(s3, "deploy/in")  # 3 undecodable, one not an image by name, RGBA and 16-bit usable
    s3.mkdir("deploy/run")
    s3.put(str(trained) + "/", "deploy/run/", recursive=True)  # the generator from the bucket too
    cfg = from_dict(dict(TEST_DEFAULTS, crop_size=24, load_size=24, num_workers="1", cpus_per_worker=0.5))
    store = Storage.from_options()
    on_ray = translate(cfg, "s3://deploy/run", "s3://deploy/in", "s3://deploy/out", store=store, progress_bar=False,
                       runner=translate_on_ray)
    assert on_ray["translated"] == 6 and on_ray["skipped"] == 3
    assert sorted(b["input"] for b in on_ray["bad_inputs"]) == ["corrupt.jpg", "readme.png", "zero.png"]
    here = translate(from_dict(dict(TEST_DEFAULTS, crop_size=24, load_size=24)), str(trained), "s3://deploy/in",
                     str(tmp_path / "here"), store=store, progress_bar=False)
    assert here["translated"] == 6
    written = sorted((tmp_path / "here").glob("*.png"))
    assert len(written) == 6  # what the loop below compares
    for p in written:
        assert s3.cat(f"deploy/out/{p.name}") == p.read_bytes(), p.name
    assert json.loads(s3.cat("deploy/out/_translate_report.json"))["translated"] == 6


@pytest.mark.slow
def test_a_killed_translate_driver_is_finished_by_running_it_again(ray_session, trained, tiny_pair, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    first = sorted((tiny_pair / "testA").glob("*.png"))[0]
    for i in range(200):
        shutil.copy(first, inputs / f"{i:04d}.png")
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    args = [sys.executable, "-m", "cyclegan.cli", "translate", "--generator", str(trained), "--input", str(inputs),
            "--output", str(out), "--crop_size", "24", "--num_workers", "1", "--cpus_per_worker", "0.5",
            "--address", address]
    driver = subprocess.Popen(args, env=dict(os.environ, RAY_AUTH_MODE="token"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(out.glob("*.png")) or driver.poll() is not None, 300, "the first outputs")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    written = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 0 < len(written) < 200 and not (out / "_translate_report.json").exists()
    report = translate_cli(trained, inputs, out, "--num_workers", "1", "--cpus_per_worker", "0.5")
    assert report["already_done"] >= len(written) and report["already_done"] + report["translated"] == 200
    assert len(list(out.glob("*.png"))) == 200 and not list(out.glob("*.part"))
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in written.items())


# ---------------------------------------------------------------- hostile and broken inputs (issue 22: 1, 5, 6)
def test_names_that_are_not_image_files_are_skipped_and_outputs_never_collide(trained, tiny_pair, tmp_path):
    """A folder named dir.png gave a traceback, a FIFO f.png hung the job, a link to /dev/zero grew to
    2.3 GB; a.jpg and a.png both became out/a.png (5 reported translated, 4 files)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    first = sorted((tiny_pair / "testA").glob("*.png"))[0]
    shutil.copy(first, inputs / "a.png")
    with Image.open(first) as img:
        img.convert("RGB").save(inputs / "a.jpg", quality=95)
    shutil.copy(first, inputs / "b.png")
    (inputs / "dir.png").mkdir()
    shutil.copy(first, inputs / "dir.png" / "c.png")  # an image inside it is one
    os.mkfifo(inputs / "f.png")
    (inputs / "zero.png").symlink_to("/dev/zero")
    report = translate_cli(trained, inputs, tmp_path / "out")
    assert report["translated"] == 3  # a.jpg, b.png, dir.png/c.png
    assert report["skipped"] == 1 and report["bad_inputs"] == [
        {"input": "a.png", "reason": "its output a.png is already the output of a.jpg"}]
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")
                     if p.is_file())
    assert written == ["a.png", "b.png", "dir.png/c.png"]


def test_only_this_runs_unfinished_outputs_are_removed_and_an_input_inside_the_output_is_refused(
        trained, tiny_pair, tmp_path, capsys):
    """translate removed every `*.<digits>.part` below --output whose number was no live pid (a user's
    notes.123456.part too), and took an input folder inside --output, whose images it then counted as
    outputs. Now only its own outputs' `<name>.<pid>.part` go, and such an input is refused untouched."""
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # a writer that has ended
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    users = {out / f"notes.{gone}.part": "my notes", out / "mine" / f"photo.png.{gone}.part": "a download"}
    for path, text in users.items():
        path.write_text(text)
    stem = sorted(p.stem for p in (tiny_pair / "testA").glob("*.png"))[0]
    unfinished = out / f"{stem}.png.{gone}.part"  # a killed translate's output: made again, its part gone
    unfinished.write_bytes(b"half")
    report = translate_cli(trained, tiny_pair / "testA", out)
    assert report["translated"] == 4 and not unfinished.exists() and (out / f"{stem}.png").is_file()
    assert {path: path.read_text() for path in users} == users

    inside = out / "in"
    shutil.copytree(tiny_pair / "testA", inside)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["translate", "--generator", str(trained), "--input", str(inside), "--output", str(out),
                 "--crop_size", "24"]) == 2
    assert f"input: '{inside}' is inside the output '{out}'" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_object_keys_with_dot_dot_never_leave_the_output_nor_touch_the_inputs(trained, tiny_pair, s3, tmp_path):
    """An object named in/../../../sec/in/ok.png put its translation three levels above a local --output,
    and with --output s3://sec/out overwrote the input object sec/in/ok.png."""
    import botocore.session

    from cyclegan.core.inference import output_location, unsafe_name
    data = sorted((tiny_pair / "testA").glob("*.png"))[0].read_bytes()
    s3.mkdir("sec")
    client = botocore.session.get_session().create_client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    client.put_object(Bucket="sec", Key="in/ok.png", Body=data)
    client.put_object(Bucket="sec", Key="in/../../../sec/in/ok.png", Body=data)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="sec")["Contents"])
    assert "in/../../../sec/in/ok.png" in keys  # the server keeps the name as it is
    before = client.get_object(Bucket="sec", Key="in/ok.png")["Body"].read()

    local_out = tmp_path / "deep" / "out"
    report = translate_cli(trained, "s3://sec/in", local_out)
    assert report["translated"] == 1
    assert report["bad_inputs"] == [{"input": "../../../sec/in/ok.png", "reason": unsafe_name("../x")}]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        ["deep/out/_translate_report.json", "deep/out/ok.png"]

    assert main(["translate", "--generator", str(trained), "--input", "s3://sec/in", "--output", "s3://sec/out",
                 "--crop_size", "24"]) == 0
    report = json.loads(client.get_object(Bucket="sec", Key="out/_translate_report.json")["Body"].read())
    assert report["translated"] == 1 and report["skipped"] == 1
    assert client.get_object(Bucket="sec", Key="in/ok.png")["Body"].read() == before  # the input untouched
    objects = [o["Key"] for o in client.list_objects_v2(Bucket="sec")["Contents"] if not o["Key"].endswith("/")]
    assert sorted(objects) == ["in/../../../sec/in/ok.png", "in/ok.png", "out/_translate_report.json", "out/ok.png"]
    with pytest.raises(ValueError, match="outside --output"):
        output_location("s3://sec/out", "../in/ok.png", from_dict({}))


def test_an_unreachable_output_store_is_one_error_line_not_a_traceback(trained, tiny_pair, monkeypatch, capfd):
    """translate --output s3://... against an unreachable endpoint: a raw pyarrow OSError traceback before
    (issue 22: 11). In this process (the command's own function, no interpreter of its own to start): a
    traceback is an exception out of main; capfd also holds what the store's C++ code writes."""
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "x",
                        "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)  # loopback port 1: refused at once
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    capfd.readouterr()
    assert main(["translate", "--generator", str(trained), "--input", str(tiny_pair / "testA"), "--output",
                 "s3://b/out", "--crop_size", "24"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: s3://b/out") and "127.0.0.1:1" in last
